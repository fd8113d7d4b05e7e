"""Authenticated REGISTER throughput: softswitch against Kamailio 5.6, same load.

SIPp (core 1) ramps through fixed call rates against the server (core 0); one call is
a challenged REGISTER plus the authenticated one, so calls/s = authenticated
REGISTER/s. The figure is the highest step rate the server sustained with fewer than
0.1% failed calls. The server is restarted before every step: an overloaded UDP server
collapses and can stay slow long after the overload.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench._common import (
    LOAD_CPU,
    RampRunner,
    ServerFactory,
    Step,
    figure,
    free_port,
    judge_step,
    kamailio_db,
    kamailio_server,
    ramp,
    ramp_figure,
    run_ramps,
    softswitch_server,
    work_dir,
)
from tests.support.sipp import register_rows, run_sipp, write_injection_csv

FIGURE = "authenticated REGISTER/s (10,000 users)"
PEER_NAME = "Kamailio 5.6"
TARGET = 0.5
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
    return judge_step(name, rate, calls, res, step_seconds, step_dir, STAT_PERIOD_MS), note


def kamailio_factory(work: Path) -> ServerFactory:
    return kamailio_server(KAMAILIO_CFG, kamailio_db(work / "kamailio-auth.db", users()))


def softswitch_factory(work: Path) -> ServerFactory:
    tenants: dict[str, list[tuple[str, str]]] = {d: [] for d in TENANTS}
    for user, password, domain in users():
        tenants[domain].append((user, password))
    return softswitch_server(
        tenants,
        log_level="warning",
        # SIPp's 10,000 users all come from 127.0.0.1; banning is not measured.
        ban_failures=1_000_000_000,
        # SIPp 3.6 answers MD5 only and aborts on any SHA-256 challenge; Kamailio is
        # measured with MD5 too.
        digest_algorithms=["MD5"],
    )


# --- entry point ------------------------------------------------------------------------


def run(quick: bool = False) -> list[dict[str, Any]]:
    steps = QUICK_STEPS if quick else FULL_STEPS
    step_seconds = 1.5 if quick else 3.0
    work = work_dir("register")
    if shutil.which("sipp") is None:
        return [figure(FIGURE, None, None, PEER_NAME, TARGET, "REGISTER/s", error="sipp missing")]
    inf = write_injection_csv(work / "users.csv", register_rows(users()))

    def ramp_of(name: str, factory: Callable[[Path], ServerFactory]) -> RampRunner:
        def run_ramp() -> tuple[int | None, list[Step], str | None]:
            server = factory(work)
            return ramp(
                steps,
                lambda rate, attempt: _step(name, server, work, inf, rate, step_seconds, attempt),
            )

        return run_ramp

    outcome = run_ramps(
        [
            ("kamailio", ramp_of("kamailio", kamailio_factory)),
            ("softswitch", ramp_of("softswitch", softswitch_factory)),
        ]
    )
    return [ramp_figure(FIGURE, outcome, steps, PEER_NAME, TARGET, "REGISTER/s")]
