"""Headless Chromium through chromedriver, speaking W3C WebDriver over HTTP directly.

The protocol is a handful of JSON requests, so the tests need no client library; what
the tests see is what Chromium rendered after running the page's scripts.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.ports import free_port

# As root, Debian's Chromium runs headless only without its sandbox; everything that
# would reach out to the network on its own is switched off.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-dev-shm-usage",
]


class WebDriverError(RuntimeError):
    pass


class Browser:
    def __init__(
        self,
        chromedriver: str,
        chromium: str,
        workdir: Path,
        window: tuple[int, int] = (412, 915),  # a phone held upright
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port(udp=False)
        self.log_path = workdir / "chromedriver.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [chromedriver, f"--port={self.port}", "--allowed-ips=127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.session: str | None = None
        try:
            self._wait_ready(15.0)
            args = [
                *CHROMIUM_ARGS,
                f"--user-data-dir={workdir / 'profile'}",
                f"--window-size={window[0]},{window[1]}",
            ]
            value = self._call(
                "POST",
                "/session",
                {
                    "capabilities": {
                        "alwaysMatch": {
                            "browserName": "chrome",
                            "goog:chromeOptions": {"binary": chromium, "args": args},
                        }
                    }
                },
                timeout=60.0,
            )
            self.session = value["sessionId"]
        except BaseException:
            self.close()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WebDriverError(f"chromedriver exited: {self.log_tail()}")
            try:
                if self._call("GET", "/status", timeout=1.0).get("ready"):
                    return
            except (OSError, WebDriverError):
                pass
            time.sleep(0.1)
        raise WebDriverError(f"chromedriver not ready: {self.log_tail()}")

    def _call(self, method: str, path: str, body: dict | None = None, timeout: float = 30.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            payload = json.loads(exc.read() or b"{}")
            value = payload.get("value", {})
            message = str(value.get("message", ""))[:500]
            raise WebDriverError(f"{value.get('error')}: {message}") from None
        return payload.get("value")

    def _session_path(self, suffix: str) -> str:
        if self.session is None:
            raise WebDriverError("no session")
        return f"/session/{self.session}{suffix}"

    def get(self, url: str) -> None:
        self._call("POST", self._session_path("/url"), {"url": url})

    def execute(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body) in the page and return its value."""
        return self._call(
            "POST", self._session_path("/execute/sync"), {"script": script, "args": list(args)}
        )

    def wait_for(self, script: str, timeout: float = 15.0, *args: Any) -> Any:
        """The first truthy value of ``script``, polled until ``timeout``."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.execute(script, *args)
            if value:
                return value
            time.sleep(0.2)
        raise WebDriverError(f"still {value!r} after {timeout} s: {script}")

    def screenshot(self, path: Path) -> Path:
        png = self._call("GET", self._session_path("/screenshot"))
        path.write_bytes(base64.b64decode(png))
        return path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def close(self) -> None:
        if self.session is not None:
            try:
                self._call("DELETE", self._session_path(""), timeout=10.0)
            except (OSError, WebDriverError):
                pass
            self.session = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        # A Chromium left behind by a failed session must not outlive the test.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
