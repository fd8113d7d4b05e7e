"""Call setup rate with media anchored: softswitch against Kamailio as a stateful proxy.

Both sides get the same load (core 1): a SIPp UAC places calls that are challenged with
407 and answered with MD5 digest, rung (180) and answered (200 with SDP) by a SIPp UAS
registered as the callee, held 1 s and hung up by the caller. The softswitch (core 0)
bridges two dialogs per call and allocates RTP/RTCP ports on both legs; Kamailio
(core 0) only proxies statefully, record-routing, with no media at all. The figure is
the highest call rate each sustained with fewer than 0.1% failed calls, the server
restarted before every step.

``python -m bench calls`` records the figure; ``python -m bench.bench_calls`` only
prints it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bench.__main__ import print_table
from bench._common import (
    LOAD_CPU,
    ManagedProcess,
    RampRunner,
    ServerFactory,
    Step,
    figure,
    free_port,
    judge_step,
    kamailio_db,
    kamailio_server,
    pinned,
    ramp,
    ramp_figure,
    run_ramps,
    softswitch_server,
    work_dir,
)
from tests.support.sipmsg import (
    build_request,
    digest_authorization,
    new_call_id,
    new_tag,
    parse_challenges,
    pick_challenge,
    send_request,
)
from tests.support.sipp import (
    SippResult,
    auth_field,
    read_final_stats,
    run_sipp,
    write_injection_csv,
)

FIGURE = "call setup rate, media anchored (calls held 1 s)"
PEER_NAME = "Kamailio 5.6 stateful proxy (no media)"
TARGET = 0.3
UNIT = "calls/s"
STAT_PERIOD_MS = 100
HOLD_SECONDS = 1.0

BENCH_DIR = Path(__file__).resolve().parent
SCENARIOS = BENCH_DIR / "scenarios"
UAC_SCENARIO = SCENARIOS / "uac_call_hold.xml"
UAS_SCENARIO = SCENARIOS / "uas_answer.xml"
PROXY_CFG = BENCH_DIR / "kamailio" / "proxy.cfg"

DOMAIN = "calls.bench.example"
CALLERS = 200
CALLEE = ("2000", "pw-callee-2000")

FULL_STEPS = (100, 200, 300, 400, 500, 700, 900, 1200, 1500, 2000, 2500, 3000, 3500)
QUICK_STEPS = (100, 400)
# Per server; a normal full ramp takes 50-110 s.
RAMP_BUDGET_SECONDS = 120.0

# Each call holds 2 legs x (RTP + RTCP) for the hold plus setup and teardown: 20,000
# ports cover 5,000 calls at once, more than the top step keeps up. The range sits
# above the 10000-32767 band the bench draws SIP ports from, so a port handed to SIPp
# before the server started cannot be taken by the media engine; a port some other
# program holds is skipped by the engine.
RTP_PORT_MIN = 40000
RTP_PORT_MAX = 59999


def callers() -> list[tuple[str, str]]:
    return [(str(1000 + i), f"pw-caller-{1000 + i}") for i in range(CALLERS)]


def subscribers() -> list[tuple[str, str, str]]:
    """(user, password, domain) of every caller and the callee."""
    return [(u, p, DOMAIN) for u, p in [*callers(), CALLEE]]


# --- the callee -------------------------------------------------------------------------


def _bound_socket(attempts: int = 20) -> socket.socket:
    """A UDP socket on a free port; other programs on the machine draw ports too, so a
    port free a moment ago may be taken by the time it is bound."""
    for _ in range(attempts):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", free_port(tcp=False)))
            return sock
        except OSError:
            sock.close()
    raise RuntimeError("no free UDP port for the callee")


def register_callee(server: tuple[str, int]) -> int:
    """Register the callee with a contact on a free port, answering a digest challenge
    if the server sends one; return the port, where the UAS is to listen."""
    user, password = CALLEE
    aor = f"sip:{user}@{DOMAIN}"
    call_id, tag = new_call_id(), new_tag()
    # Sent from the UAS's own port: a registrar may key the binding on the source.
    sock = _bound_socket()
    port = sock.getsockname()[1]
    try:
        auth: str | None = None
        for cseq in (1, 2):
            headers = [("Expires", "3600")]
            if auth:
                headers.append(("Authorization", auth))
            request = build_request(
                "REGISTER",
                f"sip:{DOMAIN}",
                local=("127.0.0.1", port),
                from_uri=aor,
                to_uri=aor,
                call_id=call_id,
                cseq=cseq,
                from_tag=tag,
                contact=f"<sip:{user}@127.0.0.1:{port}>",
                headers=headers,
            )
            answer = send_request(request, *server, sock=sock, timeout=5)
            if answer is None:
                raise RuntimeError(f"REGISTER of the callee: no answer from {server}")
            if answer.status == 200:
                return port
            if answer.status != 401 or auth:
                raise RuntimeError(f"REGISTER of the callee: {answer.status_line}")
            challenge = pick_challenge(parse_challenges(answer), "MD5")
            auth = digest_authorization(
                challenge, method="REGISTER", uri=f"sip:{DOMAIN}", username=user, password=password
            )
        raise AssertionError("unreachable: the second answer returns or raises")
    finally:
        sock.close()


def _udp_port_bound(port: int) -> bool:
    # Read from the kernel's table rather than probed with a bind, which would hold the
    # port for a moment and could make the UAS's own bind fail.
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return True  # cannot tell: let the UAC find out
    return any(int(line.split()[1].rpartition(":")[2], 16) == port for line in lines)


def _wait_bound(port: int, proc: ManagedProcess, timeout: float) -> None:
    """Until the UAS listens on UDP ``port``, or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc is None or proc.proc.poll() is not None:
            raise RuntimeError("the SIPp UAS exited at start:\n" + proc.log_tail())
        if _udp_port_bound(port):
            return
        time.sleep(0.02)
    raise RuntimeError(f"the SIPp UAS did not bind port {port} within {timeout:.0f} s")


def uas_command(step_dir: Path, port: int, calls: int) -> list[str]:
    sipp = shutil.which("sipp") or "sipp"
    cmd = [
        sipp,
        "-sf", str(UAS_SCENARIO),
        "-t", "u1",
        "-i", "127.0.0.1",
        "-p", str(port),
        "-mp", str(free_port(span=4)),
        # It exits by itself once every call the UAC places has ended.
        "-m", str(calls),
        "-nostdin",
        "-buff_size", str(4 << 20),
        "-max_recv_loops", "10000",
        "-trace_stat", "-stf", str(step_dir / "uas.stat.csv"), "-fd", "1",
        "-trace_err", "-error_file", str(step_dir / "uas.errors.log"),
        "-trace_screen", "-screen_file", str(step_dir / "uas.screen.log"),
    ]  # fmt: skip
    return pinned(cmd, LOAD_CPU)


# --- one step ---------------------------------------------------------------------------


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
    uac_port = free_port(tcp=False)
    res: SippResult
    with start_server(step_dir, uac_port) as (target, note):
        uas_port = register_callee(target)
        with ManagedProcess(uas_command(step_dir, uas_port, calls), step_dir / "uas.log") as uas:
            _wait_bound(uas_port, uas, 10)
            res = run_sipp(
                UAC_SCENARIO,
                target,
                workdir=step_dir,
                calls=calls,
                rate=rate,
                # Every call is outstanding for the hold; on top of that, room for half
                # a second of setup latency before SIPp stops creating calls.
                limit=max(200, int(rate * (HOLD_SECONDS + 0.5))),
                inf=inf,
                local_port=uac_port,
                timeout=step_seconds * 2 + HOLD_SECONDS + 6,
                cpu=LOAD_CPU,
                name="uac",
                extra_args=[
                    "-mp", str(free_port(span=4)),
                    "-buff_size", str(4 << 20),
                    "-max_recv_loops", "10000",
                    "-fd", f"{STAT_PERIOD_MS}ms",
                ],
            )  # fmt: skip
            # The UAS ends its last calls a moment after the UAC (timewait); a UAS still
            # waiting for calls that failed upstream is stopped here.
            if uas.proc is not None:
                try:
                    uas.proc.wait(3)
                except subprocess.TimeoutExpired:
                    pass
            uas.stop(timeout=2)
    step = judge_step(name, rate, calls, res, step_seconds, step_dir, STAT_PERIOD_MS)
    if not step.sustained:
        uas_stats = read_final_stats(step_dir / "uas.stat.csv")
        step.detail += (
            f"; uas: {uas_stats.get('SuccessfulCall(C)', '?')} ok,"
            f" {uas_stats.get('FailedCall(C)', '?')} failed"
        )
    return step, note


# --- the servers ------------------------------------------------------------------------


def kamailio_factory(work: Path) -> ServerFactory:
    return kamailio_server(PROXY_CFG, kamailio_db(work / "kamailio-auth.db", subscribers()))


def softswitch_factory(work: Path) -> ServerFactory:
    return softswitch_server(
        {DOMAIN: [*callers(), CALLEE]},
        log_level="warning",
        # Every caller comes from the one SIPp address; banning is not measured.
        ban_failures=1_000_000_000,
        # SIPp 3.6 answers MD5 only and aborts on any SHA-256 challenge; Kamailio
        # checks MD5 too.
        digest_algorithms=["MD5"],
        calls={"rtp_port_min": RTP_PORT_MIN, "rtp_port_max": RTP_PORT_MAX},
    )


# --- entry point ------------------------------------------------------------------------


def run(quick: bool = False, only: tuple[str, ...] = ("kamailio", "softswitch")) -> list[dict]:
    steps = QUICK_STEPS if quick else FULL_STEPS
    step_seconds = 1.5 if quick else 3.0
    work = work_dir("calls")
    if shutil.which("sipp") is None:
        return [figure(FIGURE, None, None, PEER_NAME, TARGET, UNIT, error="sipp missing")]
    rows = [(user, CALLEE[0], DOMAIN, auth_field(user, pw)) for user, pw in callers()]
    inf = write_injection_csv(work / "callers.csv", rows)

    def ramp_of(name: str, factory: Callable[[Path], ServerFactory]) -> RampRunner:
        def run_ramp() -> tuple[int | None, list[Step], str | None]:
            server = factory(work)
            deadline = time.monotonic() + RAMP_BUDGET_SECONDS

            def run_step(rate: int, attempt: int) -> tuple[Step, str | None]:
                # Collapsing steps run into SIPp's timeout; the whole bench must still
                # end within 5 minutes.
                if time.monotonic() > deadline:
                    return Step(rate, 0, 0, 0, 0.0, False, "time budget spent"), None
                return _step(name, server, work, inf, rate, step_seconds, attempt)

            return ramp(steps, run_step)

        return run_ramp

    factories = {"kamailio": kamailio_factory, "softswitch": softswitch_factory}
    # Read before the ramps: afterwards it counts the bench's own processes.
    load = os.getloadavg()[0]
    outcome = run_ramps([(n, ramp_of(n, factories[n])) for n in only])
    for n in factories:
        outcome.setdefault(n, {"best": None, "steps": [], "error": "not run"})
    # Other load on the machine moves both figures, the peer's more: at its higher rates
    # the load generator needs more of core 1.
    note = None
    if load > 0.5:
        note = f"machine busy: 1-min load average {load:.2f} when the bench started"
    return [ramp_figure(FIGURE, outcome, steps, PEER_NAME, TARGET, UNIT, note=note)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter steps")
    parser.add_argument(
        "--only", choices=("kamailio", "softswitch"), help="ramp one server (no ratio)"
    )
    args = parser.parse_args()
    only = (args.only,) if args.only else ("kamailio", "softswitch")
    figures = run(quick=args.quick, only=only)
    print()
    print_table(figures)
