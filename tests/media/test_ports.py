from __future__ import annotations

import socket

import pytest

from softswitch.media.engine import MediaEngine
from softswitch.media.ports import PortPool, PortsExhausted
from tests.support.ports import free_port


def test_pool_hands_out_even_ports_with_room_for_rtcp():
    pool = PortPool(10001, 10010)
    ports = [pool.allocate(lambda p: p)[0] for _ in range(4)]
    assert ports == [10002, 10004, 10006, 10008]
    with pytest.raises(PortsExhausted):
        pool.allocate(lambda p: p)  # 10010 has no 10011 inside the range


def test_freed_ports_are_reused_last():
    pool = PortPool(20000, 20007)
    a, _ = pool.allocate(lambda p: p)
    b, _ = pool.allocate(lambda p: p)
    pool.release(a)
    assert [pool.allocate(lambda p: p)[0] for _ in range(3)] == [20004, 20006, a]
    assert pool.in_use == {a, b, 20004, 20006}
    pool.release(12345)  # not ours: ignored
    assert pool.available == 0


def test_ports_that_fail_to_bind_are_skipped_and_retried_later():
    pool = PortPool(30000, 30005)
    busy = {30000}

    def bind(port: int) -> str:
        if port in busy:
            raise OSError(98, "Address already in use")
        return f"sock{port}"

    assert pool.allocate(bind) == (30002, "sock30002")
    assert pool.allocate(bind) == (30004, "sock30004")
    with pytest.raises(PortsExhausted):
        pool.allocate(bind)
    busy.clear()
    assert pool.allocate(bind) == (30000, "sock30000")


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError):
        PortPool(5000, 4000)
    with pytest.raises(ValueError):
        PortPool(5001, 5001)


@pytest.mark.timeout(10)
def test_engine_never_hands_out_a_port_someone_else_holds():
    base = free_port(udp=True, tcp=False, span=8)
    base += base & 1
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    squatter.bind(("127.0.0.1", base + 1))  # the RTCP port of the first pair
    engine = MediaEngine("127.0.0.1", (base, base + 5))
    try:
        ep = engine.allocate("s", "a")
        assert ep.port == base + 2
        assert engine.allocate("s", "a") == ep  # idempotent
        assert engine.allocate("s", "b").port == base + 4
        with pytest.raises(PortsExhausted):
            engine.allocate("s", "c")
        engine.release("s")
        engine.release("s")  # twice is harmless
        assert engine.pool.available == 3
    finally:
        engine.close()
        squatter.close()
