"""packaging/softswitch.service: systemd accepts it, and it says what the daemon needs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from softswitch.app import BYE_WAIT
from softswitch.config_service import ServiceSettings
from tests.support.tools import require_tool

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "packaging" / "softswitch.service"
INSTALLED = "/opt/softswitch/bin/softswitch"


def unit_settings() -> dict[str, list[str]]:
    """Every KEY=value of the unit (a key may repeat), sections merged."""
    out: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze", "systemd")
    # verify insists that ExecStart programs exist: point them at this checkout's install.
    script = shutil.which("softswitch", path=str(Path(sys.executable).parent)) or shutil.which(
        "softswitch"
    )
    assert script, "the softswitch script is not installed (pip install -e .)"
    text = UNIT.read_text()
    assert INSTALLED in text
    copy = tmp_path / "softswitch.service"
    copy.write_text(text.replace(INSTALLED, script))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on directives it ignores; any output at all is a fault in the unit.
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "" and result.stderr.strip() == "", result.stderr


def test_the_unit_asks_for_what_the_daemon_does() -> None:
    s = unit_settings()
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == [f"{INSTALLED} run --config /etc/softswitch/config.toml"]
    assert s["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert s["User"] == ["softswitch"]
    assert s["StateDirectory"] == ["softswitch"]
    assert s["ConfigurationDirectory"] == ["softswitch"]
    assert s["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert s["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    for key, value in (
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("PrivateDevices", "yes"),
    ):
        assert s[key] == [value], key
    assert "WatchdogSec" in s


def seconds(value: str) -> float:
    assert value.endswith("s") and not value.endswith("ms"), value
    return float(value[:-1])


def test_stop_timeout_outlasts_the_default_grace() -> None:
    s = unit_settings()
    grace = ServiceSettings().stop_grace_seconds
    assert seconds(s["TimeoutStopSec"][0]) > grace + BYE_WAIT + 5


def test_sysusers_entry_matches_the_unit() -> None:
    lines = [
        line.split()
        for line in (ROOT / "packaging" / "softswitch.sysusers.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0][:2] == ["u", *unit_settings()["User"]]
