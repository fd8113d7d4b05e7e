"""The ``[admin]`` and ``[service]`` tables: how the daemon runs as a service.

Kept apart from ``config.py`` so that the settings of the admin API and of shutdown can
change without touching the SIP settings; ``config.py`` calls ``build_admin`` and
``build_service`` with the raw tables and its error collector, so every fault is still
reported together with the others, named by key path.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ADMIN_LISTEN_RE = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[^:\[\]]+)):(?P<port>\d+)$")
# Anything shorter can be guessed by a process on the same machine that keeps trying.
MIN_TOKEN_LENGTH = 16


class ErrorSink(Protocol):
    def error(self, key: str, what: str) -> None: ...


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """The admin HTTP server: JSON API, Prometheus metrics and the dashboard.

    Off unless the config has an ``[admin]`` table, so that an existing config does not
    suddenly open a port.
    """

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 8080
    token: str = ""
    token_file: Path | None = None  # where ``token`` was read from, for log lines

    @property
    def listen(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def __repr__(self) -> str:
        # A config object ends up in logs and tracebacks; the token must not.
        return f"AdminSettings(enabled={self.enabled}, listen={self.listen!r}, token=<hidden>)"


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Shutdown behaviour: how long calls may go on after SIGTERM."""

    stop_grace_seconds: float = 30.0
    retry_after: int = 60  # Retry-After of the 503 answering new calls while stopping


def parse_admin_listen(text: str) -> tuple[str, int]:
    m = ADMIN_LISTEN_RE.match(text)
    if not m:
        raise ValueError("must look like 127.0.0.1:8080 or [::1]:8080")
    host = m.group("v6") or m.group("v4")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    port = int(m.group("port"))
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return host, port


def _typed(c: ErrorSink, table: dict[str, Any], key: str, path: str, kind: type) -> Any:
    if key not in table:
        return None
    value = table[key]
    names = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}
    ok = isinstance(value, kind)
    if kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok:
        c.error(f"{path}{key}", f"must be {names[kind]}, not {type(value).__name__}")
        return None
    return value


def _table(c: ErrorSink, raw: Any, name: str) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        c.error(name, f"must be a table ([{name}])")
        return None
    return raw


def build_admin(raw: Any, base_dir: Path, c: ErrorSink) -> AdminSettings:
    """``[admin]``: ``enabled``, ``listen``, and ``token`` or ``token_file``.

    ``token_file`` is read here, so a reload picks up a rotated token and a missing file
    is reported like any other fault instead of failing later in the server.
    """
    table = _table(c, raw, "admin")
    if table is None:
        return AdminSettings()
    p = "admin."
    for key in table:
        if key not in ("enabled", "listen", "token", "token_file"):
            c.error(f"{p}{key}", "unknown key (a typo?)")
    defaults = AdminSettings()
    enabled = _typed(c, table, "enabled", p, bool)
    enabled = True if enabled is None else enabled
    host, port = defaults.host, defaults.port
    listen = _typed(c, table, "listen", p, str)
    if listen is not None:
        try:
            host, port = parse_admin_listen(listen)
        except ValueError as exc:
            c.error(f"{p}listen", f"{listen!r} {exc}")
    token = _typed(c, table, "token", p, str)
    token_file_text = _typed(c, table, "token_file", p, str)
    token_file: Path | None = None
    if token is not None and token_file_text is not None:
        c.error(f"{p}token", "give token or token_file, not both")
        token = None
    elif token_file_text is not None:
        token_file = Path(token_file_text)
        if not token_file.is_absolute():
            token_file = base_dir / token_file
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            c.error(f"{p}token_file", f"cannot read {str(token_file)!r}: {exc.strerror}")
        except UnicodeDecodeError:
            c.error(f"{p}token_file", f"{str(token_file)!r} is not UTF-8 text")
    where = f"{p}token_file" if token_file is not None else f"{p}token"
    if enabled and token is None and token_file is None:
        c.error(f"{p}token", "is required (or token_file): the admin API never runs open")
    elif enabled and token is not None:
        if len(token) < MIN_TOKEN_LENGTH:
            c.error(where, f"must be at least {MIN_TOKEN_LENGTH} characters")
        elif any(ch.isspace() or not ch.isprintable() for ch in token):
            c.error(where, "must not contain spaces or control characters")
    return AdminSettings(
        enabled=enabled, host=host, port=port, token=token or "", token_file=token_file
    )


def build_service(raw: Any, c: ErrorSink) -> ServiceSettings:
    """``[service]``: ``stop_grace_seconds`` and ``retry_after``."""
    table = _table(c, raw, "service")
    if table is None:
        return ServiceSettings()
    p = "service."
    for key in table:
        if key not in ("stop_grace_seconds", "retry_after"):
            c.error(f"{p}{key}", "unknown key (a typo?)")
    d = ServiceSettings()
    grace = _typed(c, table, "stop_grace_seconds", p, float)
    if grace is not None and grace < 0:
        c.error(f"{p}stop_grace_seconds", "must not be negative")
        grace = None
    retry_after = _typed(c, table, "retry_after", p, int)
    if retry_after is not None and retry_after < 1:
        c.error(f"{p}retry_after", "must be at least 1 (seconds)")
        retry_after = None
    return ServiceSettings(
        stop_grace_seconds=float(grace if grace is not None else d.stop_grace_seconds),
        retry_after=retry_after if retry_after is not None else d.retry_after,
    )
