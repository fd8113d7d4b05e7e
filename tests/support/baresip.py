"""A real SIP phone for tests: baresip driven through its ctrl_tcp interface."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .audio import write_silence_wav
from .ports import free_port

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BaresipError(RuntimeError):
    pass


class CtrlClient:
    """ctrl_tcp: JSON objects framed as netstrings (``<len>:<json>,``), both ways.

    A reader thread keeps every event in ``events`` (history is never dropped, so an
    event that fired before a test started waiting can still be found) and hands
    command responses to the caller waiting for that token.
    """

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.create_connection((host, port), timeout=1.0)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.settimeout(None)
        self.events: list[dict[str, Any]] = []
        self._responses: dict[str, dict[str, Any]] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._token = 0
        self._thread = threading.Thread(target=self._read, name="baresip-ctrl", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    length, colon, rest = buf.partition(b":")
                    if not colon or not length.isdigit():
                        break
                    n = int(length)
                    if len(rest) < n + 1:
                        break
                    payload, buf = rest[:n], rest[n + 1 :]
                    self._dispatch(json.loads(payload))
        except (OSError, ValueError):
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        with self._cond:
            if msg.get("event"):
                msg["received_at"] = time.monotonic()
                self.events.append(msg)
            elif msg.get("response"):
                self._responses[str(msg.get("token", ""))] = msg
            self._cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        with self._cond:
            self._token += 1
            token = str(self._token)
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(b"%d:%s," % (len(body), body))
        deadline = time.monotonic() + timeout
        with self._cond:
            while token not in self._responses:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise BaresipError(f"no response to {command!r} within {timeout} s")
                self._cond.wait(left)
            return self._responses.pop(token)

    def wait_event(
        self, types: str | Sequence[str], timeout: float, start: int = 0
    ) -> tuple[int, dict[str, Any]] | None:
        """First event of one of ``types`` at index >= ``start``: (index, event)."""
        wanted = {types} if isinstance(types, str) else set(types)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.events)):
                    if self.events[i].get("type") in wanted:
                        return i, self.events[i]
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._thread.join(2)


class BaresipPhone:
    """One baresip process with one account, listening only on 127.0.0.1.

    ``sip_port`` and ``sip_port + 1`` (baresip's TLS listener) must be free; pass
    ``None`` to pick them. ``audio_file`` is what the phone sends in calls (baresip
    hangs up when it ends, so make it longer than the call); ``None`` sends silence.
    ``record=True`` writes what it receives to ``workdir/recordings/dump-*-dec.wav``.
    ``registrar_host=None`` makes a phone that does not register.
    """

    def __init__(
        self,
        workdir: str | os.PathLike[str],
        sip_port: int | None,
        account_aor: str,
        auth_user: str,
        password: str,
        registrar_host: str | None,
        registrar_port: int | None,
        codecs: Sequence[str] = ("PCMU", "PCMA"),
        audio_file: str | os.PathLike[str] | None = None,
        *,
        regint: int = 600,
        record: bool = False,
        sip_trace: bool = True,
        answermode: str = "auto",
        display_name: str | None = None,
        ctrl_port: int | None = None,
        transport: str = "udp",
        extra_account_params: Mapping[str, str] | None = None,
        extra_config: Mapping[str, str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.sip_port = sip_port if sip_port is not None else free_port(span=2)
        self.ctrl_port = ctrl_port if ctrl_port is not None else free_port(udp=False)
        self.aor = account_aor
        self.record = record
        self.sip_trace = sip_trace
        self.config_dir = self.workdir / "baresip"
        self.recordings = self.workdir / "recordings"
        self.log_path = self.workdir / "baresip.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ctrl: CtrlClient | None = None
        self._event_cursor = 0

        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.recordings.mkdir(exist_ok=True)
        if audio_file is None:
            audio_file = write_silence_wav(self.workdir / "silence.wav", seconds=120)
        self.audio_file = Path(audio_file).resolve()

        device = f"phone{self.sip_port}"
        config = {
            "poll_method": "epoll",
            "sip_listen": f"127.0.0.1:{self.sip_port}",
            "net_interface": "127.0.0.1",
            # Keeps any stray DNS lookup on loopback.
            "dns_server": "127.0.0.1:53",
            "call_local_timeout": "120",
            "call_max_calls": "4",
            "audio_player": f"aubridge,{device}",
            "audio_source": f"aufile,{self.audio_file}",
            "audio_alert": f"aubridge,{device}-alert",
            "audio_level": "no",
            "ausrc_format": "s16",
            "auplay_format": "s16",
            "auenc_format": "s16",
            "audec_format": "s16",
            "audio_buffer": "20-160",
            "rtp_tos": "0",
            "rtcp_mux": "no",
            "jitter_buffer_delay": "5-10",
            "rtp_stats": "no",
            "rtp_timeout": "0",
            "module_path": "/usr/lib/baresip/modules",
            "snd_path": str(self.recordings.resolve()),
            "ctrl_tcp_listen": f"127.0.0.1:{self.ctrl_port}",
        }
        config.update(extra_config or {})
        modules = ["g711.so", "aufile.so", "aubridge.so"]
        if record:
            modules.append("sndfile.so")
        lines = [f"{k}\t\t{v}" for k, v in config.items()]
        lines += [f"module\t\t{m}" for m in modules]
        lines += ["module_tmp\t\taccount.so", "module_app\t\tmenu.so", "module_app\t\tctrl_tcp.so"]
        (self.config_dir / "config").write_text("\n".join(lines) + "\n")

        params = {
            "auth_user": auth_user,
            "auth_pass": password,
            "outbound": f'"sip:{registrar_host}:{registrar_port};transport={transport}"',
            "regint": str(regint),
            "audio_codecs": ",".join(codecs),
            "answermode": answermode,
            "ptime": "20",
            "mwi": "no",
        }
        if registrar_host is None:
            # A phone that is only dialled directly, by IP.
            del params["outbound"]
            params["regint"] = "0"
        params.update(extra_account_params or {})
        if any(c in password for c in ';"'):
            raise ValueError("baresip account lines cannot carry ';' or '\"' in a password")
        name = f'"{display_name}" ' if display_name else ""
        account = f"{name}<{account_aor}>;" + ";".join(f"{k}={v}" for k, v in params.items())
        (self.config_dir / "accounts").write_text(account + "\n")
        # Empty contacts keep baresip from writing its example entries.
        (self.config_dir / "contacts").write_text("")

    # lifecycle

    def start(self, timeout: float = 10.0) -> BaresipPhone:
        exe = shutil.which("baresip")
        if not exe:
            raise FileNotFoundError("baresip not installed (Debian package baresip-core)")
        cmd = [exe, "-f", str(self.config_dir)]
        if self.sip_trace:
            cmd.append("-s")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        try:
            self.ctrl = CtrlClient("127.0.0.1", self.ctrl_port, timeout=timeout)
        except OSError as e:
            self.stop()
            raise BaresipError(f"ctrl_tcp did not come up: {e}\n{self.log_tail()}") from e
        return self

    def __enter__(self) -> BaresipPhone:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 5.0) -> None:
        """Quit (baresip un-registers on the way out); kill if it lingers."""
        if self.ctrl is not None:
            try:
                self.ctrl.command("quit", timeout=1.0)
            except (BaresipError, OSError):
                pass
            self.ctrl.close()
            self.ctrl = None
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(2)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # control

    def _require_ctrl(self) -> CtrlClient:
        if self.ctrl is None:
            raise BaresipError("phone not started")
        return self.ctrl

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict[str, Any]:
        return self._require_ctrl().command(command, params, timeout)

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self._require_ctrl().events)

    def wait_event(self, types: str | Sequence[str], timeout: float = 10.0) -> dict[str, Any]:
        """Next event of one of ``types`` after the last one returned; raises on timeout.

        Events are consumed in order, so waiting twice for CALL_ESTABLISHED needs two
        calls to happen.
        """
        found = self._require_ctrl().wait_event(types, timeout, start=self._event_cursor)
        if found is None:
            raise BaresipError(
                f"no {types} event within {timeout} s; events so far: "
                f"{[e.get('type') for e in self.events]}\n{self.log_tail()}"
            )
        index, event = found
        self._event_cursor = index + 1
        return event

    def registered(self, timeout: float = 10.0) -> bool:
        """True once the account is registered (REGISTER_OK, or ``reginfo`` says OK).

        baresip 1.0 retries failing registrations silently (no REGISTER_FAIL), so a
        False here means: look at the SIP trace in ``log_path``.
        """
        ctrl = self._require_ctrl()
        deadline = time.monotonic() + timeout
        while True:
            if ctrl.wait_event("REGISTER_OK", 0.0, start=0) is not None:
                return True
            if re.search(r"\bOK\b", _ANSI.sub(" ", self.reginfo())):
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            ctrl.wait_event("REGISTER_OK", min(left, 0.5), start=0)

    def register_ok_count(self) -> int:
        return sum(1 for e in self.events if e.get("type") == "REGISTER_OK")

    def reginfo(self) -> str:
        return str(self.command("reginfo").get("data", ""))

    def dial(self, uri: str) -> dict[str, Any]:
        return self.command("dial", uri)

    def hangup(self) -> dict[str, Any]:
        return self.command("hangup")

    def send_dtmf(self, digits: str) -> None:
        for d in digits:
            self.command("sndcode", d)

    # files

    def recorded_files(self, kind: str = "dec") -> list[Path]:
        """WAVs written by sndfile: "dec" = what the phone received, "enc" = sent."""
        return sorted(self.recordings.glob(f"dump-*-{kind}.wav"))

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no baresip log)"
        tail = text.splitlines()[-lines:]
        return f"--- last {len(tail)} lines of {self.log_path} ---\n" + "\n".join(tail)
