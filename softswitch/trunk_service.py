"""Registering with carriers from the running daemon, and the state file that
``softswitch trunks`` reads.

`TrunkRegistrations` holds one `TrunkRegistration` per trunk with ``register = true``
and is driven by the SIP server: it hands out REGISTERs to send as client transactions,
takes their answers (with the address each came from), timeouts and timer ticks, logs
every state change and rewrites ``trunks.json`` in the state directory, atomically, so
the command line never reads half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from softswitch.config import Config
from softswitch.logs import get_logger
from softswitch.sip.message import Request, Response
from softswitch.sip.transaction.events import Destination
from softswitch.sip.transaction.keys import ClientKey
from softswitch.trunks.model import Trunk
from softswitch.trunks.registration import RegState, TrunkRegistration, TrunkStatus

log = get_logger("softswitch.trunks")

STATUS_NAME = "trunks.json"

# (request, destination, now) -> the client transaction's key
SendRequest = Callable[[Request, Destination, float], ClientKey]
Resolve = Callable[[Trunk], Destination | None]


def status_path(config: Config) -> Path:
    return config.state_dir / STATUS_NAME


def read_statuses(path: Path) -> dict[str, TrunkStatus]:
    """The statuses the daemon last wrote, by trunk name; empty if there are none."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out: dict[str, TrunkStatus] = {}
    for item in data.get("trunks", []) if isinstance(data, dict) else []:
        if isinstance(item, dict) and isinstance(item.get("trunk"), str):
            out[item["trunk"]] = TrunkStatus.from_dict(item)
    return out


def contact_user(trunk: Trunk) -> str:
    """A Contact user of its own per trunk, so that two accounts at one carrier can
    be told apart by the Request-URI of the calls they send us; stable across
    restarts, so a restart replaces our binding at the carrier instead of adding one."""
    return f"{trunk.username}-{trunk.name}"


class TrunkRegistrations:
    def __init__(
        self,
        send: SendRequest,
        resolve: Resolve,
        status_file: Path | None,
        *,
        wall_offset: Callable[[], float],
        user_agent: str = "",
    ) -> None:
        """``wall_offset``: wall-clock minus monotonic time, for the epoch times the
        status file shows."""
        self._send = send
        self._wall_offset = wall_offset
        self._resolve = resolve
        self._status_file = status_file
        self._user_agent = user_agent
        self.by_name: dict[str, TrunkRegistration] = {}
        self._keys: dict[ClientKey, TrunkRegistration] = {}
        self._contact_host = ""
        self._contact_port = 0
        self._stopping = False

    # -- configuration -----------------------------------------------------------------

    def configure(self, config: Config, now: float) -> None:
        """Registrations for the trunks of ``config``: new ones are created, removed
        ones unregister, changed ones (credentials, address, interval) start over."""
        udp = [a for a in config.listen if a.transport == "udp"]
        if udp:
            self._contact_host, self._contact_port = udp[0].host, udp[0].port
        wanted = {t.name: t for t in config.trunking.trunks if t.register}
        for name, reg in list(self.by_name.items()):
            trunk = wanted.get(name)
            if trunk is None or trunk != reg.trunk:
                self._send_all(reg, reg.stop(now), now)
                del self.by_name[name]
        for name, trunk in wanted.items():
            if name in self.by_name:
                continue
            if trunk.transport != "udp" or not self._contact_host:
                log.warning(
                    "trunk_not_registered",
                    trunk=name,
                    reason="the switch registers over UDP only",
                )
                continue
            host = self._contact_host
            host = f"[{host}]" if ":" in host else host
            contact = f"sip:{contact_user(trunk)}@{host}:{self._contact_port}"
            self.by_name[name] = TrunkRegistration(
                trunk, contact, user_agent=self._user_agent or None
            )
        self.tick(now)

    # -- driving -----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Start what can start and run what is due."""
        if self._stopping:
            return
        for reg in self.by_name.values():
            if reg.state is RegState.UNREGISTERED and self._resolve(reg.trunk) is not None:
                self._send_all(reg, reg.start(now), now)
            deadline = reg.next_deadline()
            if deadline is not None and deadline <= now:
                self._send_all(reg, reg.handle_timers(now), now)
        self._changed(now)

    def next_deadline(self) -> float | None:
        deadlines = [d for r in self.by_name.values() if (d := r.next_deadline()) is not None]
        return min(deadlines) if deadlines else None

    def owns(self, key: object) -> bool:
        return key in self._keys

    def on_response(
        self, key: ClientKey, response: Response, source: str | None, now: float
    ) -> None:
        reg = self._keys.get(key)
        if reg is None:
            return
        if response.status >= 200:
            del self._keys[key]
        self._send_all(reg, reg.on_response(response, now, source), now)
        self._changed(now)
        if 200 <= response.status < 300:
            self.write_status(now)

    def on_failure(self, key: object, now: float, *, timeout: bool) -> None:
        reg = self._keys.pop(key, None)  # type: ignore[call-overload]
        if reg is None:
            return
        out = reg.on_timeout(now) if timeout else reg.on_transport_error(now)
        self._send_all(reg, out, now)
        self._changed(now)

    def forget(self, key: object) -> None:
        self._keys.pop(key, None)  # type: ignore[call-overload]

    def stop(self, now: float) -> None:
        """Unregister everywhere (the daemon is stopping)."""
        self._stopping = True
        for reg in self.by_name.values():
            self._send_all(reg, reg.stop(now), now)
        self._changed(now)

    def pending(self) -> bool:
        """Some unregistration is still waiting for the carrier's answer."""
        return any(r.state is RegState.UNREGISTERING for r in self.by_name.values())

    def _send_all(self, reg: TrunkRegistration, requests: Iterable[Request], now: float) -> None:
        for request in requests:
            dest = self._resolve(reg.trunk)
            if dest is None:
                self._send_all(reg, reg.on_transport_error(now), now)
                continue
            self._keys[self._send(request, dest, now)] = reg

    # -- reporting ---------------------------------------------------------------------

    def _changed(self, now: float) -> None:
        changed = False
        for reg in self.by_name.values():
            for change in reg.pop_changes():
                changed = True
                emit = log.warning if change.state is RegState.FAILED else log.info
                emit(
                    "trunk_registration",
                    trunk=change.trunk,
                    state=change.state.value,
                    reason=change.reason,
                    failures=reg.failures,
                )
        if changed:
            self.write_status(now)

    def statuses(self, now: float) -> Mapping[str, TrunkStatus]:
        wall = now + self._wall_offset()
        return {name: reg.status(now, wall) for name, reg in self.by_name.items()}

    def write_status(self, now: float) -> None:
        """Rewrite the state file (after a change; also after each granted refresh,
        which moves the expiry without changing the state)."""
        if self._status_file is None:
            return
        wall = now + self._wall_offset()
        data = {
            "written_at": wall,
            "trunks": [s.to_dict() for s in self.statuses(now).values()],
        }
        path = self._status_file
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.error("trunk_status_write_failed", path=str(path), error=str(exc))
