"""Media bench: relayed RTP streams per core, ours against a C relay.

Figures:

* "relayed streams on one core, < 0.1% loss": the relay is pinned to core 0, the load
  generator (``bench/c/relay_loadgen.c``, a separate process pinned to core 1) sends
  20 ms-paced 172-byte RTP packets (G.711, 20 ms) on N streams (N/2 calls, both
  directions) and measures what comes back. A packet more than 100 ms late counts as
  lost (a phone would have concealed it by then; without this a saturated relay with
  deep socket buffers passes a short run while its queue grows). N ramps up (doubling,
  then bisection) until more than 0.1% of the packets are lost; the figure is the
  largest N that passed. The
  peer is ``bench/c/echo_peer.c`` (a C epoll + recvmmsg/sendmmsg relay with the same
  socket layout, latching and header rewrite), measured the same way. Target from the
  issue: 4,000 streams (200,000 packets/s), kept as ``issue_target``; ``target`` is the
  ratio to the C peer we aim for (0.5).
* "concurrent relayed G.711 calls on one core, < 0.1% loss and p99 added jitter < 2 ms":
  the same runs, also requiring the 99th percentile of the added delay variation (each
  packet's delay through the relay minus its stream's smallest) below 2 ms. Target from
  the issue: 1,000 calls.

Ours is the real thing: ``LocalMediaController`` on uvloop in a process of its own,
sessions set up through ``allocate``/``connect`` exactly as the B2BUA will. Each step
starts a fresh relay (a relay that fell behind keeps a backlog), warms up for 1 s and
measures for 3 s (1.5 s with ``--quick``); a step that fails is retried once.

``python -m bench.bench_media options`` measures the socket I/O options recorded in
``softswitch/media/batchio.py``: relayed packets/s at saturation for asyncio and uvloop
datagram endpoints, a bare epoll relay with ``recvfrom_into``/``sendto`` or with
``recvmmsg``/``sendmmsg``, the engine itself, and the C peer.

Run alone with ``python -m bench.bench_media [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "codecs"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from bench._common import (  # noqa: E402
    LOAD_CPU,
    SERVER_CPU,
    ManagedProcess,
    figure,
    free_port,
    pinned,
    work_dir,
)

C_DIR = Path(__file__).resolve().parent / "c"
HOST = "127.0.0.1"
LOSS_LIMIT = 0.001
JITTER_LIMIT_US = 2000.0
MAX_STREAMS = 8000  # two sockets per stream on each side stay under the fd limit
PORT_BASE = 20000
INTERVAL_US = 20000


# --- building and running the C programs ---------------------------------------------


def _build(work: Path) -> dict[str, Path] | None:
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    out = {}
    for name, source in (("echo_peer", "echo_peer.c"), ("loadgen", "relay_loadgen.c")):
        exe = work / name
        proc = subprocess.run(
            [gcc, "-O3", "-o", str(exe), str(C_DIR / source)], capture_output=True, text=True
        )
        if proc.returncode != 0:
            print(f"cannot build {source}:\n{proc.stderr}", flush=True)
            return None
        out[name] = exe
    return out


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """User and system CPU time of a process (and its threads) so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def _phone_port() -> int:
    """A free UDP port below the relays' range, for one side of the load generator."""
    for _ in range(100):
        port = free_port(tcp=False)
        if port < PORT_BASE:
            return port
    raise RuntimeError("no free port below the relay range")


def _wait_ready(marker: Path, proc: ManagedProcess, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if marker.exists():
            return True
        if proc.proc is None or proc.proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def _loadgen(
    exe: Path,
    ports_file: Path,
    streams: int,
    seconds: float,
    warmup: float,
    phone_ports: tuple[int, int],
    interval_us: int = INTERVAL_US,
) -> dict[str, Any]:
    cmd = [str(exe), str(ports_file), str(streams), str(seconds), str(warmup)]
    cmd += [str(interval_us), str(phone_ports[0]), str(phone_ports[1]), HOST]
    proc = subprocess.run(
        pinned(cmd, LOAD_CPU),
        capture_output=True,
        text=True,
        timeout=seconds + warmup + 30,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _relay_cmd(kind: str, exe: dict[str, Path], calls: int, work: Path, phones: tuple[int, int]):
    ports_file = work / f"ports-{kind}-{calls}.txt"
    marker = work / f"ready-{kind}-{calls}"
    for p in (ports_file, marker):
        p.unlink(missing_ok=True)
    if kind == "c":
        cmd = [str(exe["echo_peer"]), HOST, str(PORT_BASE), str(calls), str(ports_file)]
        cmd += [str(phones[0]), str(phones[1])]
        # The C peer writes the ports file once every socket is bound.
        marker = ports_file
    else:
        cmd = [sys.executable, "-m", "bench.bench_media", "serve", "--mode", kind]
        cmd += ["--calls", str(calls), "--ports-out", str(ports_file), "--ready", str(marker)]
        cmd += ["--phones", str(phones[0]), str(phones[1])]
    return pinned(cmd, SERVER_CPU), ports_file, marker


def measure(
    kind: str,
    exe: dict[str, Path],
    streams: int,
    work: Path,
    seconds: float,
    warmup: float,
    interval_us: int = INTERVAL_US,
) -> dict[str, Any]:
    """One step: a fresh relay of ``kind`` for streams/2 calls, one load run."""
    calls = streams // 2
    phones = (_phone_port(), _phone_port())
    cmd, ports_file, marker = _relay_cmd(kind, exe, calls, work, phones)
    log = work / f"relay-{kind}-{streams}.log"
    with ManagedProcess(cmd, log, cwd=ROOT) as relay:
        if not _wait_ready(marker, relay, 60.0):
            raise RuntimeError(f"{kind} relay did not start: {relay.log_tail()}")
        time.sleep(0.2)  # the C peer writes its file just before its loop starts
        assert relay.proc is not None
        cpu_before = _cpu_seconds(relay.proc.pid)
        result = _loadgen(exe["loadgen"], ports_file, streams, seconds, warmup, phones, interval_us)
        cpu_after = _cpu_seconds(relay.proc.pid)
    offered = streams * (seconds + warmup) * 1e6 / interval_us
    user, system = (cpu_after[i] - cpu_before[i] for i in range(2))
    # CPU time of the relay per packet it relayed: steadier than a saturation point on a
    # shared machine, and 1e6 / it is the packets/s one core could relay.
    result["cpu_us_per_packet"] = (user + system) * 1e6 / offered
    result["user_us_per_packet"] = user * 1e6 / offered
    result["system_us_per_packet"] = system * 1e6 / offered
    result["kind"] = kind
    result["ok_loss"] = result["loss"] <= LOSS_LIMIT
    result["ok_jitter"] = result["ok_loss"] and result["jitter_p99_us"] < JITTER_LIMIT_US
    return result


def ramp(
    kind: str, exe: dict[str, Path], work: Path, quick: bool, log: list[dict[str, Any]]
) -> tuple[int, int]:
    """Largest streams passing the loss limit, and largest also passing the jitter limit."""
    seconds, warmup = (1.5, 0.5) if quick else (3.0, 1.0)
    resolution = 1000 if quick else 250
    budget = 40.0 if quick else 105.0  # seconds per relay, so the bench stays bounded
    started = time.monotonic()
    results: dict[int, dict[str, Any]] = {}

    def out_of_time() -> bool:
        return time.monotonic() - started > budget

    def step(n: int) -> dict[str, Any]:
        if n in results:
            return results[n]
        # A step that fails is run once more on a fresh relay and the better run kept:
        # on a shared machine one unlucky burst of someone else's work should not set
        # the figure.
        runs = []
        for _ in range(2):
            r = measure(kind, exe, n, work, seconds, warmup)
            print(
                f"  {kind:>6} {n:5d} streams: loss {r['loss'] * 100:.3f}%  "
                f"jitter p99 {r['jitter_p99_us'] / 1000:.2f} ms  "
                f"delay p50 {r['delay_p50_us'] / 1000:.2f} ms  "
                f"cpu {r['cpu_us_per_packet']:.1f} us/packet",
                flush=True,
            )
            runs.append(r)
            log.append(r)
            if r["ok_jitter"]:
                break
        best = max(runs, key=lambda r: (r["ok_loss"], r["ok_jitter"], -r["jitter_p99_us"]))
        results[n] = best
        return best

    def bisect(ok_key: str, lo: int, hi: int) -> int:
        while hi - lo > resolution and not out_of_time():
            mid = (lo + hi) // 4 * 2
            if step(mid)[ok_key]:
                lo = mid
            else:
                hi = mid
        return lo

    # Double from 1,000 streams until a step loses packets, then bisect.
    lo, hi, n = 0, None, 1000
    while True:
        if step(n)["ok_loss"]:
            lo = n
            if n >= MAX_STREAMS or out_of_time():
                break
            n = min(2 * n, MAX_STREAMS)
        else:
            hi = n
            break
    best_loss = bisect("ok_loss", lo, hi) if hi is not None else lo
    # The jitter limit is stricter: bisect between the largest step that met it and the
    # smallest larger one that did not.
    best_jitter = max((k for k, r in results.items() if r["ok_jitter"]), default=0)
    above = [k for k, r in results.items() if not r["ok_jitter"] and k > best_jitter]
    if above and not quick:
        best_jitter = bisect("ok_jitter", best_jitter, min(above))
    return best_loss, best_jitter


def _cpu_note(log: list[dict[str, Any]], kind: str, streams: int) -> str:
    steps = [r for r in log if r["kind"] == kind and r["streams"] <= max(streams, 1000)]
    if not steps:
        return ""
    r = max(steps, key=lambda r: r["streams"])
    return (
        f"{kind} at {r['streams']} streams: {r['cpu_us_per_packet']:.1f} us CPU/packet "
        f"(user {r['user_us_per_packet']:.1f}, kernel {r['system_us_per_packet']:.1f})"
    )


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Both figures for ours and the C peer; every process is stopped on return."""
    name_streams = "relayed streams on one core, < 0.1% loss"
    name_calls = "concurrent relayed G.711 calls on one core, < 0.1% loss, p99 added jitter < 2 ms"
    work = work_dir("media")
    exe = _build(work)
    if exe is None:
        err = "gcc unavailable: cannot build the load generator and the C peer"
        return [figure(name_streams, None, None, "", 0.5, "streams", error=err)]
    log: list[dict[str, Any]] = []
    print("media bench: ramping streams (ours = engine on uvloop, peer = C relay)", flush=True)
    ours_streams, ours_jitter = ramp("engine", exe, work, quick, log)
    peer_streams, peer_jitter = ramp("c", exe, work, quick, log)
    (work / "steps.json").write_text(json.dumps(log, indent=1))
    peer_name = "C epoll+recvmmsg/sendmmsg relay (bench/c/echo_peer.c)"
    note = "20 ms paced 172-byte RTP, streams = 2 x calls; " + "; ".join(
        n for n in (_cpu_note(log, "engine", ours_streams), _cpu_note(log, "c", peer_streams)) if n
    )
    if MAX_STREAMS in (ours_streams, peer_streams):
        note += f"; ramp capped at {MAX_STREAMS} streams (file descriptors)"
    keys = ("kind", "streams", "loss", "jitter_p99_us", "delay_p50_us", "cpu_us_per_packet")
    return [
        figure(
            name_streams,
            float(ours_streams),
            float(peer_streams),
            peer_name,
            0.5,
            "streams",
            issue_target=4000,
            note=note,
            steps=[{k: r[k] for k in keys} for r in log],
        ),
        figure(
            name_calls,
            float(ours_jitter // 2),
            float(peer_jitter // 2),
            peer_name,
            0.5,
            "calls",
            issue_target=1000,
        ),
    ]


# --- the relay processes under test ------------------------------------------------------


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
            return
        except (ValueError, OSError):
            continue


def serve(args: argparse.Namespace) -> None:
    """Run one relay until SIGTERM: ``engine`` (the controller) or a bare I/O variant."""
    _raise_fd_limit()
    mode = args.mode
    phones = [(HOST, args.phones[0]), (HOST, args.phones[1])]
    if mode.startswith("engine"):
        _serve_engine(args, phones)
    else:
        _serve_bare(args, phones)


def _finish_setup(args: argparse.Namespace, pairs: list[tuple[int, int]]) -> None:
    Path(args.ports_out).write_text("".join(f"{a} {b}\n" for a, b in pairs))
    Path(args.ready).write_text("ready\n")


def _serve_engine(args: argparse.Namespace, phones: list[tuple[str, int]]) -> None:
    import asyncio

    from softswitch.media.controller import Codec, LegMedia
    from softswitch.media.local import LocalMediaController

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        ctl = LocalMediaController(HOST, (PORT_BASE, 65000), media_timeout=3600.0)
        await ctl.start()
        pcmu = Codec("PCMU", 0)
        pairs = []
        for i in range(args.calls):
            sid = f"call{i}"
            a, b = ctl.allocate(sid, "a"), ctl.allocate(sid, "b")
            ctl.connect(
                sid,
                {
                    "a": LegMedia(phones[0][0], phones[0][1], pcmu),
                    "b": LegMedia(phones[1][0], phones[1][1], pcmu),
                },
            )
            pairs.append((a.port, b.port))
        _finish_setup(args, pairs)
        await stop.wait()
        print(json.dumps({"stats": str(ctl.stats)}), flush=True)
        await ctl.stop()

    if args.mode == "engine-asyncio":
        asyncio.run(main())
    else:
        import uvloop

        uvloop.run(main())


def _serve_bare(args: argparse.Namespace, phones: list[tuple[str, int]]) -> None:
    """Relays with nothing but the I/O pattern and a fixed header rewrite: what each way
    of reading and writing sockets costs, without the engine's logic."""
    import asyncio
    import select
    import socket
    import struct

    rewrite = struct.Struct("!HII").pack_into
    unpack = struct.Struct("!HII").unpack_from
    socks: list[socket.socket] = []
    port = PORT_BASE
    pairs = []
    while len(socks) < 2 * args.calls:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((HOST, port))
        except OSError:
            s.close()
            port += 2
            continue
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256 * 1024)
        socks.append(s)
        port += 2
    for i in range(args.calls):
        pairs.append((socks[2 * i].getsockname()[1], socks[2 * i + 1].getsockname()[1]))
    partner = {}
    for i, s in enumerate(socks):
        partner[s.fileno()] = (socks[i ^ 1], phones[(i ^ 1) & 1], 0x1000 + i)

    if args.mode in ("epoll-plain", "epoll-mmsg"):
        ep = select.epoll()
        for s in socks:
            ep.register(s.fileno(), select.EPOLLIN)
        running = True

        def on_term(*_: object) -> None:
            nonlocal running
            running = False

        signal.signal(signal.SIGTERM, on_term)
        _finish_setup(args, pairs)
        if args.mode == "epoll-plain":
            buf = bytearray(2048)
            view = memoryview(buf)
            by_fd = {s.fileno(): s for s in socks}
            while running:
                for fd, _ in ep.poll(0.2, 1024):
                    try:
                        n, _addr = by_fd[fd].recvfrom_into(view)
                    except OSError:
                        continue
                    out, dest, ssrc = partner[fd]
                    seq, ts, _ = unpack(buf, 2)
                    rewrite(buf, 2, (seq + 7) & 0xFFFF, (ts + 160) & 0xFFFFFFFF, ssrc)
                    out.sendto(view[:n], dest)
        else:
            from softswitch.media.batchio import MmsgIO

            io = MmsgIO(32, 2048)
            out_io = MmsgIO(32, 2048)
            while running:
                for fd, _ in ep.poll(0.2, 1024):
                    n = io.recv(fd)
                    if not n:
                        continue
                    out, dest, ssrc = partner[fd]
                    for i in range(n):
                        data = io.data(i)
                        seq, ts, _ = unpack(data, 2)
                        rewrite(
                            io.buffer,
                            i * io.size + 2,
                            (seq + 7) & 0xFFFF,
                            (ts + 160) & 0xFFFFFFFF,
                            ssrc,
                        )
                        out_io.queue(data, dest)
                    out_io.flush(out.fileno())
        return

    class Relay(asyncio.DatagramProtocol):
        def __init__(self, index: int) -> None:
            self.index = index
            self.transport: asyncio.DatagramTransport | None = None
            self.peer: Relay | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def datagram_received(self, data: bytes, addr: tuple) -> None:
            buf = bytearray(data)
            seq, ts, _ = unpack(buf, 2)
            peer = self.peer
            assert peer is not None and peer.transport is not None
            rewrite(buf, 2, (seq + 7) & 0xFFFF, (ts + 160) & 0xFFFFFFFF, 0x1000 + peer.index)
            peer.transport.sendto(buf, phones[peer.index & 1])

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        relays = []
        for i, s in enumerate(socks):
            _, proto = await loop.create_datagram_endpoint(lambda i=i: Relay(i), sock=s)
            relays.append(proto)
        for i, r in enumerate(relays):
            r.peer = relays[i ^ 1]
        _finish_setup(args, pairs)
        await stop.wait()

    if args.mode == "uvloop-endpoints":
        import uvloop

        uvloop.run(main())
    else:
        asyncio.run(main())


OPTIONS = (
    "asyncio-endpoints",
    "uvloop-endpoints",
    "epoll-plain",
    "epoll-mmsg",
    "engine-asyncio",
    "engine",
    "c",
)


def options(quick: bool = False) -> list[dict[str, Any]]:
    """For each way of doing socket I/O: CPU time per relayed packet at 60,000 packets/s
    (below everyone's saturation), and relayed packets/s when offered 250,000/s."""
    work = work_dir("media-options")
    exe = _build(work)
    if exe is None:
        raise RuntimeError("gcc unavailable")
    seconds, warmup = (1.5, 0.5) if quick else (3.0, 1.0)
    out = []
    for kind in OPTIONS:
        light = measure(kind, exe, 1200, work, seconds, warmup)
        heavy = measure(kind, exe, 2000, work, seconds, warmup, 8000)
        cpu = light["cpu_us_per_packet"]
        rate = heavy["arrived"] / seconds
        print(
            f"  {kind:>18}: {cpu:5.2f} us CPU/packet (-> {1e6 / cpu:9,.0f}/s), "
            f"loss at 60k/s {light['loss'] * 100:.2f}%; "
            f"{rate:9,.0f} relayed/s when offered {heavy['sent'] / seconds:,.0f}/s",
            flush=True,
        )
        out.append({"mode": kind, "cpu_us_per_packet": cpu, "saturated_per_s": rate})
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="media bench")
    sub = parser.add_subparsers(dest="command")
    parser.add_argument("--quick", action="store_true")
    srv = sub.add_parser("serve", help="run one relay under test (used by the bench)")
    srv.add_argument("--mode", default="engine")
    srv.add_argument("--calls", type=int, required=True)
    srv.add_argument("--ports-out", required=True)
    srv.add_argument("--ready", required=True)
    srv.add_argument("--phones", type=int, nargs=2, required=True)
    opt = sub.add_parser("options", help="measure the socket I/O options")
    opt.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.command == "serve":
        serve(args)
    elif args.command == "options":
        options(args.quick)
    else:
        for f in run(quick=args.quick):
            print(f)
    os._exit(0)
