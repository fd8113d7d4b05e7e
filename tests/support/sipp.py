"""Running SIPp scenarios as bounded subprocesses and reading back their results."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

SCENARIOS = Path(__file__).resolve().parent.parent / "data" / "sipp"


def scenario_path(name: str) -> Path:
    """A scenario shipped in tests/data/sipp (``name`` with or without ``.xml``)."""
    p = SCENARIOS / (name if name.endswith(".xml") else name + ".xml")
    if not p.is_file():
        raise FileNotFoundError(p)
    return p


@dataclass
class SippResult:
    returncode: int
    successful: int
    failed: int
    elapsed: float
    command: list[str]
    stdout_path: Path
    stat_path: Path
    error_path: Path
    screen_path: Path
    message_path: Path | None
    timed_out: bool = False
    stats: dict[str, str] = field(default_factory=dict)

    @property
    def call_rate(self) -> float | None:
        """Calls/s SIPp achieved; below the requested rate when the server lags."""
        return call_rate(self.stats)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def errors(self, limit: int = 4000) -> str:
        try:
            return self.error_path.read_text(errors="replace")[:limit]
        except OSError:
            return ""

    def describe(self) -> str:
        """A summary for assertion messages."""
        tail = ""
        try:
            tail = "\n".join(self.stdout_path.read_text(errors="replace").splitlines()[-40:])
        except OSError:
            pass
        return (
            f"sipp exit {self.returncode}{' (killed on timeout)' if self.timed_out else ''}:"
            f" {self.successful} successful, {self.failed} failed in {self.elapsed:.1f} s\n"
            f"command: {' '.join(self.command)}\n"
            f"--- errors ({self.error_path}) ---\n{self.errors()}\n"
            f"--- screen ---\n{tail}"
        )


def write_injection_csv(
    path: str | os.PathLike[str], rows: Iterable[Sequence[str]], mode: str = "SEQUENTIAL"
) -> Path:
    """A SIPp -inf file: first line the read mode, then ``;``-separated fields."""
    path = Path(path)
    lines = [mode]
    for row in rows:
        for f in row:
            if ";" in f or "\n" in f:
                raise ValueError(f"field cannot hold ';' or a newline: {f!r}")
        lines.append(";".join(row))
    path.write_text("\n".join(lines) + "\n", encoding="ascii")
    return path


def auth_field(username: str, password: str) -> str:
    """A whole ``[authentication ...]`` keyword, injected as one CSV field.

    SIPp 3.6 does not expand ``[fieldN]`` inside ``[authentication ...]``.
    """
    if any(c in username + password for c in " ]=;"):
        raise ValueError("SIPp cannot carry spaces, ']', '=' or ';' in credentials")
    return f"[authentication username={username} password={password}]"


def register_rows(
    users: Iterable[tuple[str, str, str]],
) -> list[tuple[str, str, str]]:
    """Rows for register_auth.xml / register_wrong_password.xml from (user, password, domain)."""
    return [(u, auth_field(u, p), d) for u, p, d in users]


def run_sipp(
    scenario: str | os.PathLike[str],
    target: tuple[str, int],
    *,
    workdir: str | os.PathLike[str],
    calls: int,
    rate: float | None = None,
    rate_period_ms: int | None = None,
    limit: int | None = None,
    inf: str | os.PathLike[str] | None = None,
    local_port: int | None = None,
    transport: str = "u1",
    timeout: float = 60.0,
    trace_msg: bool = False,
    cpu: int | None = None,
    extra_args: Sequence[str] = (),
    name: str | None = None,
) -> SippResult:
    """Run SIPp in the foreground until ``calls`` calls are done or ``timeout`` passes.

    SIPp's own global timeout is ``timeout`` and makes it fail; the subprocess is
    killed a few seconds later if it still has not exited. Logs go to ``workdir``
    under ``name`` (default: the scenario's stem). ``transport`` "u1" (one socket)
    keeps the source address fixed, which the server's per-source limits see.
    """
    sipp = shutil.which("sipp")
    if not sipp:
        raise FileNotFoundError("sipp not installed (Debian package sip-tester)")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    scenario = Path(scenario)
    if not scenario.is_absolute() and not scenario.exists():
        scenario = scenario_path(str(scenario))
    stem = name or scenario.stem
    paths = {
        k: workdir / f"{stem}.{k}"
        for k in ("stdout.log", "stat.csv", "errors.log", "screen.log", "messages.log")
    }
    for p in paths.values():
        p.unlink(missing_ok=True)
    cmd = [
        sipp,
        "-sf", str(scenario),
        "-m", str(calls),
        "-t", transport,
        "-i", "127.0.0.1",
        "-nostdin",
        "-timeout", f"{max(1, round(timeout))}s",
        "-timeout_error",
        "-trace_stat", "-stf", str(paths["stat.csv"]),
        "-trace_err", "-error_file", str(paths["errors.log"]),
        "-trace_screen", "-screen_file", str(paths["screen.log"]),
    ]  # fmt: skip
    if rate is not None:
        cmd += ["-r", f"{rate:g}"]
    if rate_period_ms is not None:
        cmd += ["-rp", f"{rate_period_ms}"]
    if limit is not None:
        cmd += ["-l", str(limit)]
    if inf is not None:
        cmd += ["-inf", str(inf)]
    if local_port is not None:
        cmd += ["-p", str(local_port)]
    if trace_msg:
        cmd += ["-trace_msg", "-message_file", str(paths["messages.log"])]
    cmd += [*extra_args, f"{target[0]}:{target[1]}"]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]

    started = time.monotonic()
    timed_out = False
    with open(paths["stdout.log"], "wb") as out:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=workdir
        )
        try:
            rc = proc.wait(timeout + 10)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            rc = proc.wait(5)
    elapsed = time.monotonic() - started
    stats = read_final_stats(paths["stat.csv"])
    return SippResult(
        returncode=rc,
        successful=_int(stats.get("SuccessfulCall(C)")),
        failed=_int(stats.get("FailedCall(C)")),
        elapsed=elapsed,
        command=cmd,
        stdout_path=paths["stdout.log"],
        stat_path=paths["stat.csv"],
        error_path=paths["errors.log"],
        screen_path=paths["screen.log"],
        message_path=paths["messages.log"] if trace_msg else None,
        timed_out=timed_out,
        stats=stats,
    )


def _int(v: str | None) -> int:
    try:
        return int(v) if v is not None else 0
    except ValueError:
        return 0


def read_stats(path: Path) -> list[dict[str, str]]:
    """Every row of a -trace_stat file (one per -fd period, then a final one)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f, delimiter=";"))
    except OSError:
        return []
    return [dict(zip(rows[0], r, strict=False)) for r in rows[1:]]


def read_final_stats(path: Path) -> dict[str, str]:
    """Last row of a -trace_stat file, keyed by column name (empty if none yet)."""
    rows = read_stats(path)
    return rows[-1] if rows else {}


def stat_time(row: dict[str, str], column: str) -> float | None:
    """Epoch seconds of a time column (SIPp writes "date<TAB>time<TAB>epoch")."""
    try:
        return float(row[column].split("\t")[-1])
    except (KeyError, ValueError):
        return None


def creation_rate(path: Path, calls: int) -> float | None:
    """Calls/s at which SIPp started ``calls`` calls, from periodic -trace_stat rows.

    Unlike CallRate(C) this ignores the time spent waiting for the last answers, so a
    single late response does not read as a slow server; a server that lags still
    shows, because SIPp stops starting calls once its -l limit is outstanding. The
    precision is the -fd period.
    """
    rows = read_stats(path)
    for row in rows:
        try:
            created = int(row.get("OutgoingCall(C)", "0"))
        except ValueError:
            continue
        if created >= calls:
            start, now = stat_time(row, "StartTime"), stat_time(row, "CurrentTime")
            if start is not None and now is not None and now > start:
                return calls / (now - start)
    return None


def elapsed_seconds(stats: dict[str, str]) -> float | None:
    """SIPp's cumulative elapsed time (``ElapsedTime(C)``, HH:MM:SS[:micro]) in seconds."""
    v = stats.get("ElapsedTime(C)")
    m = re.fullmatch(r"(\d+):(\d+):(\d+)(?::(\d+))?", v or "")
    if not m:
        return None
    h, mi, s = (int(x) for x in m.groups()[:3])
    return h * 3600 + mi * 60 + s + int(m.group(4) or 0) / 1e6


def call_rate(stats: dict[str, str]) -> float | None:
    """Calls per second SIPp actually started over the whole run (``CallRate(C)``)."""
    try:
        return float(stats["CallRate(C)"])
    except (KeyError, ValueError):
        return None


def received_messages(message_log: Path) -> list[bytes]:
    """SIP messages SIPp received, from its -trace_msg log, oldest first."""
    text = message_log.read_bytes()
    out = []
    for block in re.split(rb"\n-{20,}[^\n]*\n", b"\n" + text):
        m = re.match(rb"\w+ message received \[(\d+)\] bytes :\n\n", block)
        if m:
            out.append(block[m.end() : m.end() + int(m.group(1))])
    return out
