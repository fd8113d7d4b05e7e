"""Choosing the media engine's driver from the configuration.

``[media] workers = 0`` keeps the engine in the signalling process
(:class:`~.local.LocalMediaController`): right for tests and small sites, one process
to watch. ``workers = N`` runs it in N worker processes
(:class:`~.pool.WorkerPoolController`), ``workers = "auto"`` one per CPU, for sites
whose media needs more than one core. Ports, media timeout and address stay where the
calls feature put them, in ``[calls]``.

Until the configuration has a ``[media]`` table the factory finds no ``media``
attribute and keeps the in-process engine.
"""

from __future__ import annotations

from typing import Any, Protocol

from softswitch.media.controller import MediaController
from softswitch.media.engine import EngineStats

__all__ = ["ManagedMediaController", "make_media_controller", "media_host", "worker_count"]


class ManagedMediaController(MediaController, Protocol):
    """A MediaController the daemon starts and stops: both drivers are one."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    @property
    def stats(self) -> EngineStats: ...


def media_host(config: Any) -> str:
    """The address RTP is bound on and put in SDP: ``[calls] media_address``, else the
    host of the first listen address."""
    return config.calls.media_address or config.listen[0].host


def worker_count(config: Any) -> int | None:
    """``[media] workers`` as the pool takes it: 0 for in-process, None for one per CPU."""
    media = getattr(config, "media", None)
    workers = getattr(media, "workers", 0) if media is not None else 0
    if workers in (None, "auto"):
        return None
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 0:
        raise ValueError(f"[media] workers must be 0, a number of processes or 'auto': {workers!r}")
    return workers


def make_media_controller(config: Any) -> ManagedMediaController:
    """The media controller ``config`` (a :class:`softswitch.config.Config`) asks for,
    not started yet: the caller awaits ``start()`` once its event loop runs."""
    calls = config.calls
    host = media_host(config)
    port_range = (calls.rtp_port_min, calls.rtp_port_max)
    workers = worker_count(config)
    if workers == 0:
        from softswitch.media.local import LocalMediaController

        return LocalMediaController(host, port_range, media_timeout=calls.media_timeout)

    from softswitch.media.pool import WorkerPoolController

    media = getattr(config, "media", None)
    return WorkerPoolController(
        host,
        port_range,
        workers,
        media_timeout=calls.media_timeout,
        pin=bool(getattr(media, "pin_workers", False)),
    )
