"""The pieces of the worker pool that need no process: channel encoding, port slices,
the factory's choice."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pytest

from softswitch.media import worker as channel
from softswitch.media.controller import Codec, Direction, LegMedia, MediaController
from softswitch.media.factory import make_media_controller, worker_count
from softswitch.media.local import LocalMediaController
from softswitch.media.pool import WorkerPoolController, split_port_range
from softswitch.media.ports import PortPool


def test_pool_implements_the_protocol():
    def check(c: MediaController) -> None: ...

    check(WorkerPoolController("127.0.0.1", (40000, 40010), 2))


def test_port_slices_are_disjoint_even_aligned_and_cover_every_pair():
    whole = set(PortPool(20001, 29999)._free)
    slices = split_port_range(20001, 29999, 3)
    seen: set[int] = set()
    for low, high in slices:
        assert low % 2 == 0 and high % 2 == 1
        ports = set(PortPool(low, high)._free)
        assert not ports & seen
        seen |= ports
    assert seen == whole
    sizes = [len(PortPool(lo, hi)._free) for lo, hi in slices]
    assert max(sizes) - min(sizes) <= 1


def test_a_range_too_small_for_the_workers_is_refused():
    assert split_port_range(40000, 40003, 2) == [(40000, 40001), (40002, 40003)]
    with pytest.raises(ValueError):
        split_port_range(40000, 40003, 3)
    with pytest.raises(ValueError):
        WorkerPoolController("127.0.0.1", (40000, 40003), 3)


def test_channel_carries_the_controller_dataclasses_and_splits_large_batches():
    media = LegMedia(
        "127.0.0.1",
        4000,
        Codec("PCMA", 8),
        telephone_event=Codec("telephone-event", 101),
        direction=Direction.SENDONLY,
    )
    messages = [(channel.CALL, "update", (f"call-{i}", "a", media), {}) for i in range(3000)]
    datagrams = channel.encode(messages)
    assert len(datagrams) > 1
    assert all(len(d) <= channel.MAX_DATAGRAM for d in datagrams)
    decoded = [m for d in datagrams for m in channel.decode(d)]
    assert decoded == messages
    assert decoded[0][2][2].direction is Direction.SENDONLY


def test_one_message_larger_than_a_datagram_is_an_error_not_a_truncation():
    with pytest.raises(ValueError):
        channel.encode([(channel.CALL, "connect", ("x" * (channel.MAX_DATAGRAM + 1),), {})])


@dataclass
class _Calls:
    rtp_port_min: int = 40000
    rtp_port_max: int = 40099
    media_timeout: float = 12.0
    media_address: str = ""


@dataclass
class _Listen:
    host: str = "127.0.0.1"


@dataclass
class _Media:
    workers: object = 0
    pin_workers: bool = False


@dataclass
class _Config:
    calls: _Calls = field(default_factory=_Calls)
    listen: tuple[_Listen, ...] = (_Listen(),)


@dataclass
class _ConfigWithMedia(_Config):
    media: _Media = field(default_factory=_Media)


def test_factory_keeps_the_engine_in_process_by_default_and_for_zero_workers():
    for config in (_Config(), _ConfigWithMedia()):
        media = make_media_controller(config)
        assert isinstance(media, LocalMediaController)
        assert media.engine.media_timeout == 12.0
        media.engine.close()


def test_factory_builds_a_pool_for_n_workers_or_auto():
    two = make_media_controller(_ConfigWithMedia(media=_Media(workers=2)))
    assert isinstance(two, WorkerPoolController)
    assert [w.port_range for w in two.workers] == [(40000, 40049), (40050, 40099)]
    auto = _ConfigWithMedia(media=_Media(workers="auto"))
    assert worker_count(auto) is None
    pool = make_media_controller(auto)
    assert isinstance(pool, WorkerPoolController)
    assert len(pool.workers) == (os.cpu_count() or 1)
    with pytest.raises(ValueError):
        worker_count(_ConfigWithMedia(media=_Media(workers=-1)))
    with pytest.raises(ValueError):
        worker_count(_ConfigWithMedia(media=_Media(workers=True)))


def test_factory_uses_media_address_for_sdp_and_binding():
    config = _ConfigWithMedia(_Calls(media_address="127.0.0.2"), media=_Media(workers=1))
    pool = make_media_controller(config)
    assert isinstance(pool, WorkerPoolController)
    assert pool.host == pool.advertised_host == "127.0.0.2"
