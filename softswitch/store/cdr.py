"""Call detail records: one row per call attempt, in the same SQLite file as the
registrations, and their export as CSV or JSON.

A record is written as the call ends, unless the last commit was less than
``min_interval`` ago: then it waits in a buffer that the next commit (the daemon
flushes every few hundred milliseconds, or when the buffer fills) writes in one
transaction. A quiet switch shows each call at once; a burst of short calls costs a
few commits a second, not one per call. ``flush()`` on shutdown writes what is left.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from softswitch.store.sqlite import connect

SCHEMA = """
CREATE TABLE IF NOT EXISTS cdr (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    caller TEXT NOT NULL,
    callee TEXT NOT NULL,
    start_time REAL NOT NULL,
    answer_time REAL,
    end_time REAL NOT NULL,
    billable_seconds INTEGER NOT NULL,
    disposition TEXT NOT NULL,
    hangup_cause TEXT NOT NULL,
    hangup_side TEXT NOT NULL,
    sip_status INTEGER NOT NULL,
    caller_call_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS cdr_start ON cdr (start_time);
CREATE INDEX IF NOT EXISTS cdr_tenant_start ON cdr (tenant, start_time);
"""

DISPOSITIONS = ("answered", "busy", "no_answer", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call attempt. Times are wall-clock seconds since the epoch; ``answer_time`` is
    None for a call nobody answered; ``billable_seconds`` is the answered time rounded
    up to whole seconds."""

    id: str
    tenant: str
    caller: str
    callee: str
    start_time: float
    answer_time: float | None
    end_time: float
    billable_seconds: int
    disposition: str
    hangup_cause: str
    hangup_side: str
    sip_status: int
    caller_call_id: str = ""


_COLUMNS = tuple(f.name for f in fields(CallRecord))
_INSERT = (
    f"INSERT OR REPLACE INTO cdr ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
)


class CdrSink(Protocol):
    def add(self, record: CallRecord) -> None: ...


class MemoryCdrSink:
    """Keeps records in a list (tests, and a daemon without state)."""

    def __init__(self) -> None:
        self.records: list[CallRecord] = []

    def add(self, record: CallRecord) -> None:
        self.records.append(record)


class SqliteCdrStore:
    """Buffered writer of the ``cdr`` table."""

    def __init__(self, path: Path, *, batch: int = 256, min_interval: float = 0.25) -> None:
        self._conn = connect(path)
        self._conn.executescript(SCHEMA)
        self._pending: list[tuple] = []
        self._batch = batch
        self._min_interval = min_interval
        self._flushed_at = float("-inf")

    def add(self, record: CallRecord) -> None:
        self._pending.append(tuple(getattr(record, name) for name in _COLUMNS))
        if (
            len(self._pending) >= self._batch
            or time.monotonic() - self._flushed_at >= self._min_interval
        ):
            self.flush()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def flush(self) -> None:
        if not self._pending:
            return
        self._flushed_at = time.monotonic()
        rows, self._pending = self._pending, []
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.executemany(_INSERT, rows)
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self.flush()
        self._conn.close()


def read_records(path: Path, since: float, tenant: str | None = None) -> list[CallRecord]:
    """Records of calls that started at or after ``since``, oldest first (read-only)."""
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    try:
        query = f"SELECT {', '.join(_COLUMNS)} FROM cdr WHERE start_time >= ?"
        args: list[object] = [since]
        if tenant is not None:
            query += " AND tenant = ?"
            args.append(tenant.lower())
        query += " ORDER BY start_time, id"
        try:
            rows = conn.execute(query, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # a daemon that never finished a call has not created it
            raise
    finally:
        conn.close()
    return [CallRecord(*row) for row in rows]


def _iso(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


def _export_row(record: CallRecord) -> dict[str, object]:
    row = asdict(record)
    row["start_time"] = _iso(record.start_time)
    row["answer_time"] = _iso(record.answer_time) or None
    row["end_time"] = _iso(record.end_time)
    return row


def to_json(records: list[CallRecord]) -> str:
    """A JSON array, one object per call, times in ISO 8601 UTC."""
    return json.dumps([_export_row(r) for r in records], indent=2)


def to_csv(records: list[CallRecord]) -> str:
    """CSV with a header line, times in ISO 8601 UTC (empty answer time: not answered)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = _export_row(r)
        if row["answer_time"] is None:
            row["answer_time"] = ""
        writer.writerow(row)
    return out.getvalue()


def parse_since(text: str) -> float:
    """``--since``: an ISO date or date-time (UTC unless it names a zone), or epoch
    seconds. Raises ValueError."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()
