"""The media engine as worker processes behind the MediaController interface.

Usage from the daemon (same shape as :class:`~.local.LocalMediaController`)::

    media = WorkerPoolController("203.0.113.5", (16384, 32767), workers=2)
    media.set_event_handler(b2bua.on_media_event)
    await media.start()          # spawns the workers, waits until each is ready
    ...                          # allocate / connect / update / release from signalling
    await media.stop()           # stops every worker; no process is left behind

Placement: a session goes to the worker with the fewest legs when its first leg is
allocated, and every later leg of it goes to the same worker, because media crosses
between the legs of a session inside one engine (relay, transcoding, and the
conference mix).

``allocate`` stays synchronous and instant: each worker's slice of the port range has a
:class:`~.ports.PortPool` here, in the signalling process; the port is taken from it at
once and the worker is told to bind it. Every call to a worker is a message queued on
its control channel (:mod:`.worker`) and written without blocking when the event loop
next runs, so the calls of one loop iteration share one datagram. A worker that cannot
take its messages (its socket buffer full and :data:`MAX_BACKLOG` bytes queued behind
it), or that has not been heard from for ``watchdog`` seconds, is killed: its calls end
as if it had crashed, which is better than silently dropping control calls.

What the asynchronous door changes for the signalling side:

* A port is bound a moment after ``allocate`` returns: when the loop next runs and the
  worker wakes up (well under a millisecond on an idle machine). A packet arriving
  before that is refused like one to any closed port; phones only learn the port from
  the SDP sent afterwards, so in a call this does not happen. Tests that skip SDP
  await :meth:`WorkerPoolController.sync` first.

* ``connect``/``update`` on an unknown session or leg still raise ``KeyError`` at once
  (checked here). Errors only the engine can find (a plan it cannot serve, a port some
  other program holds) arrive later; the pool logs them and ends the session with
  :class:`~.controller.MediaTimeout` events, so the B2BUA hangs the call up as it does
  for a dead phone.
* A worker that dies takes its calls with it: the pool logs it, emits ``MediaTimeout``
  for every leg of its sessions, and starts a new worker for the same slice (with a
  growing delay if it keeps dying right after start).
* No event of a session is delivered after ``release``, as in-process.

:meth:`WorkerPoolController.call` forwards any engine (or conference) control method by
name, so new engine features need no change to the channel.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import itertools
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from softswitch.media import worker as channel
from softswitch.media.controller import LegMedia, MediaEndpoint, MediaEvent, MediaTimeout
from softswitch.media.engine import EngineStats
from softswitch.media.ports import PortPool, PortsExhausted

__all__ = ["MAX_BACKLOG", "WorkerInfo", "WorkerPoolController", "split_port_range"]

log = logging.getLogger(__name__)

MAX_BACKLOG = 16 * 1024 * 1024  # bytes of control messages a worker may fall behind by
_RESTART_FAST = 10.0  # a worker dying sooner than this after its start is crash-looping
_RESTART_DELAY_MAX = 30.0
_REAP_TRIES = 100  # x 20 ms before a worker that closed its channel is killed


def split_port_range(low: int, high: int, parts: int) -> list[tuple[int, int]]:
    """``low``..``high`` cut into ``parts`` slices of (nearly) equally many even/odd
    port pairs, each slice starting on an even port."""
    first = low + (low & 1)
    pairs = len(range(first, high, 2))
    if parts < 1 or pairs < parts:
        raise ValueError(f"RTP port range {low}-{high} cannot give {parts} workers a port pair")
    out = []
    for i in range(parts):
        a, b = i * pairs // parts, (i + 1) * pairs // parts
        out.append((first + 2 * a, first + 2 * b - 1))
    return out


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    index: int
    pid: int | None
    state: str  # starting | running | restarting | stopped
    port_range: tuple[int, int]
    cpu: int | None
    sessions: int
    legs: int
    restarts: int
    cpu_seconds: float  # CPU time of the current process, as it last reported
    stats: EngineStats  # the current process's counters, as it last reported


class _Session:
    __slots__ = ("failed", "legs", "worker")

    def __init__(self, worker: _Worker) -> None:
        self.worker = worker
        self.legs: dict[str, MediaEndpoint] = {}
        self.failed = False


class _Worker:
    """The signalling side's view of one worker process."""

    def __init__(self, index: int, port_range: tuple[int, int], cpu: int | None) -> None:
        self.index = index
        self.port_range = port_range
        self.cpu = cpu
        self.ports = PortPool(*port_range)
        self.sessions: set[str] = set()
        self.legs = 0
        self.state = "stopped"
        self.proc: subprocess.Popen[bytes] | None = None
        self.sock: socket.socket | None = None
        self.fd = -1
        self.pending: list[Any] = []
        self.outq: deque[bytes] = deque()
        self.queued = 0
        self.flush_scheduled = False
        self.writing = False
        self.ready: asyncio.Future[None] | None = None
        self.exited: asyncio.Future[None] | None = None
        self.pings: dict[int, asyncio.Future[None]] = {}
        self.stats = EngineStats()
        self.cpu_seconds = 0.0
        self.started_at = 0.0
        self.last_heard = 0.0
        self.restarts = 0
        self.fast_crashes = 0
        self.restart_timer: asyncio.TimerHandle | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def accepting(self) -> bool:
        return self.state in ("starting", "running")


def _child_env() -> dict[str, str]:
    """The environment of a worker: ours, with the directories our packages were
    imported from first on its path (a test run or a checkout has them on ``sys.path``
    only, not installed)."""
    dirs = [str(Path(__file__).resolve().parents[2])]
    spec = importlib.util.find_spec("swcodecs")
    if spec is not None and spec.origin:
        dirs.append(str(Path(spec.origin).resolve().parents[1]))
    env = dict(os.environ)
    if env.get("PYTHONPATH"):
        dirs.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(dirs))
    return env


def _add_stats(total: EngineStats, more: EngineStats) -> None:
    for f in dataclasses.fields(EngineStats):
        setattr(total, f.name, getattr(total, f.name) + getattr(more, f.name))


class WorkerPoolController:
    """:class:`~softswitch.media.controller.MediaController` on worker processes."""

    def __init__(
        self,
        host: str,
        port_range: tuple[int, int],
        workers: int | None = None,
        *,
        media_timeout: float = 30.0,
        latch_window: float = 10.0,
        rcvbuf: int = 256 * 1024,
        max_events: int = 1024,
        advertised_host: str | None = None,
        pin: bool | Sequence[int] = False,
        tick: float = channel.TICK,
        stats_interval: float = 1.0,
        watchdog: float = 10.0,
        start_timeout: float = 30.0,
        python: str | None = None,
    ) -> None:
        """``workers``: processes to run (default: one per CPU). ``pin``: True pins worker
        i to the i-th CPU this process may use; a sequence names the CPUs."""
        count = workers if workers is not None else os.cpu_count() or 1
        if count < 1:
            raise ValueError("a worker pool needs at least one worker")
        self.host = host
        self.advertised_host = advertised_host or host
        self._engine_config = {
            "host": host,
            "media_timeout": media_timeout,
            "latch_window": latch_window,
            "rcvbuf": rcvbuf,
            "max_events": max_events,
            "advertised_host": advertised_host,
            "tick": tick,
            "stats_interval": stats_interval,
        }
        if pin is True:
            cpus: list[int] | None = sorted(os.sched_getaffinity(0))
        elif pin is False:
            cpus = None
        else:
            cpus = list(pin)  # type: ignore[arg-type]
        slices = split_port_range(port_range[0], port_range[1], count)
        self._workers = [
            _Worker(i, s, cpus[i % len(cpus)] if cpus else None) for i, s in enumerate(slices)
        ]
        self._sessions: dict[str, _Session] = {}
        self._handler: Callable[[MediaEvent], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._retired = EngineStats()  # what workers that are gone had counted
        self._stats_interval = stats_interval
        self._watchdog = watchdog
        self._start_timeout = start_timeout
        self._python = python or sys.executable
        self._env = _child_env()
        self._rbuf = bytearray(channel.RECV_BUFFER)
        self._rview = memoryview(self._rbuf)
        self._tokens = itertools.count(1)
        self._watch_timer: asyncio.TimerHandle | None = None
        self._reaping: set[asyncio.Task[None]] = set()
        self._running = False  # between a successful start() and stop()

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn every worker and wait until each runs its loop."""
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        try:
            for w in self._workers:
                self._spawn(w)
            ready = [w.ready for w in self._workers if w.ready is not None]
            await asyncio.wait_for(asyncio.gather(*ready), self._start_timeout)
        except BaseException:
            await self.stop()
            raise
        self._running = True
        self._arm_watchdog()

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop every worker (told first, killed if it does not go) and reap it."""
        self._running = False
        loop = self._loop
        if self._watch_timer is not None:
            self._watch_timer.cancel()
            self._watch_timer = None
        if loop is None:
            return
        waits = []
        for w in self._workers:
            if w.restart_timer is not None:
                w.restart_timer.cancel()
                w.restart_timer = None
            if w.sock is None:
                w.state = "stopped"
                continue
            w.state = "stopping"
            w.pending.append((channel.STOP,))
            self._flush(w)
            if w.exited is not None:
                waits.append(w.exited)
        try:
            if waits:
                await asyncio.wait(waits, timeout=timeout)
            for w in self._workers:
                if w.sock is not None:
                    self._close_channel(w)
                proc, w.proc = w.proc, None
                if proc is not None:
                    await self._reap(proc, timeout)
                w.state = "stopped"
            if self._reaping:
                await asyncio.gather(*self._reaping, return_exceptions=True)
        finally:
            # Also when this coroutine is abandoned or cancelled half-way (a
            # synchronous shutdown path): the workers were told to stop above, so a
            # short blocking wait is enough to leave no process behind.
            self._finish_stop()

    def _finish_stop(self) -> None:
        for w in self._workers:
            if w.sock is not None:
                self._close_channel(w)
            proc, w.proc = w.proc, None
            if proc is not None:
                try:
                    proc.wait(1.0)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            w.state = "stopped"
        for session_id in list(self._sessions):
            self._forget(session_id)
        self._loop = None

    async def __aenter__(self) -> WorkerPoolController:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- MediaController --------------------------------------------------------------

    def allocate(self, session_id: str, leg: str) -> MediaEndpoint:
        session = self._sessions.get(session_id)
        if session is not None:
            endpoint = session.legs.get(leg)
            if endpoint is not None:
                return endpoint  # allocating twice hands back the same port
            w = session.worker
            port, _ = w.ports.allocate(_no_bind)
        else:
            w, port = self._place()
            session = self._sessions[session_id] = _Session(w)
            w.sessions.add(session_id)
        endpoint = session.legs[leg] = MediaEndpoint(self.advertised_host, port)
        w.legs += 1
        self._post(w, (channel.ALLOC, session_id, leg, port))
        return endpoint

    def connect(self, session_id: str, legs: dict[str, LegMedia]) -> None:
        session = self._session(session_id)
        for name in legs:
            if name not in session.legs:
                raise KeyError(f"leg {name!r} of session {session_id!r} was never allocated")
        self._post(session.worker, (channel.CALL, "connect", (session_id, legs), {}))

    def update(self, session_id: str, leg: str, media: LegMedia) -> None:
        session = self._session(session_id)
        if leg not in session.legs:
            raise KeyError(f"leg {leg!r} of session {session_id!r} was never allocated")
        self._post(session.worker, (channel.CALL, "update", (session_id, leg, media), {}))

    def release(self, session_id: str) -> None:
        session = self._sessions.get(session_id)
        if session is None:
            return
        w = session.worker
        self._forget(session_id)
        if w.sock is not None:
            self._post(w, (channel.CALL, "release", (session_id,), {}))

    def set_event_handler(self, handler: Callable[[MediaEvent], None]) -> None:
        self._handler = handler

    def call(self, session_id: str, method: str, *args: Any, **kwargs: Any) -> None:
        """Call engine method ``method(session_id, *args, **kwargs)`` (plus ``now`` if it
        takes one) in the worker that holds the session. Fire and forget: a failure is
        logged and ends the session, as for ``connect``."""
        session = self._session(session_id)
        self._post(session.worker, (channel.CALL, method, (session_id, *args), kwargs))

    # --- inspection -------------------------------------------------------------------

    @property
    def stats(self) -> EngineStats:
        """Counters summed over the workers, as they last reported (every
        ``stats_interval``; :meth:`sync` for fresh ones). Counts of workers that died or
        were replaced stay in the sums."""
        total = dataclasses.replace(self._retired)
        for w in self._workers:
            _add_stats(total, w.stats)
        return total

    @property
    def workers(self) -> list[WorkerInfo]:
        return [
            WorkerInfo(
                w.index,
                w.pid,
                "restarting" if w.state == "dead" else w.state,
                w.port_range,
                w.cpu,
                len(w.sessions),
                w.legs,
                w.restarts,
                w.cpu_seconds,
                dataclasses.replace(w.stats),
            )
            for w in self._workers
        ]

    def worker_of(self, session_id: str) -> int | None:
        """Index of the worker that holds a session (None if unknown)."""
        session = self._sessions.get(session_id)
        return session.worker.index if session is not None else None

    async def sync(self, timeout: float = 5.0) -> None:
        """Wait until every running worker has applied every call made before, and
        refresh :attr:`stats`."""
        loop = self._require_loop()
        futures = []
        for w in self._workers:
            if w.sock is None or w.state not in ("starting", "running"):
                continue
            token = next(self._tokens)
            fut = w.pings[token] = loop.create_future()
            self._post(w, (channel.PING, token))
            futures.append(fut)
        if futures:
            await asyncio.wait_for(asyncio.gather(*futures), timeout)

    # --- placement and sending ----------------------------------------------------------

    def _place(self) -> tuple[_Worker, int]:
        candidates = sorted(
            (w for w in self._workers if w.accepting),
            key=lambda w: (w.legs, len(w.sessions), w.index),
        )
        for w in candidates:
            if w.ports.available:
                return w, w.ports.allocate(_no_bind)[0]
        if not candidates:
            raise PortsExhausted("no media worker is running")
        raise PortsExhausted("every media worker's RTP ports are in use")

    def _session(self, session_id: str) -> _Session:
        session = self._sessions.get(session_id)
        if session is None:
            raise KeyError(f"unknown media session {session_id!r}")
        return session

    def _forget(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is None:
            return
        w = session.worker
        w.sessions.discard(session_id)
        for endpoint in session.legs.values():
            w.ports.release(endpoint.port)
        w.legs -= len(session.legs)

    def _post(self, w: _Worker, message: tuple[Any, ...]) -> None:
        w.pending.append(message)
        if w.flush_scheduled or w.sock is None or self._loop is None:
            return  # before start: sent when the worker is spawned
        w.flush_scheduled = True
        self._loop.call_soon(self._flush, w)

    def _flush(self, w: _Worker) -> None:
        w.flush_scheduled = False
        sock = w.sock
        if sock is None:
            return
        if w.pending:
            pending, w.pending = w.pending, []
            for data in channel.encode(pending):
                w.outq.append(data)
                w.queued += len(data)
        outq = w.outq
        while outq:
            try:
                sock.send(outq[0])
            except BlockingIOError:
                break
            except OSError:
                return  # the worker is gone: its end-of-file is on the way
            w.queued -= len(outq.popleft())
        if outq and not w.writing and self._loop is not None:
            self._loop.add_writer(w.fd, self._flush, w)
            w.writing = True
        elif not outq and w.writing and self._loop is not None:
            self._loop.remove_writer(w.fd)
            w.writing = False
        if w.queued > MAX_BACKLOG:
            self._kill(w, f"{w.queued} bytes of control messages not taken")

    # --- processes ------------------------------------------------------------------------

    def _spawn(self, w: _Worker) -> None:
        loop = self._require_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            config = dict(self._engine_config, port_range=w.port_range, cpu=w.cpu)
            ours.send(channel.encode([config])[0])
            cmd = [
                self._python,
                "-c",
                "from softswitch.media.worker import main; main()",
                str(theirs.fileno()),
            ]
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),), env=self._env
            )
        except BaseException:
            ours.close()
            theirs.close()
            raise
        theirs.close()
        ours.setblocking(False)
        w.proc, w.sock, w.fd = proc, ours, ours.fileno()
        w.state = "starting"
        w.started_at = w.last_heard = loop.time()
        w.ready = loop.create_future()
        w.exited = loop.create_future()
        w.stats = EngineStats()
        w.cpu_seconds = 0.0
        loop.add_reader(w.fd, self._on_readable, w)
        if w.pending and not w.flush_scheduled:
            w.flush_scheduled = True
            loop.call_soon(self._flush, w)

    def _on_readable(self, w: _Worker) -> None:
        sock = w.sock
        if sock is None:
            return
        buf, view = self._rbuf, self._rview
        while True:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                return
            except OSError:
                n = 0
            if n == 0:
                self._gone(w)
                return
            if self._loop is not None:
                w.last_heard = self._loop.time()
            for message in channel.decode(view[:n]):
                self._handle(w, message)
                if w.sock is not sock:
                    return  # the handler stopped or replaced this worker

    def _handle(self, w: _Worker, message: tuple[Any, ...]) -> None:
        op = message[0]
        if op == channel.EVENTS:
            self._dispatch(message[1])
        elif op == channel.STATS:
            _, w.stats, w.cpu_seconds, _ = message
        elif op == channel.PONG:
            fut = w.pings.pop(message[1], None)
            if fut is not None and not fut.done():
                fut.set_result(None)
        elif op == channel.READY:
            if w.state == "starting":
                w.state = "running"
            if w.ready is not None and not w.ready.done():
                w.ready.set_result(None)
            log.info(
                "media worker %d running (pid %s, ports %s-%s)", w.index, message[1], *w.port_range
            )
        elif op == channel.ERROR:
            _, method, session_id, text = message
            log.warning("media worker %d: %s(%r) failed: %s", w.index, method, session_id, text)
            if session_id is not None:
                self._fail(session_id, w)
        elif op == channel.BIND_FAILED:
            _, session_id, leg, port, text = message
            log.warning(
                "media worker %d cannot bind port %d for %r/%r: %s",
                w.index,
                port,
                session_id,
                leg,
                text,
            )
            self._fail(session_id, w)

    def _fail(self, session_id: str, w: _Worker) -> None:
        """End a session whose media the worker could not set up: the B2BUA hangs up
        on MediaTimeout."""
        session = self._sessions.get(session_id)
        if session is None or session.worker is not w or session.failed:
            return
        session.failed = True
        self._dispatch([MediaTimeout(session_id, leg) for leg in session.legs])

    def _dispatch(self, events: list[MediaEvent], known_only: bool = True) -> None:
        handler = self._handler
        if handler is None:
            return
        sessions = self._sessions
        for event in events:
            session_id = getattr(event, "session_id", None)
            if known_only and session_id is not None and session_id not in sessions:
                continue  # released while the event was on its way
            try:
                handler(event)
            except Exception:  # a bad handler must not stop the media of every call
                log.exception("media event handler failed on %r", event)

    def _close_channel(self, w: _Worker) -> None:
        loop = self._loop
        if w.sock is None:
            return
        if loop is not None:
            loop.remove_reader(w.fd)
            if w.writing:
                loop.remove_writer(w.fd)
        w.writing = False
        w.sock.close()
        w.sock, w.fd = None, -1
        w.pending = []
        w.outq.clear()
        w.queued = 0
        w.flush_scheduled = False
        for fut in w.pings.values():
            if not fut.done():
                fut.set_result(None)  # nothing more will come from it
        w.pings.clear()
        if w.exited is not None and not w.exited.done():
            w.exited.set_result(None)

    def _gone(self, w: _Worker) -> None:
        """End of file on a worker's channel: it stopped, or it died."""
        expected = w.state in ("stopping", "stopped")
        self._close_channel(w)
        if w.ready is not None and not w.ready.done():
            w.ready.set_exception(RuntimeError(f"media worker {w.index} exited during start"))
        _add_stats(self._retired, w.stats)
        w.stats = EngineStats()
        if expected:
            return
        proc, w.proc = w.proc, None
        code = proc.poll() if proc is not None else None
        log.error(
            "media worker %d (pid %s) died%s; ending its %d calls",
            w.index,
            proc.pid if proc is not None else "?",
            f" with exit status {code}" if code is not None else "",
            len(w.sessions),
        )
        if proc is not None and self._loop is not None:
            task = self._loop.create_task(self._reap(proc, 2.0))
            self._reaping.add(task)
            task.add_done_callback(self._reaping.discard)
        events: list[MediaEvent] = []
        for session_id in list(w.sessions):
            session = self._sessions[session_id]
            if not session.failed:
                events.extend(MediaTimeout(session_id, leg) for leg in session.legs)
            self._forget(session_id)
        w.state = "dead"
        self._schedule_restart(w)
        self._dispatch(events, known_only=False)

    def _schedule_restart(self, w: _Worker) -> None:
        loop = self._loop
        if loop is None or not self._running:
            return
        if loop.time() - w.started_at < _RESTART_FAST:
            w.fast_crashes += 1
        else:
            w.fast_crashes = 0
        delay = 0.0
        if w.fast_crashes > 1:
            delay = min(0.5 * 2 ** (w.fast_crashes - 2), _RESTART_DELAY_MAX)
            log.warning("media worker %d keeps dying: next start in %.1f s", w.index, delay)
        w.restart_timer = loop.call_later(delay, self._restart, w)

    def _restart(self, w: _Worker) -> None:
        w.restart_timer = None
        if not self._running or w.state != "dead":
            return
        w.restarts += 1
        try:
            self._spawn(w)
        except OSError as exc:
            log.error("cannot start media worker %d: %s", w.index, exc)
            w.started_at = self._require_loop().time()
            self._schedule_restart(w)

    def _kill(self, w: _Worker, why: str) -> None:
        if w.proc is None or w.proc.poll() is not None:
            return
        log.error("media worker %d (pid %d) is stuck (%s): killing it", w.index, w.proc.pid, why)
        try:
            w.proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass

    async def _reap(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        """Wait for a worker to exit without blocking the loop; kill it past ``timeout``."""
        steps = max(1, int(timeout / 0.02))
        for _ in range(min(steps, _REAP_TRIES)):
            if proc.poll() is not None:
                return
            await asyncio.sleep(0.02)
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def _arm_watchdog(self) -> None:
        if self._loop is not None and self._running:
            self._watch_timer = self._loop.call_later(self._stats_interval, self._watch)

    def _watch(self) -> None:
        self._watch_timer = None
        loop = self._loop
        if loop is None:
            return
        now = loop.time()
        for w in self._workers:
            if w.state == "running" and now - w.last_heard > self._watchdog:
                self._kill(w, f"silent for {now - w.last_heard:.1f} s")
            elif w.state == "starting" and now - w.started_at > self._start_timeout:
                self._kill(w, "did not start")
        self._arm_watchdog()

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("the worker pool is not started")
        return self._loop


def _no_bind(port: int) -> None:
    """Ports are bound in the worker; here taking one from the slice is enough."""
    return None
