"""A media worker process: one engine, one plain epoll loop, one control channel.

Python runs one core per process, so the pool (:mod:`.pool`) starts one of these per
core. Each owns a slice of the RTP port range and every leg of the sessions it was
given: media crosses between the legs of a session inside one engine, never between
processes. The loop needs nothing of asyncio::

    epoll.poll(time to the next tick)   <- the engine's epoll fd + the control socket
    engine.drain(now)                   <- RTP/RTCP ready
    control messages -> engine methods  <- calls from signalling
    pacer.due(now) x engine.tick(now)
    engine events, stats -> control socket

The control channel
-------------------
An ``AF_UNIX`` ``SOCK_SEQPACKET`` socketpair. Sequenced packets keep message
boundaries (no length prefixes, no partial reads), are reliable and ordered, and the
peer's death shows up as end-of-file on the other side: that is how the pool notices a
crashed worker and how a worker notices that signalling went away.

Each datagram is a list of messages pickled with protocol 5. Pickle, rather than an
explicit encoding, because:

* the calls carry the controller's frozen dataclasses (``LegMedia`` nesting ``Codec``
  and the ``Direction`` enum) and whatever the engine and the conference interface add
  next; pickle moves them as they are, so a new control method crosses the channel
  with no change here, while a hand encoding would need a schema per type;
* both ends are our own processes from the same installed code: the socketpair is made
  by the pool and inherited by exactly one child (``pass_fds``), it has no path in the
  file system and no address on a network, so nothing else can write to it and
  unpickling never sees foreign bytes;
* the volume is that of call set-up (a few messages per call), where pickling a
  ``LegMedia`` costs microseconds; the packet path never touches this channel.

A control call is ``(CALL, method, args, kwargs)``: the worker looks ``method`` up on the
engine (or on its conference control, once it has one) and, when the method takes a
``now`` parameter, passes its own monotonic clock. Its return value is dropped: the
signalling side never waits for a worker. A call that raises comes back as an
``ERROR`` message naming the session, so the pool can end that call cleanly.

Ports are chosen by the pool in the signalling process (so ``allocate`` answers at
once) and only bound here: ``(ALLOC, session, leg, port)`` hands the engine that exact
port through :class:`_GivenPort`, which stands in for the engine's port pool.
"""

from __future__ import annotations

import errno
import gc
import inspect
import os
import pickle
import resource
import select
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from softswitch.media.engine import MediaEngine
from softswitch.media.pacer import TickPacer
from softswitch.media.ports import PortsExhausted

__all__ = [
    "ALLOC",
    "BIND_FAILED",
    "CALL",
    "ERROR",
    "EVENTS",
    "MAX_DATAGRAM",
    "PING",
    "PONG",
    "READY",
    "STATS",
    "STOP",
    "decode",
    "encode",
    "main",
    "run",
]

T = TypeVar("T")

# Signalling -> worker.
CALL = 0  # (CALL, method, args, kwargs)
ALLOC = 1  # (ALLOC, session_id, leg, port)
PING = 2  # (PING, token): answered by PONG once every earlier message was applied
STOP = 3  # (STOP,)
# Worker -> signalling.
READY = 10  # (READY, pid)
EVENTS = 11  # (EVENTS, [MediaEvent, ...])
STATS = 12  # (STATS, EngineStats, cpu_seconds, sessions)
PONG = 13  # (PONG, token)
ERROR = 14  # (ERROR, method, session_id | None, text)
BIND_FAILED = 15  # (BIND_FAILED, session_id, leg, port, text)

# Well under the default socket send buffer (wmem_default, about 208 KiB), so one
# datagram always fits; a batch larger than this is split.
MAX_DATAGRAM = 64 * 1024
RECV_BUFFER = 4 * MAX_DATAGRAM
TICK = 0.020
_MAX_PASSES = 2  # drain passes per wake-up, as in the in-process driver
_OUTBOX_LIMIT = 4096  # datagrams held for a parent that stopped reading
# Driver methods of the engine: the worker's loop calls them itself, and a control
# call must not (a remote ``close`` or ``drain`` would break the loop's invariants).
_RESERVED = frozenset({"allocate", "close", "drain", "fileno", "take_events", "tick"})


def encode(messages: list[Any]) -> list[bytes]:
    """``messages`` as as few datagrams as fit :data:`MAX_DATAGRAM` each."""
    data = pickle.dumps(messages, protocol=5)
    if len(data) <= MAX_DATAGRAM:
        return [data]
    if len(messages) == 1:
        raise ValueError(f"control message of {len(data)} bytes exceeds {MAX_DATAGRAM}")
    half = len(messages) // 2
    return encode(messages[:half]) + encode(messages[half:])


def decode(data: bytes | memoryview) -> list[Any]:
    return pickle.loads(data)


class _GivenPort:
    """Stands in for the engine's :class:`~.ports.PortPool`: the port was already
    chosen by the pool in the signalling process, so allocation binds exactly that one.
    Releasing is a no-op for the same reason: the pool keeps the free list."""

    def __init__(self) -> None:
        self.port: int | None = None

    def allocate(self, bind: Callable[[int], T]) -> tuple[int, T]:
        port, self.port = self.port, None
        if port is None:
            raise PortsExhausted("no port given for this allocation")
        return port, bind(port)

    def release(self, port: int) -> None:
        pass


class _Worker:
    def __init__(self, sock: socket.socket, config: dict[str, Any]) -> None:
        self.sock = sock
        self.engine = MediaEngine(
            config["host"],
            tuple(config["port_range"]),  # type: ignore[arg-type]
            media_timeout=config["media_timeout"],
            latch_window=config["latch_window"],
            rcvbuf=config["rcvbuf"],
            max_events=config["max_events"],
            advertised_host=config["advertised_host"],
        )
        self.given = _GivenPort()
        self.engine.pool = self.given  # type: ignore[assignment]
        self.tick = config["tick"]
        self.stats_interval = config["stats_interval"]
        self.max_events = config["max_events"]
        self.targets: list[object] = [self.engine]
        self.methods: dict[str, tuple[Callable[..., Any], bool]] = {}
        self.outbox: deque[bytes] = deque()
        self.out: list[Any] = []
        self.dropped_out = 0
        self.running = True
        self.ep = select.epoll()
        self.want_write = False
        self.rbuf = bytearray(RECV_BUFFER)
        self.rview = memoryview(self.rbuf)
        self.pacer = TickPacer(self.tick, time.monotonic())

    # --- control ----------------------------------------------------------------------

    def resolve(self, name: str) -> tuple[Callable[..., Any], bool]:
        """The bound method for a control call, and whether it takes ``now``."""
        found = self.methods.get(name)
        if found is not None:
            return found
        if name.startswith("_") or name in _RESERVED:
            raise AttributeError(f"{name!r} is not a control method")
        for target in self.targets:
            method = getattr(target, name, None)
            if callable(method):
                wants_now = "now" in inspect.signature(method).parameters
                found = self.methods[name] = (method, wants_now)
                return found
        raise AttributeError(f"no control method {name!r}")

    def handle(self, message: tuple[Any, ...], now: float) -> None:
        op = message[0]
        if op == CALL:
            _, name, args, kwargs = message
            try:
                method, wants_now = self.resolve(name)
                if wants_now:
                    method(*args, **kwargs, now=now)
                else:
                    method(*args, **kwargs)
            except Exception as exc:
                session = args[0] if args and isinstance(args[0], str) else None
                self.out.append((ERROR, name, session, f"{type(exc).__name__}: {exc}"))
        elif op == ALLOC:
            _, session_id, leg, port = message
            self.given.port = port
            try:
                self.engine.allocate(session_id, leg)
            except (OSError, PortsExhausted) as exc:
                self.out.append((BIND_FAILED, session_id, leg, port, str(exc)))
            finally:
                self.given.port = None
        elif op == PING:
            self.out.append(self.stats_message())
            self.out.append((PONG, message[1]))
        elif op == STOP:
            self.running = False

    def read_control(self, now: float) -> None:
        while self.running:
            try:
                n = self.sock.recv_into(self.rbuf)
            except BlockingIOError:
                return
            except OSError:
                n = 0
            if n == 0:  # signalling went away: nobody to serve
                self.running = False
                return
            for message in decode(self.rview[:n]):
                self.handle(message, now)

    def stats_message(self) -> tuple[Any, ...]:
        self.engine.stats.late_ticks = self.pacer.late
        self.engine.stats.skipped_ticks = self.pacer.skipped
        return (STATS, self.engine.stats, time.process_time(), self.engine.session_count)

    def send_out(self) -> None:
        if self.out:
            self.outbox.extend(encode(self.out))
            self.out = []
            while len(self.outbox) > _OUTBOX_LIMIT:
                # The parent has not read for a long time; its watchdog will act. Keep
                # the newest, which carry the current stats.
                self.outbox.popleft()
                self.dropped_out += 1
        outbox = self.outbox
        while outbox:
            try:
                self.sock.send(outbox[0])
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                    self.running = False
                    return
                raise
            outbox.popleft()
        want = bool(outbox)
        if want != self.want_write:
            self.want_write = want
            mask = select.EPOLLIN | (select.EPOLLOUT if want else 0)
            self.ep.modify(self.sock.fileno(), mask)

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> None:
        engine, ep = self.engine, self.ep
        efd, cfd = engine.fileno(), self.sock.fileno()
        ep.register(efd, select.EPOLLIN)
        ep.register(cfd, select.EPOLLIN)
        clock = time.monotonic
        pacer = self.pacer = TickPacer(self.tick, clock())
        next_stats = clock() + self.stats_interval
        self.out.append((READY, os.getpid()))
        self.send_out()
        max_events = self.max_events
        while self.running:
            timeout = pacer.next_deadline() - clock()
            ready = ep.poll(timeout if timeout > 0 else 0)
            now = clock()
            for fd, mask in ready:
                if fd == efd:
                    for _ in range(_MAX_PASSES):
                        if engine.drain(now) < max_events:
                            break
                elif mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self.read_control(now)
            for _ in range(pacer.due(now)):
                engine.tick(now)
            if engine.events:
                self.out.append((EVENTS, engine.take_events()))
            if now >= next_stats:
                next_stats = now + self.stats_interval
                self.out.append(self.stats_message())
            if self.out or self.outbox:
                self.send_out()
        self.out.append(self.stats_message())
        try:
            self.send_out()
        except OSError:
            pass

    def close(self) -> None:
        self.engine.close()
        self.ep.close()
        self.sock.close()


def _raise_fd_limit() -> None:
    # Every leg holds two sockets; a worker serving thousands of calls needs the hard
    # limit, not the usual soft 1024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def run(sock: socket.socket, config: dict[str, Any]) -> None:
    """Serve the control channel ``sock`` with one engine configured by ``config`` until
    told to stop or the other end closes."""
    cpu = config.get("cpu")
    if cpu is not None and hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass  # a CPU the container does not give us: run unpinned
    _raise_fd_limit()
    sock.setblocking(False)
    worker = _Worker(sock, config)
    # Everything allocated so far lives as long as the worker: keep the collector from
    # walking it again and again.
    gc.freeze()
    try:
        worker.run()
    finally:
        worker.close()


def _read_config(sock: socket.socket) -> dict[str, Any]:
    sock.setblocking(True)
    data = sock.recv(RECV_BUFFER)
    if not data:
        raise SystemExit(0)
    messages = decode(data)
    return messages[0]


def main(argv: Iterable[str] | None = None) -> None:
    """Entry point of the worker process: ``main([control_fd])``. The first datagram on
    the control socket is the engine's configuration (a dict)."""
    args = list(sys.argv[1:] if argv is None else argv)
    # Ctrl-C in a terminal, or a service manager's SIGTERM, reaches the whole process
    # group; signalling decides when media stops and tells the worker over the channel
    # (or dies, and the worker sees its channel close). SIGKILL still ends a worker.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sock = socket.socket(fileno=int(args[0]))
    run(sock, _read_config(sock))


if __name__ == "__main__":
    main()
