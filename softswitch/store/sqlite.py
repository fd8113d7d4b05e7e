"""SQLite state: the location store (and later CDRs) in one WAL database file.

WAL lets the command line read registrations while the daemon writes, and
``synchronous=NORMAL`` keeps a commit cheap while never corrupting the file; the last
commits before a power cut can be lost, which a phone's next re-REGISTER repairs.
Reads are served from memory: the table is loaded once at start and written through.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path

from softswitch.services.location import Binding
from softswitch.sip.flow import Flow

SCHEMA = """
CREATE TABLE IF NOT EXISTS bindings (
    tenant TEXT NOT NULL,
    user TEXT NOT NULL,
    contact TEXT NOT NULL,
    expires_at REAL NOT NULL,
    call_id TEXT NOT NULL,
    cseq INTEGER NOT NULL,
    transport TEXT NOT NULL,
    source_host TEXT NOT NULL,
    source_port INTEGER NOT NULL,
    local TEXT NOT NULL DEFAULT '',
    connection_id INTEGER,
    q REAL,
    path TEXT NOT NULL DEFAULT '[]',
    user_agent TEXT NOT NULL DEFAULT '',
    instance TEXT NOT NULL DEFAULT '',
    reg_id INTEGER,
    registered_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant, user, contact)
);
CREATE INDEX IF NOT EXISTS bindings_expiry ON bindings (expires_at);
"""

_COLUMNS = (
    "tenant, user, contact, expires_at, call_id, cseq, transport, source_host, source_port, "
    "local, connection_id, q, path, user_agent, instance, reg_id, registered_at"
)


def connect(
    path: Path, *, readonly: bool = False, check_same_thread: bool = True
) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            path, timeout=5.0, isolation_level=None, check_same_thread=check_same_thread
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.executescript(SCHEMA)
    return conn


def _row_to_binding(row: tuple) -> Binding:
    (
        tenant,
        user,
        contact,
        expires_at,
        call_id,
        cseq,
        transport,
        host,
        port,
        local,
        conn_id,
        q,
        path,
        user_agent,
        instance,
        reg_id,
        registered_at,
    ) = row
    return Binding(
        tenant=tenant,
        user=user,
        contact=contact,
        expires_at=expires_at,
        call_id=call_id,
        cseq=cseq,
        # A connection id names a socket of the process that wrote it; after a restart
        # that socket is gone and the phone must come back to us.
        flow=Flow(transport, host, port, local, conn_id),
        q=q,
        path=tuple(json.loads(path)),
        user_agent=user_agent,
        instance=instance,
        reg_id=reg_id,
        registered_at=registered_at,
    )


def _binding_to_row(b: Binding) -> tuple:
    return (
        b.tenant,
        b.user,
        b.contact,
        b.expires_at,
        b.call_id,
        b.cseq,
        b.flow.transport,
        b.flow.host,
        b.flow.port,
        b.flow.local,
        b.flow.connection_id,
        b.q,
        json.dumps(list(b.path)),
        b.user_agent,
        b.instance,
        b.reg_id,
        b.registered_at,
    )


_UPSERT = f"INSERT OR REPLACE INTO bindings ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
_DELETE = "DELETE FROM bindings WHERE tenant=? AND user=? AND contact=?"
_DELETE_AOR = "DELETE FROM bindings WHERE tenant=? AND user=?"
_PURGE = "DELETE FROM bindings WHERE expires_at <= ?"


class SqliteLocationStore:
    """A LocationStore served from memory and written behind to SQLite.

    Every change is applied to memory at once and queued; a writer thread commits the
    queue every ``flush_interval`` seconds in one transaction. One commit per REGISTER
    would cost more than everything else a REGISTER does; a burst of thousands of
    phones re-registering becomes a handful of commits. A crash loses at most the last
    ``flush_interval`` of changes, which the phones' next re-REGISTER restores; a clean
    stop (``close``) loses nothing.
    """

    def __init__(self, path: Path, *, flush_interval: float = 0.05) -> None:
        self._conn = connect(path, check_same_thread=False)
        self._aors: dict[tuple[str, str], dict[str, Binding]] = {}
        for row in self._conn.execute(f"SELECT {_COLUMNS} FROM bindings"):
            b = _row_to_binding(row)
            # Connections of an earlier process are gone; keep the address, drop the id.
            if b.flow.connection_id is not None:
                flow = Flow(b.flow.transport, b.flow.host, b.flow.port, b.flow.local, None)
                b = _replace_flow(b, flow)
            self._aors.setdefault((b.tenant, b.user), {})[b.contact] = b
        self._pending: list[tuple[str, tuple]] = []
        self._lock = threading.Lock()
        # flush() from the caller and the writer thread must not interleave commits.
        self._commit_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._flush_interval = flush_interval
        self._writer = threading.Thread(
            target=self._write_loop, name="location-writer", daemon=True
        )
        self._writer.start()

    def lookup(self, tenant: str, user: str, now: float) -> list[Binding]:
        contacts = self._aors.get((tenant, user))
        if not contacts:
            return []
        live = [b for b in contacts.values() if b.is_valid(now)]
        if len(live) > 1:
            live.sort(key=lambda b: b.registered_at, reverse=True)
        return live

    def save(self, tenant: str, user: str, updates: list[Binding], removals: list[str]) -> None:
        contacts = self._aors.setdefault((tenant, user), {})
        ops: list[tuple[str, tuple]] = [(_DELETE, (tenant, user, c)) for c in removals]
        ops.extend((_UPSERT, _binding_to_row(b)) for b in updates)
        for contact in removals:
            contacts.pop(contact, None)
        for b in updates:
            contacts[b.contact] = b
        if not contacts:
            del self._aors[(tenant, user)]
        self._queue(ops)

    def remove_all(self, tenant: str, user: str) -> None:
        self._aors.pop((tenant, user), None)
        self._queue([(_DELETE_AOR, (tenant, user))])

    def purge_expired(self, now: float) -> int:
        removed = 0
        for key in list(self._aors):
            contacts = self._aors[key]
            for contact in [c for c, b in contacts.items() if not b.is_valid(now)]:
                del contacts[contact]
                removed += 1
            if not contacts:
                del self._aors[key]
        self._queue([(_PURGE, (now,))])
        return removed

    def all_bindings(self, now: float) -> list[Binding]:
        out = [b for contacts in self._aors.values() for b in contacts.values() if b.is_valid(now)]
        out.sort(key=lambda b: (b.tenant, b.user, b.contact))
        return out

    def count(self) -> int:
        return sum(len(c) for c in self._aors.values())

    def flush(self) -> None:
        """Commit everything queued so far, now (from the caller's thread)."""
        self._wake.set()
        with self._lock:
            ops, self._pending = self._pending, []
        self._commit(ops)

    def close(self) -> None:
        self._stopping = True
        self._wake.set()
        self._writer.join()
        self.flush()
        self._conn.close()

    # -- writer thread ---------------------------------------------------------------

    def _queue(self, ops: list[tuple[str, tuple]]) -> None:
        with self._lock:
            self._pending.extend(ops)

    def _write_loop(self) -> None:
        while not self._stopping:
            self._wake.wait(self._flush_interval)
            self._wake.clear()
            with self._lock:
                ops, self._pending = self._pending, []
            self._commit(ops)

    def _commit(self, ops: list[tuple[str, tuple]]) -> None:
        if not ops:
            return
        with self._commit_lock, _transaction(self._conn):
            # Runs of the same statement go to executemany; order is kept, so a delete
            # and a later re-insert of the same contact end as they did in memory.
            i = 0
            while i < len(ops):
                sql = ops[i][0]
                j = i
                while j < len(ops) and ops[j][0] == sql:
                    j += 1
                self._conn.executemany(sql, [args for _, args in ops[i:j]])
                i = j


def read_bindings(path: Path, now: float) -> list[Binding]:
    """Live bindings straight from the file, for the command line (read-only)."""
    if not path.exists():
        return []
    conn = connect(path, readonly=True)
    try:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM bindings WHERE expires_at > ? ORDER BY tenant, user, contact",
            (now,),
        ).fetchall()
    finally:
        conn.close()
    return [_row_to_binding(row) for row in rows]


def _replace_flow(b: Binding, flow: Flow) -> Binding:
    from dataclasses import replace

    return replace(b, flow=flow)


class _transaction:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error (autocommit connection)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def __enter__(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._conn.execute("COMMIT" if exc_type is None else "ROLLBACK")
