"""Shared pieces of the benchmarks: ports, CPU pinning, processes, figures."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.ports import free_port, free_sip_port
from tests.support.sipmsg import send_options

__all__ = [
    "LOAD_CPU",
    "SERVER_CPU",
    "ManagedProcess",
    "figure",
    "free_port",
    "free_sip_port",
    "pinned",
    "pinned_self",
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
