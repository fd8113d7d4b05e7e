"""Writing softswitch configs and running the daemon as a real process."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .ports import free_sip_port
from .sipmsg import send_options

# Where write_config puts flat keyword options.
_SIP_KEYS = {
    "t1",
    "t2",
    "t4",
    "timer_c",
    "min_expires",
    "max_expires",
    "digest_algorithms",
    "md5_only_user_agents",
}
_SECURITY_KEYS = {"ban_failures", "ban_window", "ban_time"}

Extension = tuple[str, str] | tuple[str, str, str]


class DaemonError(RuntimeError):
    pass


# --- TOML writing -----------------------------------------------------------------


def toml_string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"not representable in a config: {v!r}")
        return repr(v)
    if isinstance(v, str | Path):
        return toml_string(str(v))
    if isinstance(v, Sequence):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else toml_string(k)


def _table_lines(values: Mapping[str, Any]) -> list[str]:
    return [f"{_key(k)} = {toml_value(v)}" for k, v in values.items() if v is not None]


def write_config(
    path: str | os.PathLike[str],
    tenants: Mapping[str, Sequence[Extension]],
    **options: Any,
) -> Path:
    """Write a daemon config; return its path.

    ``tenants`` maps a domain to its extensions, ``(user, password)`` or
    ``(user, password, display name)``. Options: ``listen`` (default: UDP and TCP on
    one free port), ``state_dir`` (default "var"), ``log_level``; ``t1``,
    ``min_expires``... go to ``[sip]``; ``ban_*`` to ``[security]``; ``tenant_names``
    maps a domain to its name; any other key whose value is a dict becomes its own
    table, and any other scalar a top-level key.
    """
    path = Path(path)
    options = dict(options)
    tenant_names: Mapping[str, str] = options.pop("tenant_names", None) or {}
    listen = options.pop("listen", None)
    if listen is None:
        port = free_sip_port()
        listen = [f"udp:127.0.0.1:{port}", f"tcp:127.0.0.1:{port}"]
    top: dict[str, Any] = {
        "listen": list(listen),
        "state_dir": str(options.pop("state_dir", "var")),
        "log_level": options.pop("log_level", "info"),
    }
    sip = {k: options.pop(k) for k in list(options) if k in _SIP_KEYS}
    security = {k: options.pop(k) for k in list(options) if k in _SECURITY_KEYS}
    tables: dict[str, dict[str, Any]] = {"sip": sip, "security": security}
    for k in list(options):
        if isinstance(options[k], Mapping):
            tables.setdefault(k, {}).update(options.pop(k))
    top.update(options)

    lines = _table_lines(top)
    for name, values in tables.items():
        if values:
            lines += ["", f"[{_key(name)}]", *_table_lines(values)]
    for domain, extensions in tenants.items():
        lines += [
            "",
            "[[tenants]]",
            f"domain = {toml_string(domain)}",
            f"name = {toml_string(tenant_names.get(domain, domain))}",
        ]
        for ext in extensions:
            user, password = ext[0], ext[1]
            lines += [
                "  [[tenants.extensions]]",
                f"  user = {toml_string(user)}",
                f"  password = {toml_string(password)}",
            ]
            if len(ext) > 2:
                lines.append(f"  name = {toml_string(ext[2])}")
    text = "\n".join(lines) + "\n"
    tomllib.loads(text)  # a broken file here would surface as a confusing daemon error
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def udp_listen_address(config: str | os.PathLike[str]) -> tuple[str, int]:
    """First UDP listen address of a config file (where readiness is probed)."""
    data = tomllib.loads(Path(config).read_text(encoding="utf-8"))
    for entry in data.get("listen", []):
        proto, _, hostport = entry.partition(":")
        if proto.lower() == "udp":
            host, _, port = hostport.rpartition(":")
            return host.strip("[]"), int(port)
    raise DaemonError(f"{config}: no udp listen address")


# --- the daemon process -----------------------------------------------------------


def softswitch_command(*args: str, python: str | None = None) -> list[str]:
    return [python or sys.executable, "-m", "softswitch", *args]


class SoftswitchDaemon:
    """The daemon as a child process; a context manager that always stops it.

    stdout/stderr go to ``log_path`` (appended across restarts). ``cpu`` pins the
    process with taskset, for benchmarks.
    """

    def __init__(
        self,
        config: str | os.PathLike[str],
        *,
        log_path: str | os.PathLike[str] | None = None,
        ready_timeout: float = 15.0,
        cpu: int | None = None,
        python: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.config = Path(config).resolve()
        self.log_path = Path(log_path) if log_path else self.config.with_suffix(".log")
        self.ready_timeout = ready_timeout
        self.cpu = cpu
        self.python = python
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
        self.address = udp_listen_address(self.config)
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None

    # context manager
    def __enter__(self) -> SoftswitchDaemon:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.running():
            raise DaemonError("already running")
        cmd = softswitch_command("run", "--config", str(self.config), python=self.python)
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu), *cmd]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.config.parent,
                env=self.env,
                start_new_session=True,
            )
        self.returncode = None
        try:
            self.wait_ready(self.ready_timeout)
        except BaseException:
            self.stop(timeout=3)
            raise

    def wait_ready(self, timeout: float) -> None:
        """Block until OPTIONS over UDP is answered with 200."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise DaemonError(
                    f"softswitch exited with {self.proc.returncode} before being ready\n"
                    + self.log_tail()
                )
            last = send_options(*self.address, timeout=0.3)
            if last and last.split()[1:2] == ["200"]:
                return
            time.sleep(0.05)
        raise DaemonError(
            f"softswitch not ready within {timeout:.0f} s on udp {self.address}"
            f" (last OPTIONS answer: {last!r})\n" + self.log_tail()
        )

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit status."""
        if self.proc is None:
            return self.returncode
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                proc.wait(5)
        # Whatever it spawned (media workers) must not outlive the test.
        _kill_group(proc)
        self.returncode = proc.returncode
        return self.returncode

    def restart(self) -> int | None:
        rc = self.stop()
        self.start()
        return rc

    def run_cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            softswitch_command(*args, python=self.python),
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.config.parent,
            env=self.env,
        )

    def registrations(self, timeout: float = 30.0) -> str:
        """stdout of ``softswitch registrations --config``; raises if it fails."""
        res = self.run_cli("registrations", "--config", str(self.config), timeout=timeout)
        if res.returncode != 0:
            raise DaemonError(
                f"softswitch registrations exited with {res.returncode}:\n{res.stderr}"
            )
        return res.stdout

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no daemon log)"
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
