"""Authenticated REGISTER throughput: softswitch against Kamailio 5.6, same load.

SIPp (core 1) ramps through fixed call rates against the server (core 0); one call is
a challenged REGISTER plus the authenticated one, so calls/s = authenticated
REGISTER/s. The figure is the highest step rate the server sustained with fewer than
0.1% failed calls. The server is restarted before every step: an overloaded UDP server
collapses and can stay slow long after the overload.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench._common import (
    LOAD_CPU,
    SERVER_CPU,
    ManagedProcess,
    figure,
    free_port,
    free_sip_port,
    pinned,
    wait_options,
    work_dir,
)
from tests.support.daemon import SoftswitchDaemon, write_config
from tests.support.sipp import (
    creation_rate,
    register_rows,
    run_sipp,
    write_injection_csv,
)

FIGURE = "authenticated REGISTER/s (10,000 users)"
PEER_NAME = "Kamailio 5.6"
TARGET = 0.5
MAX_FAILURE_RATIO = 0.001
STAT_PERIOD_MS = 100

TENANTS = ("bench-a.example", "bench-b.example")
USERS_PER_TENANT = 5000
KAMAILIO_CFG = Path(__file__).resolve().parent / "kamailio" / "kamailio.cfg"

FULL_STEPS = (1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000, 8000, 10000, 12000, 14000, 16000)
QUICK_STEPS = (1000, 4000)


def users() -> list[tuple[str, str, str]]:
    """(user, password, domain) for every subscriber, tenants interleaved."""
    return [
        (str(10000 + i), f"pw{10000 + i}{d[6]}", d)
        for i in range(USERS_PER_TENANT)
        for d in TENANTS
    ]


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
# and an optional note for the figure.
ServerFactory = Callable[[Path, int], AbstractContextManager[tuple[tuple[str, int], str | None]]]


def _step(
    name: str,
    start_server: ServerFactory,
    work: Path,
    inf: Path,
    rate: int,
    step_seconds: float,
    attempt: int,
) -> tuple[Step, str | None]:
    calls = int(rate * step_seconds)
    step_dir = work / f"{name}-{rate}-{attempt}"
    step_dir.mkdir()
    sipp_port = free_port(tcp=False)
    with start_server(step_dir, sipp_port) as (target, note):
        res = run_sipp(
            "register_auth",
            target,
            workdir=step_dir,
            calls=calls,
            rate=rate,
            # Enough concurrency for a few hundred ms of latency, not unbounded.
            limit=max(200, rate // 2),
            inf=inf,
            local_port=sipp_port,
            timeout=step_seconds * 3 + 10,
            cpu=LOAD_CPU,
            extra_args=[
                "-buff_size", str(4 << 20),
                "-max_recv_loops", "10000",
                "-fd", f"{STAT_PERIOD_MS}ms",
            ],
        )  # fmt: skip
    achieved = creation_rate(res.stat_path, calls) or 0.0
    # The period granularity of creation_rate() already costs up to one period.
    kept_up = achieved >= rate * 0.95 * step_seconds / (step_seconds + STAT_PERIOD_MS / 1000)
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
    return step, note


def ramp(
    name: str, start_server: ServerFactory, work: Path, steps: tuple[int, ...], step_seconds: float
) -> tuple[int | None, list[Step], str | None]:
    inf = write_injection_csv(work / "users.csv", register_rows(users()))
    best: int | None = None
    results: list[Step] = []
    note: str | None = None
    for rate in steps:
        for attempt in (1, 2):
            step, step_note = _step(name, start_server, work, inf, rate, step_seconds, attempt)
            note = step_note or note
            results.append(step)
            # One retry: a single stall (a page fault storm, a timer) should not end the
            # ramp; two in a row is the server's limit.
            if step.sustained:
                break
        if not step.sustained:
            break
        best = rate
    return best, results, note


# --- Kamailio -------------------------------------------------------------------------


def kamailio_db(path: Path) -> Path:
    """The auth_db subscriber table (schema version 7), plaintext passwords."""
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
    db.executemany("INSERT INTO subscriber (username, password, domain) VALUES (?, ?, ?)", users())
    db.commit()
    db.close()
    return path


def kamailio_server(work: Path) -> ServerFactory:
    kamailio = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/sbin")
    if not kamailio:
        raise FileNotFoundError("kamailio not installed (Debian package kamailio)")
    db = kamailio_db(work / "kamailio-auth.db")
    template = KAMAILIO_CFG.read_text()

    class Server(AbstractContextManager[tuple[tuple[str, int], str | None]]):
        def __init__(self, step_dir: Path, sipp_port: int) -> None:
            self.step_dir = step_dir
            self.stack = ExitStack()

        def __enter__(self) -> tuple[tuple[str, int], str | None]:
            port = free_sip_port()
            cfg = template
            values = {"PORT": port, "CHILDREN": 4, "SECRET": "bench", "DB": db}
            for key, value in values.items():
                cfg = cfg.replace(f"@@{key}@@", str(value))
            cfg_path = self.step_dir / "kamailio.cfg"
            cfg_path.write_text(cfg)
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


# --- softswitch -----------------------------------------------------------------------


def softswitch_server(work: Path) -> ServerFactory:
    tenants: dict[str, list[tuple[str, str]]] = {d: [] for d in TENANTS}
    for user, password, domain in users():
        tenants[domain].append((user, password))

    class Server(AbstractContextManager[tuple[tuple[str, int], str | None]]):
        def __init__(self, step_dir: Path, sipp_port: int) -> None:
            self.step_dir = step_dir
            self.sipp_port = sipp_port
            self.stack = ExitStack()

        def __enter__(self) -> tuple[tuple[str, int], str | None]:
            config = write_config(
                self.step_dir / "softswitch.toml",
                tenants,
                log_level="warning",
                # SIPp's 10,000 users all come from 127.0.0.1; banning is not measured.
                ban_failures=1_000_000_000,
                # SIPp 3.6 answers MD5 only and aborts on any SHA-256 challenge; Kamailio
                # is measured with MD5 too.
                digest_algorithms=["MD5"],
            )
            daemon = SoftswitchDaemon(
                config, log_path=self.step_dir / "softswitch.log", ready_timeout=60, cpu=SERVER_CPU
            )
            self.stack.enter_context(daemon)
            return daemon.address, None

        def __exit__(self, *exc: object) -> None:
            self.stack.close()

    return Server


# --- entry point ------------------------------------------------------------------------


def run(quick: bool = False) -> list[dict[str, Any]]:
    steps = QUICK_STEPS if quick else FULL_STEPS
    step_seconds = 1.5 if quick else 3.0
    work = work_dir("register")
    if shutil.which("sipp") is None:
        return [figure(FIGURE, None, None, PEER_NAME, TARGET, "REGISTER/s", error="sipp missing")]

    outcome: dict[str, Any] = {}
    for name, factory in (("kamailio", kamailio_server), ("softswitch", softswitch_server)):
        started = time.monotonic()
        try:
            best, results, note = ramp(name, factory(work), work, steps, step_seconds)
            outcome[name] = {"best": best, "steps": [asdict(s) for s in results], "note": note}
        except Exception as e:  # the other server's figure is still worth having
            outcome[name] = {"best": None, "steps": [], "error": f"{type(e).__name__}: {e}"}
            print(f"  {name}: failed: {outcome[name]['error'][:2000]}", flush=True)
        print(f"  {name}: {time.monotonic() - started:.0f} s", flush=True)

    ours, peer = outcome["softswitch"], outcome["kamailio"]
    errors = [f"{n}: {o['error']}" for n, o in outcome.items() if o.get("error")]
    for n, o in outcome.items():
        if not o.get("error") and o["best"] is None:
            errors.append(f"{n}: not even {steps[0]}/s sustained")
    extra: dict[str, Any] = {"steps": {n: o["steps"] for n, o in outcome.items()}}
    if errors:
        extra["error"] = "; ".join(e.splitlines()[0] for e in errors)
    if ours.get("note"):
        extra["note"] = ours["note"]
    capped = [n for n, o in outcome.items() if o["best"] == steps[-1]]
    if capped:
        floor = f"{' and '.join(capped)} sustained the top step: a floor, not a limit"
        extra["note"] = f"{extra['note']}; {floor}" if extra.get("note") else floor
    return [figure(FIGURE, ours["best"], peer["best"], PEER_NAME, TARGET, "REGISTER/s", **extra)]
