"""The composition root: config, state, clock, the SIP server, the admin server, signals.

Life cycle of the daemon, as systemd sees it:

- start: bind every socket (SIP, then admin), then ``READY=1``; ``WATCHDOG=1`` and
  ``STATUS=`` from the event loop from then on;
- SIGHUP: re-read the config file; a valid one replaces the running one without touching
  calls or registrations of extensions that still exist, an invalid one is logged and
  ignored;
- SIGTERM/SIGINT: ``STOPPING=1``, refuse new calls with 503 + Retry-After, let calls in
  progress go on for ``[service] stop_grace_seconds``, end the rest with BYE, close the
  stores, exit 0. A second SIGTERM cuts the grace time short.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from softswitch.admin.sources import (
    CallControl,
    CallStats,
    CallView,
    CdrQuery,
    CdrReader,
    ConferenceSummary,
    MediaStats,
    MetricsSnapshot,
)
from softswitch.admin.web import AdminServer
from softswitch.clock import Clock, SystemClock
from softswitch.config import Config, Tenant, load_config
from softswitch.daemon import Notifier, heartbeat, status_text
from softswitch.errors import ConfigError
from softswitch.logs import get_logger
from softswitch.server import SipServer
from softswitch.services.location import Binding
from softswitch.store.cdr import CallRecord, read_records
from softswitch.store.sqlite import SqliteLocationStore

log = get_logger("softswitch")

DB_NAME = "softswitch.db"
SECRET_NAME = "nonce.key"
# After the calls are told to end at shutdown, how long their BYEs get to be answered
# before the sockets close (a lost BYE is retransmitted after T1, 2*T1, ...).
BYE_WAIT = 2.0
# How long the carriers get to answer our unregistrations at stop.
UNREGISTER_WAIT = 2.0
DRAIN_POLL = 0.1


def database_path(config: Config) -> Path:
    return config.state_dir / DB_NAME


def load_secret(state_dir: Path) -> bytes:
    """The key that signs digest nonces. Kept on disk so that phones holding a nonce
    from before a restart are not all re-challenged (and not counted as failures)."""
    path = state_dir / SECRET_NAME
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        secret = path.read_bytes()
        if len(secret) >= 32:
            return secret
    except FileNotFoundError:
        pass
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


class Closeable(Protocol):
    def close(self) -> None: ...


class CallOutcomes:
    """Counts finished calls by disposition, fed by the call manager as each one ends
    (not per message), for the call metrics."""

    def __init__(self, chained: Callable[[CallRecord], None] | None = None) -> None:
        self.by_disposition: dict[str, int] = {}
        self._chained = chained

    def record(self, record: CallRecord) -> None:
        d = record.disposition
        self.by_disposition[d] = self.by_disposition.get(d, 0) + 1
        if self._chained is not None:
            self._chained(record)

    @property
    def ended(self) -> int:
        return sum(self.by_disposition.values())


class SqliteCdrReader:
    """CDR queries for the admin API, on a read-only connection of their own so that a
    long query never holds up the writer."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def query(self, query: CdrQuery) -> Sequence[Mapping[str, Any]]:
        records = read_records(self.path, query.since or 0.0, query.tenant)
        if query.until is not None:
            until = query.until
            records = [r for r in records if r.start_time < until]
        return [asdict(r) for r in reversed(records[-query.limit :])]


class Runtime:
    """The running daemon as the service edges see it: systemd's ``STATUS=`` (a
    ``daemon.StatusSource``) and the admin server (an ``admin.sources.AdminSource``).

    Reads the server's current config on every call, so a reload shows at once.
    """

    def __init__(
        self,
        server: SipServer,
        clock: Clock,
        calls: CallControl,
        cdrs: CdrReader,
        outcomes: CallOutcomes,
    ) -> None:
        self.server = server
        self.clock = clock
        self.call_control = calls
        self.cdr_reader = cdrs
        self.outcomes = outcomes
        self.is_stopping = False

    # daemon.StatusSource
    def registration_count(self) -> int:
        return len(self.registrations())

    def active_call_count(self) -> int:
        return self.call_control.active_count()

    # admin.sources.AdminSource
    def tenants(self) -> Sequence[Tenant]:
        return self.server.config.tenants

    def registrations(self) -> Sequence[Binding]:
        return self.server.location.all_bindings(self.clock.wall())

    def calls(self) -> Sequence[CallView]:
        return self.call_control.active_calls()

    def hangup(self, call_id: str) -> bool:
        return self.call_control.hangup(call_id, "admin")

    def conferences(self) -> Sequence[ConferenceSummary]:
        out = []
        for room in self.server.call_manager.conferences.snapshot()["rooms"]:
            participants = []
            for p in room["participants"]:
                marks = [m for m in ("moderator", "muted") if p[m]]
                participants.append(p["caller"] + (f" ({', '.join(marks)})" if marks else ""))
            label = room["number"] + (f" {room['name']}" if room["name"] else "")
            out.append(
                ConferenceSummary(room["tenant"], label, tuple(participants), room["started_at"])
            )
        return out

    def cdrs(self, query: CdrQuery) -> Sequence[Mapping[str, Any]]:
        return self.cdr_reader.query(query)

    def stopping(self) -> bool:
        return self.is_stopping

    def wall(self) -> float:
        return self.clock.wall()

    def media_stats(self) -> MediaStats | None:
        # In-process engine or worker pool: both keep the engine's counters in ``stats``.
        st = getattr(self.server.media, "stats", None)
        if st is None:
            return None
        return MediaStats(
            rtp_packets_received=st.received,
            rtp_packets_sent=st.forwarded + st.transcoded,
            rtp_packets_dropped=st.dropped,
            late_ticks=st.late_ticks,
        )

    def metrics(self) -> MetricsSnapshot:
        server = self.server
        registrations = {t.domain: 0 for t in server.config.tenants}
        for b in self.registrations():
            registrations[b.tenant] = registrations.get(b.tenant, 0) + 1
        active = {t.domain: 0 for t in server.config.tenants}
        calls = self.calls()
        for call in calls:
            active[call.tenant] = active.get(call.tenant, 0) + 1
        counters = server.counters
        return MetricsSnapshot(
            registrations=registrations,
            sip_received=counters.received,
            sip_sent=counters.sent,
            sip_requests=dict(counters.by_method),
            sip_parse_errors=counters.parse_errors,
            transactions=len(server.tx),
            banned_sources=len(server.bans.banned(self.clock.now())),
            auth_failures=server.bans.failures_total,
            bans=server.bans.bans_total,
            dropped_banned=counters.dropped_banned,
            stopping=self.is_stopping,
            active_calls=active,
            calls=CallStats(
                # Every call the switch took on is either still going or has its record.
                attempts=self.outcomes.ended + len(calls),
                outcomes=dict(self.outcomes.by_disposition),
            ),
            media=self.media_stats(),
        )

    def status(self) -> str:
        return status_text(self, stopping=self.is_stopping)


class Daemon:
    """Owns the objects of one run and the signal-driven steps of its life cycle."""

    def __init__(self, config: Config, notifier: Notifier) -> None:
        self.config = config
        self.notifier = notifier
        self.clock = SystemClock()
        self.store = SqliteLocationStore(database_path(config))
        self.server = SipServer(config, self.clock, self.store, load_secret(config.state_dir))
        self.calls: CallControl = self.server.calls
        manager = self.server.call_manager
        outcomes = CallOutcomes(manager.on_call_ended)
        manager.on_call_ended = outcomes.record
        self.runtime = Runtime(
            self.server,
            self.clock,
            self.calls,
            SqliteCdrReader(database_path(config)),
            outcomes,
        )
        self.admin: AdminServer | None = (
            AdminServer(config.admin, self.runtime) if config.admin.enabled else None
        )
        # Closed last, after the server (which writes the CDRs still buffered).
        self.closeables: list[Closeable] = [self.store]
        self._stop_requests = 0
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()

    # -- signals ------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop, sig)
        loop.add_signal_handler(signal.SIGHUP, self.reload)

    def request_stop(self, sig: signal.Signals | None = None) -> None:
        self._stop_requests += 1
        if self._stop_requests == 1:
            self._stop.set()
        else:
            log.info("stop_hurried", signal=sig.name if sig else None)
            self._hurry.set()

    def reload(self) -> bool:
        """Re-read the config file; True if the new one is now in force."""
        path = self.config.path
        self.notifier.reloading()
        try:
            new = load_config(path)
        except ConfigError as exc:
            log.error(
                "reload_rejected",
                config=str(path),
                errors=str(exc).splitlines(),
                detail="the running configuration stays in force",
            )
            self.notifier.ready(self.runtime.status())
            return False
        try:
            warnings = self.server.reload(new)
        except Exception:
            # Validation passed, so this is a bug; keep serving on what was applied.
            log.exception("reload_failed", config=str(path))
            self.notifier.ready(self.runtime.status())
            return False
        if new.state_dir != self.config.state_dir:
            warnings.append("state_dir changes only on restart")
        if self.admin is not None:
            warnings += self.admin.reconfigure(new.admin)
        elif new.admin.enabled:
            warnings.append("the admin API starts only on restart")
        if new.log_level != self.config.log_level or new.log_format != self.config.log_format:
            warnings.append("log_level and log_format change only on restart")
        self.config = new
        for warning in warnings:
            log.warning("reload_warning", config=str(path), detail=warning)
        log.info(
            "reloaded",
            config=str(path),
            tenants=len(new.tenants),
            extensions=sum(len(t.extensions) for t in new.tenants),
            registrations=self.runtime.registration_count(),
        )
        self.notifier.ready(self.runtime.status())
        return True

    # -- life cycle ---------------------------------------------------------------------

    async def run(self) -> int:
        self.install_signal_handlers()
        try:
            await self.server.start()
        except OSError as exc:
            log.error("cannot_listen", error=str(exc))
            self._close_stores()
            return 1
        if self.admin is not None:
            try:
                await self.admin.start()
            except OSError as exc:
                log.error(
                    "cannot_listen",
                    error=str(exc),
                    what="admin",
                    address=self.admin.settings.listen,
                )
                self.server.close()
                self._close_stores()
                return 1
        log.info(
            "started",
            tenants=len(self.config.tenants),
            registrations=self.runtime.registration_count(),
            state=str(self.config.state_dir),
            systemd=self.notifier.enabled,
        )
        # Every socket is bound: only now may systemd start what depends on us.
        self.notifier.ready(self.runtime.status())
        beat = None
        if self.notifier.enabled:
            beat = asyncio.create_task(heartbeat(self.notifier, self.runtime.status))
        try:
            await self._stop.wait()
            await self.drain()
        finally:
            if beat is not None:
                beat.cancel()
            if self.admin is not None:
                await self.admin.close()
            # aclose waits for media worker processes to stop; close() cannot.
            await self.server.aclose()
            self._close_stores()
            self.notifier.close()
        log.info("stopped")
        return 0

    async def drain(self) -> None:
        """Stop taking calls, let the current ones run for the grace time, then end them."""
        settings = self.config.service
        self.runtime.is_stopping = True
        self.server.start_draining(settings.retry_after)
        self.notifier.stopping(self.runtime.status())
        active = self.calls.active_count()
        log.info(
            "stopping",
            active_calls=active,
            grace_seconds=settings.stop_grace_seconds,
            retry_after=settings.retry_after,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.stop_grace_seconds
        while self.calls.active_count() and not self._hurry.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                await asyncio.wait_for(self._hurry.wait(), min(DRAIN_POLL, remaining))
            except TimeoutError:
                pass
        if self.calls.active_count():
            ended = self.calls.hangup_all("shutdown")
            log.info("calls_ended", count=ended, reason="shutdown")
            bye_deadline = loop.time() + BYE_WAIT
            # A call counts as ended once its BYE is sent; stay for a lost BYE's first
            # retransmissions (T1, 3*T1) before the sockets close.
            await asyncio.sleep(min(BYE_WAIT, 4 * self.config.sip.timers.t1))
            while self.calls.active_count() and loop.time() < bye_deadline:
                await asyncio.sleep(0.02)
            left = self.calls.active_count()
            if left:
                log.warning("calls_not_confirmed_ended", count=left)
        self.server.stop_trunks()
        unregister_deadline = loop.time() + UNREGISTER_WAIT
        while self.server.trunks.pending() and loop.time() < unregister_deadline:
            await asyncio.sleep(0.02)

    def _close_stores(self) -> None:
        for closeable in reversed(self.closeables):
            try:
                closeable.close()
            except Exception as exc:  # one failing store must not keep the others open
                log.error("close_failed", what=type(closeable).__name__, error=repr(exc))


async def serve(config: Config, notifier: Notifier | None = None) -> int:
    daemon = Daemon(config, notifier if notifier is not None else Notifier.from_environ())
    return await daemon.run()


def run(config: Config) -> int:
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux
        return asyncio.run(serve(config))
    return uvloop.run(serve(config))
