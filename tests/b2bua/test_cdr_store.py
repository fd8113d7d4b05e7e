"""CDRs in SQLite and their export by ``softswitch cdr``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from softswitch.cli import main
from softswitch.store.cdr import (
    CallRecord,
    SqliteCdrStore,
    parse_since,
    read_records,
    to_csv,
    to_json,
)
from softswitch.wiring import state_database

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def record(n: int, tenant: str = "acme.example", **changes: object) -> CallRecord:
    fields = dict(
        id=f"call{n}",
        tenant=tenant,
        caller="201",
        callee="202",
        start_time=T0 + 60 * n,
        answer_time=T0 + 60 * n + 2,
        end_time=T0 + 60 * n + 12.5,
        billable_seconds=11,
        disposition="answered",
        hangup_cause="normal_clearing",
        hangup_side="caller",
        sip_status=200,
        caller_call_id=f"abc{n}@10.0.0.1",
    )
    fields.update(changes)
    return CallRecord(**fields)  # type: ignore[arg-type]


def test_written_at_once_when_quiet_buffered_when_busy(tmp_path: Path) -> None:
    path = tmp_path / "softswitch.db"
    store = SqliteCdrStore(path, batch=3, min_interval=3600)
    store.add(record(1))  # the first record after a quiet time is written at once
    assert [r.id for r in read_records(path, 0)] == ["call1"]
    store.add(record(2, answer_time=None, billable_seconds=0, disposition="busy"))
    store.add(record(3, tenant="beta.example"))
    assert len(read_records(path, 0)) == 1 and store.pending == 2  # busy: buffered
    store.add(record(4))  # the batch is full: written
    assert [r.id for r in read_records(path, 0)] == ["call1", "call2", "call3", "call4"]
    store.add(record(5))
    store.close()
    assert len(read_records(path, 0)) == 5
    assert [r.id for r in read_records(path, T0 + 120)] == ["call2", "call3", "call4", "call5"]
    assert [r.id for r in read_records(path, 0, "BETA.example")] == ["call3"]
    assert read_records(path, 0)[1] == record(
        2, answer_time=None, billable_seconds=0, disposition="busy"
    )


def test_missing_database_or_table_reads_as_empty(tmp_path: Path) -> None:
    assert read_records(tmp_path / "none.db", 0) == []
    from softswitch.store.sqlite import connect

    connect(tmp_path / "other.db").close()
    assert read_records(tmp_path / "other.db", 0) == []


def test_exports() -> None:
    rows = [record(1), record(2, answer_time=None, billable_seconds=0, disposition="no_answer")]
    data = json.loads(to_json(rows))
    assert data[0]["start_time"] == "2027-01-15T08:01:00.000+00:00"
    assert data[0]["end_time"] == "2027-01-15T08:01:12.500+00:00"
    assert data[1]["answer_time"] is None
    table = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert table[1]["answer_time"] == "" and table[1]["disposition"] == "no_answer"
    assert table[0]["billable_seconds"] == "11"


def test_since_parsing() -> None:
    assert parse_since("2027-01-15") == T0 - 8 * 3600
    assert parse_since("2027-01-15T08:00:00") == T0
    assert parse_since("2027-01-15T09:00:00+01:00") == T0
    assert parse_since(str(T0)) == T0
    with pytest.raises(ValueError):
        parse_since("yesterday")


def test_cli_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "softswitch.toml"
    config.write_text('listen = ["udp:127.0.0.1:5099"]\nstate_dir = "var"\n')
    from softswitch.config import load_config

    store = SqliteCdrStore(state_database(load_config(config)))
    store.add(record(1))
    store.add(record(2, tenant="beta.example"))
    store.close()
    assert main(["cdr", "--config", str(config), "--since", "2027-01-01", "--format", "json"]) == 0
    assert [r["id"] for r in json.loads(capsys.readouterr().out)] == ["call1", "call2"]
    assert (
        main(["cdr", "--config", str(config), "--since", "2027-01-01", "--tenant", "beta.example"])
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("id,tenant,caller,callee,start_time") and len(out) == 2
    assert main(["cdr", "--config", str(config), "--since", "2028-01-01"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1
    assert main(["cdr", "--config", str(config), "--since", "soon"]) == 2


def test_cdrs_share_the_registrations_database() -> None:
    from softswitch.app import database_path
    from softswitch.config import build_config

    config = build_config({}, Path("/etc/softswitch/softswitch.toml"))
    assert state_database(config) == database_path(config)
