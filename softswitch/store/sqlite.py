"""SQLite state: the location store (and later CDRs) in one WAL database file.

WAL lets the command line read registrations while the daemon writes, and
``synchronous=NORMAL`` keeps a commit cheap while never corrupting the file; the last
commits before a power cut can be lost, which a phone's next re-REGISTER repairs.
Reads are served from memory: the table is loaded once at start and written through.
"""

from __future__ import annotations

import json
import sqlite3
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


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
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


class SqliteLocationStore:
    """A LocationStore kept in memory and written through to SQLite."""

    def __init__(self, path: Path) -> None:
        self._conn = connect(path)
        self._aors: dict[tuple[str, str], dict[str, Binding]] = {}
        for row in self._conn.execute(f"SELECT {_COLUMNS} FROM bindings"):
            b = _row_to_binding(row)
            # Connections of an earlier process are gone; keep the address, drop the id.
            if b.flow.connection_id is not None:
                flow = Flow(b.flow.transport, b.flow.host, b.flow.port, b.flow.local, None)
                b = _replace_flow(b, flow)
            self._aors.setdefault((b.tenant, b.user), {})[b.contact] = b

    def lookup(self, tenant: str, user: str, now: float) -> list[Binding]:
        contacts = self._aors.get((tenant, user))
        if not contacts:
            return []
        live = [b for b in contacts.values() if b.is_valid(now)]
        live.sort(key=lambda b: b.registered_at, reverse=True)
        return live

    def save(self, tenant: str, user: str, updates: list[Binding], removals: list[str]) -> None:
        contacts = self._aors.setdefault((tenant, user), {})
        with _transaction(self._conn):
            if removals:
                self._conn.executemany(
                    "DELETE FROM bindings WHERE tenant=? AND user=? AND contact=?",
                    [(tenant, user, contact) for contact in removals],
                )
            if updates:
                self._conn.executemany(
                    f"INSERT OR REPLACE INTO bindings ({_COLUMNS}) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    [_binding_to_row(b) for b in updates],
                )
        for contact in removals:
            contacts.pop(contact, None)
        for b in updates:
            contacts[b.contact] = b
        if not contacts:
            del self._aors[(tenant, user)]

    def remove_all(self, tenant: str, user: str) -> None:
        with _transaction(self._conn):
            self._conn.execute("DELETE FROM bindings WHERE tenant=? AND user=?", (tenant, user))
        self._aors.pop((tenant, user), None)

    def purge_expired(self, now: float) -> int:
        with _transaction(self._conn):
            cur = self._conn.execute("DELETE FROM bindings WHERE expires_at <= ?", (now,))
        removed = cur.rowcount
        for key in list(self._aors):
            contacts = self._aors[key]
            for contact in [c for c, b in contacts.items() if not b.is_valid(now)]:
                del contacts[contact]
            if not contacts:
                del self._aors[key]
        return removed

    def all_bindings(self, now: float) -> list[Binding]:
        out = [b for contacts in self._aors.values() for b in contacts.values() if b.is_valid(now)]
        out.sort(key=lambda b: (b.tenant, b.user, b.contact))
        return out

    def count(self) -> int:
        return sum(len(c) for c in self._aors.values())

    def close(self) -> None:
        self._conn.close()


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
