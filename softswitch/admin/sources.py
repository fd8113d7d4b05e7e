"""What the admin API, the metrics and the dashboard read, as plain data and protocols.

The web side never reaches into the SIP server: the composition root hands it an
``AdminSource`` built from the live objects, so the HTTP code can be tested with a fake
and the server can change shape without the admin API noticing. Calls, conferences, CDRs
and media statistics come from their own subsystems through the small protocols below.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from softswitch.config import Tenant
from softswitch.services.location import Binding


class CallView(Protocol):
    """One call in progress, as an operator sees it (``CallSummary`` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def tenant(self) -> str: ...
    @property
    def caller(self) -> str: ...
    @property
    def callee(self) -> str: ...
    @property
    def state(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def answered_at(self) -> float | None: ...
    @property
    def codec(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One call in progress, as an operator sees it."""

    id: str
    tenant: str
    caller: str
    callee: str
    state: str  # e.g. "ringing", "answered"
    started_at: float  # wall-clock seconds
    answered_at: float | None = None
    codec: str | None = None  # e.g. "PCMU", "opus"; None before media is agreed


@dataclass(frozen=True, slots=True)
class ConferenceSummary:
    tenant: str
    room: str
    participants: tuple[str, ...] = ()
    started_at: float | None = None


@dataclass(frozen=True, slots=True)
class CdrQuery:
    tenant: str | None = None
    since: float | None = None  # wall-clock seconds, inclusive
    until: float | None = None  # exclusive
    limit: int = 100


@dataclass(frozen=True, slots=True)
class MediaStats:
    """Counters of the media engine since it started."""

    rtp_packets_received: int = 0
    rtp_packets_sent: int = 0
    rtp_packets_dropped: int = 0  # refused: unknown source, bad header, held leg
    late_ticks: int = 0  # 20 ms ticks that started late
    rtp_packets_lost: int | None = None  # sequence gaps; None where not counted


@dataclass(frozen=True, slots=True)
class CallStats:
    """Counters of call handling since the daemon started."""

    attempts: int = 0
    # final outcome -> count, e.g. {"answered": 10, "busy": 2, "no_answer": 1}
    outcomes: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Every number ``/metrics`` shows, read at scrape time. ``None`` means the subsystem
    that produces it is not running, and the metric is left out rather than shown as 0."""

    registrations: Mapping[str, int]  # tenant -> live bindings
    sip_received: int
    sip_sent: int
    sip_requests: Mapping[str, int]  # method -> requests received
    sip_parse_errors: int
    transactions: int
    banned_sources: int
    dropped_banned: int
    stopping: bool = False
    active_calls: Mapping[str, int] | None = None  # tenant -> calls in progress
    calls: CallStats | None = None
    auth_failures: int | None = None
    bans: int | None = None
    sip_retransmissions: int | None = None
    media: MediaStats | None = None


class CallControl(Protocol):
    """The calls subsystem as the service edges use it."""

    def active_count(self) -> int: ...

    def active_calls(self) -> Sequence[CallView]: ...

    def hangup(self, call_id: str, reason: str) -> bool:
        """End one call with BYE (or CANCEL); False if no such call is in progress."""

    def hangup_all(self, reason: str) -> int:
        """End every call; returns how many were ended."""


class CdrReader(Protocol):
    def query(self, query: CdrQuery) -> Sequence[Mapping[str, Any]]:
        """Finished calls, newest first, as JSON-ready mappings."""


class NoCalls:
    """A ``CallControl`` for a daemon that does not handle calls."""

    def active_count(self) -> int:
        return 0

    def active_calls(self) -> Sequence[CallView]:
        return ()

    def hangup(self, call_id: str, reason: str) -> bool:
        return False

    def hangup_all(self, reason: str) -> int:
        return 0


class NoCdrs:
    def query(self, query: CdrQuery) -> Sequence[Mapping[str, Any]]:
        return ()


class AdminSource(Protocol):
    """Everything the admin server reads or does, provided by the composition root."""

    def tenants(self) -> Sequence[Tenant]: ...

    def registrations(self) -> Sequence[Binding]: ...

    def calls(self) -> Sequence[CallView]: ...

    def hangup(self, call_id: str) -> bool: ...

    def conferences(self) -> Sequence[ConferenceSummary]: ...

    def cdrs(self, query: CdrQuery) -> Sequence[Mapping[str, Any]]: ...

    def metrics(self) -> MetricsSnapshot: ...

    def stopping(self) -> bool: ...

    def wall(self) -> float: ...
