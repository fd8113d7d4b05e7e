from __future__ import annotations

from pathlib import Path

import pytest

from softswitch.cli import main
from softswitch.config import load_config
from softswitch.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid():
    config = load_config(ROOT / "config.example.toml")
    assert config.tenant("ACME.example").extension("201").name == "Alice Rossi"
    assert config.state_dir == ROOT / "var"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_every_fault_is_named_by_key_path(tmp_path):
    path = write(
        tmp_path,
        """
listen = ["udp:127.0.0.1:99999", "sctp:1.2.3.4:5060"]
lgo_level = "info"
[sip]
min_expires = "60"
[[tenants]]
domain = "bad domain"
  [[tenants.extensions]]
  user = "201"
  password = "short"
  [[tenants.extensions]]
  user = "201"
  password = "long-enough"
""",
    )
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    for needle in (
        "listen[0]",
        "out of range",
        "listen[1]",
        "lgo_level: unknown key",
        "sip.min_expires: must be an integer",
        "tenants[0].domain",
        "tenants[0].extensions[0].password: must be at least 8",
        "tenants[0].extensions[1].user: '201' is already",
    ):
        assert needle in text, needle
    assert all(line.startswith(str(path)) for line in text.splitlines())


def test_syntax_error_names_the_line(tmp_path):
    path = write(tmp_path, 'listen = ["udp:127.0.0.1:5060"\nstate_dir = 3\n')
    with pytest.raises(ConfigError, match="line"):
        load_config(path)


def test_check_config_exit_status(tmp_path, capsys):
    assert main(["check-config", str(ROOT / "config.example.toml")]) == 0
    bad = write(tmp_path, "[[tenants]]\nname = 'x'\n")
    assert main(["check-config", str(bad)]) == 2
    assert "tenants[0].domain: is required" in capsys.readouterr().err
