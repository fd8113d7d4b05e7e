"""Shared pieces of the benchmarks: ports, CPU pinning, processes, figures."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tests.support.daemon import Extension, SoftswitchDaemon, write_config
from tests.support.ports import free_port, free_sip_port
from tests.support.sipmsg import send_options
from tests.support.sipp import SippResult, creation_rate

__all__ = [
    "LOAD_CPU",
    "MAX_FAILURE_RATIO",
    "SERVER_CPU",
    "ManagedProcess",
    "RampRunner",
    "ServerFactory",
    "Step",
    "figure",
    "free_port",
    "free_sip_port",
    "judge_step",
    "kamailio_db",
    "kamailio_server",
    "pinned",
    "pinned_self",
    "ramp",
    "ramp_figure",
    "run_ramps",
    "softswitch_server",
    "wait_options",
    "work_dir",
]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"

# The server under test gets one core, the load generator the other: without this,
# figures move with the scheduler's mood.
SERVER_CPU = 0
LOAD_CPU = 1


def work_dir(name: str) -> Path:
    """A fresh scratch directory under bench/work (ignored by git)."""
    path = BENCH_DIR / "work" / name
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def _can_pin(cpu: int) -> bool:
    return shutil.which("taskset") is not None and cpu < (os.cpu_count() or 1)


def pinned(cmd: Sequence[str], cpu: int | None) -> list[str]:
    """``cmd`` run under ``taskset -c cpu`` where that is possible."""
    if cpu is None or not _can_pin(cpu):
        return list(cmd)
    return ["taskset", "-c", str(cpu), *cmd]


@contextmanager
def pinned_self(cpu: int) -> Iterator[None]:
    """Pin this process (all its threads) to ``cpu`` for the duration of the block."""
    if not hasattr(os, "sched_setaffinity") or cpu >= (os.cpu_count() or 1):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def figure(
    name: str,
    ours: float | None,
    peer: float | None,
    peer_name: str,
    target: float,
    unit: str,
    **extra: Any,
) -> dict[str, Any]:
    """One result row; ``ratio`` is ours/peer (higher is better), None if either failed."""
    ratio = ours / peer if ours is not None and peer else None
    return {
        "figure": name,
        "ours": ours,
        "peer": peer,
        "peer_name": peer_name,
        "ratio": ratio,
        "target": target,
        "unit": unit,
        **extra,
    }


def wait_options(
    address: tuple[str, int], timeout: float, proc: subprocess.Popen | None = None
) -> bool:
    """True once OPTIONS to ``address`` gets 200; False on timeout or if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        status = send_options(*address, timeout=0.3)
        if status and status.split()[1:2] == ["200"]:
            return True
        time.sleep(0.05)
    return False


class ManagedProcess:
    """A child in its own process group, logged to a file, always stopped on exit."""

    def __init__(self, cmd: Sequence[str], log_path: Path, cwd: Path | None = None) -> None:
        self.cmd = list(cmd)
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ManagedProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                start_new_session=True,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 10.0) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Kamailio forks workers; none of them may survive the bench.
        _signal_group(proc, signal.SIGKILL)
        try:
            return proc.wait(5)
        except subprocess.TimeoutExpired:
            return None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# --- SIPp rate ramps against a restarted server ---------------------------------------

# A step with more failed calls than this is not sustained.
MAX_FAILURE_RATIO = 0.001


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    achieved: float
    sustained: bool
    detail: str = ""


# A server is something to enter for one step: yields the address SIPp should target
# and an optional note for the figure. It is called with the step's scratch directory
# and the port SIPp will send from.
ServerHandle = tuple[tuple[str, int], str | None]
ServerFactory = Callable[[Path, int], AbstractContextManager[ServerHandle]]
# Runs one step at a rate (the attempt number keeps retries' directories apart).
StepRunner = Callable[[int, int], tuple[Step, str | None]]
# Runs a whole ramp: (best sustained rate, every step, note).
RampRunner = Callable[[], tuple[int | None, list[Step], str | None]]


def judge_step(
    name: str,
    rate: int,
    calls: int,
    res: SippResult,
    step_seconds: float,
    step_dir: Path,
    stat_period_ms: int,
) -> Step:
    """Whether the server sustained ``rate``, from the load generator's SIPp result.

    A lagging server fills SIPp's limit of outstanding calls and slows call creation
    before anything fails, hence the check on the achieved creation rate.
    """
    achieved = creation_rate(res.stat_path, calls) or 0.0
    # The period granularity of creation_rate() already costs up to one period.
    kept_up = achieved >= rate * 0.95 * step_seconds / (step_seconds + stat_period_ms / 1000)
    failures_ok = res.failed <= calls * MAX_FAILURE_RATIO
    complete = res.successful + res.failed >= calls and not res.timed_out
    sustained = kept_up and failures_ok and complete
    step = Step(rate, calls, res.successful, res.failed, round(achieved, 1), sustained)
    if not sustained:
        step.detail = f"sipp exit {res.returncode}, logs in {step_dir}"
    print(
        f"  {name:10s} {rate:6d}/s: {res.successful}/{calls} ok, {res.failed} failed,"
        f" {achieved:.0f} calls/s achieved -> {'sustained' if sustained else 'NOT sustained'}",
        flush=True,
    )
    return step


def ramp(steps: Sequence[int], run_step: StepRunner) -> tuple[int | None, list[Step], str | None]:
    """Step through ``steps`` until one is not sustained twice in a row.

    Returns the last sustained rate (None if not even the first), every step run, and
    the last note a server gave.
    """
    best: int | None = None
    results: list[Step] = []
    note: str | None = None
    step: Step | None = None
    for rate in steps:
        for attempt in (1, 2):
            step, step_note = run_step(rate, attempt)
            note = step_note or note
            results.append(step)
            # One retry: a single stall (a page fault storm, a timer) should not end the
            # ramp; two in a row is the server's limit.
            if step.sustained:
                break
        if step is None or not step.sustained:
            break
        best = rate
    return best, results, note


def run_ramps(ramps: Sequence[tuple[str, RampRunner]]) -> dict[str, dict[str, Any]]:
    """Each server's ramp in turn; a server that breaks does not cost the others theirs."""
    outcome: dict[str, dict[str, Any]] = {}
    for name, run in ramps:
        started = time.monotonic()
        try:
            best, results, note = run()
            outcome[name] = {"best": best, "steps": [asdict(s) for s in results], "note": note}
        except Exception as e:
            outcome[name] = {"best": None, "steps": [], "error": f"{type(e).__name__}: {e}"}
            print(f"  {name}: failed: {outcome[name]['error'][:2000]}", flush=True)
        print(f"  {name}: {time.monotonic() - started:.0f} s", flush=True)
    return outcome


def ramp_figure(
    name: str,
    outcome: Mapping[str, Mapping[str, Any]],
    steps: Sequence[int],
    peer_name: str,
    target: float,
    unit: str,
    ours_key: str = "softswitch",
    peer_key: str = "kamailio",
    note: str | None = None,
) -> dict[str, Any]:
    """The figure of two ramps: best rates, every step, errors and caveats."""
    ours, peer = outcome[ours_key], outcome[peer_key]
    errors = [f"{n}: {o['error']}" for n, o in outcome.items() if o.get("error")]
    for n, o in outcome.items():
        if not o.get("error") and o["best"] is None:
            errors.append(f"{n}: not even {steps[0]}/s sustained")
    extra: dict[str, Any] = {"steps": {n: o["steps"] for n, o in outcome.items()}}
    if errors:
        extra["error"] = "; ".join(e.splitlines()[0] for e in errors)
    notes = [n for n in (note, ours.get("note")) if n]
    capped = [n for n, o in outcome.items() if o["best"] == steps[-1]]
    if capped:
        notes.append(f"{' and '.join(capped)} sustained the top step: a floor, not a limit")
    if notes:
        extra["note"] = "; ".join(notes)
    return figure(name, ours["best"], peer["best"], peer_name, target, unit, **extra)


# --- the servers ------------------------------------------------------------------------


def kamailio_db(path: Path, users: Iterable[tuple[str, str, str]]) -> Path:
    """An auth_db subscriber table (schema version 7) of (user, password, domain),
    plaintext passwords."""
    db = sqlite3.connect(path)
    db.executescript(
        """
        CREATE TABLE version (
            id INTEGER PRIMARY KEY NOT NULL,
            table_name VARCHAR(32) NOT NULL,
            table_version INTEGER DEFAULT 0 NOT NULL,
            CONSTRAINT version_table_name_idx UNIQUE (table_name));
        INSERT INTO version (table_name, table_version) VALUES ('subscriber', 7);
        CREATE TABLE subscriber (
            id INTEGER PRIMARY KEY NOT NULL,
            username VARCHAR(64) DEFAULT '' NOT NULL,
            domain VARCHAR(64) DEFAULT '' NOT NULL,
            password VARCHAR(64) DEFAULT '' NOT NULL,
            ha1 VARCHAR(128) DEFAULT '' NOT NULL,
            ha1b VARCHAR(128) DEFAULT '' NOT NULL,
            CONSTRAINT subscriber_account_idx UNIQUE (username, domain));
        """
    )
    db.executemany("INSERT INTO subscriber (username, password, domain) VALUES (?, ?, ?)", users)
    db.commit()
    db.close()
    return path


def kamailio_server(cfg_template: Path, db: Path, children: int = 4) -> ServerFactory:
    """Kamailio from a config with @@PORT@@, @@CHILDREN@@, @@SECRET@@ and @@DB@@
    placeholders, pinned to the server core, a fresh process per step."""
    kamailio = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")
    if not kamailio:
        raise FileNotFoundError("kamailio not installed (Debian package kamailio)")
    template = cfg_template.read_text()

    class Server(AbstractContextManager[ServerHandle]):
        def __init__(self, step_dir: Path, sipp_port: int) -> None:
            self.step_dir = step_dir
            self.stack = ExitStack()

        def __enter__(self) -> ServerHandle:
            port = free_sip_port()
            cfg = template
            values = {"PORT": port, "CHILDREN": children, "SECRET": "bench", "DB": db}
            for key, value in values.items():
                cfg = cfg.replace(f"@@{key}@@", str(value))
            cfg_path = self.step_dir / cfg_template.name
            cfg_path.write_text(cfg)
            # Overload runs exhaust 256 MB of shared memory (FIELD-NOTES).
            cmd = [kamailio, "-DD", "-E", "-f", str(cfg_path), "-m", "1024", "-M", "16"]
            cmd += ["-Y", str(self.step_dir), "-w", str(self.step_dir)]
            proc = self.stack.enter_context(
                ManagedProcess(pinned(cmd, SERVER_CPU), self.step_dir / "kamailio.log")
            )
            if not wait_options(("127.0.0.1", port), 15, proc.proc):
                self.stack.close()
                raise RuntimeError("kamailio did not start:\n" + proc.log_tail())
            return ("127.0.0.1", port), None

        def __exit__(self, *exc: object) -> None:
            self.stack.close()

    return Server


def softswitch_server(tenants: Mapping[str, Sequence[Extension]], **options: Any) -> ServerFactory:
    """The daemon with a config written by ``write_config(tenants, **options)``, pinned
    to the server core, a fresh process per step."""

    class Server(AbstractContextManager[ServerHandle]):
        def __init__(self, step_dir: Path, sipp_port: int) -> None:
            self.step_dir = step_dir
            self.stack = ExitStack()

        def __enter__(self) -> ServerHandle:
            config = write_config(self.step_dir / "softswitch.toml", tenants, **options)
            daemon = SoftswitchDaemon(
                config, log_path=self.step_dir / "softswitch.log", ready_timeout=60, cpu=SERVER_CPU
            )
            self.stack.enter_context(daemon)
            return daemon.address, None

        def __exit__(self, *exc: object) -> None:
            self.stack.close()

    return Server
