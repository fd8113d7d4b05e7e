"""The ``softswitch trunks`` table: configured trunks with their registration state."""

from __future__ import annotations

from collections.abc import Mapping

from softswitch.trunks.model import TrunkSettings
from softswitch.trunks.registration import TrunkStatus

__all__ = ["format_trunks"]


def _ago(then: float | None, now: float) -> str:
    if then is None:
        return "-"
    seconds = int(then - now)
    return f"in {seconds}s" if seconds >= 0 else f"{-seconds}s ago"


def format_trunks(settings: TrunkSettings, statuses: Mapping[str, TrunkStatus], now: float) -> str:
    """One row per trunk; ``statuses`` by trunk name, times in epoch seconds. A trunk
    without ``register = true`` shows as static; ``now`` is epoch seconds."""
    header = ("TRUNK", "HOST", "STATE", "UNTIL/RETRY", "REASON", "TENANTS")
    rows = []
    for trunk in settings.trunks:
        tenants = ",".join(trunk.tenants) or "-"
        host = f"{trunk.transport}:{trunk.host}:{trunk.port}"
        if not trunk.register:
            rows.append((trunk.name, host, "static", "-", "no registration", tenants))
            continue
        st = statuses.get(trunk.name)
        if st is None:
            rows.append((trunk.name, host, "unknown", "-", "daemon not running?", tenants))
            continue
        when = st.registered_until if st.state == "registered" else st.next_attempt
        rows.append((trunk.name, host, st.state, _ago(when, now), st.reason, tenants))
    if not rows:
        return "no trunks configured"
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [header, *rows]
    )
