"""The [admin] and [service] tables: defaults, token files, and every fault named."""

from __future__ import annotations

from pathlib import Path

import pytest

from softswitch.config import load_config
from softswitch.config_service import (
    AdminSettings,
    ServiceSettings,
    build_admin,
    build_service,
    parse_admin_listen,
)
from softswitch.errors import ConfigError

GOOD_TOKEN = "a-long-enough-admin-token"


class Errors:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, key: str, what: str) -> None:
        self.errors.append(f"{key}: {what}")


def test_no_tables_means_admin_off_and_default_grace(tmp_path: Path) -> None:
    c = Errors()
    assert build_admin(None, tmp_path, c) == AdminSettings()
    assert not AdminSettings().enabled
    assert build_service(None, c) == ServiceSettings(stop_grace_seconds=30.0, retry_after=60)
    assert c.errors == []


def test_admin_table_turns_it_on_on_localhost(tmp_path: Path) -> None:
    c = Errors()
    admin = build_admin({"token": GOOD_TOKEN}, tmp_path, c)
    assert c.errors == []
    assert (admin.enabled, admin.host, admin.port, admin.token) == (
        True,
        "127.0.0.1",
        8080,
        GOOD_TOKEN,
    )
    assert GOOD_TOKEN not in repr(admin)


def test_token_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "admin.token").write_text(GOOD_TOKEN + "\n")
    c = Errors()
    admin = build_admin({"token_file": "admin.token", "listen": "[::1]:9000"}, tmp_path, c)
    assert c.errors == []
    assert admin.token == GOOD_TOKEN
    assert admin.token_file == tmp_path / "admin.token"
    assert (admin.host, admin.port, admin.listen) == ("::1", 9000, "[::1]:9000")


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({}, "admin.token: is required"),
        ({"token": "short"}, "admin.token: must be at least 16"),
        ({"token": "has a space in the middle"}, "must not contain spaces"),
        ({"token": GOOD_TOKEN, "token_file": "x"}, "not both"),
        ({"token_file": "missing.token"}, "admin.token_file: cannot read"),
        ({"token": GOOD_TOKEN, "listen": "localhost:8080"}, "not an IP address"),
        ({"token": GOOD_TOKEN, "listen": "127.0.0.1:70000"}, "out of range"),
        ({"token": GOOD_TOKEN, "listen": 8080}, "admin.listen: must be a string"),
        ({"token": GOOD_TOKEN, "enabled": "yes"}, "admin.enabled: must be true or false"),
        ({"token": GOOD_TOKEN, "tokn": 1}, "admin.tokn: unknown key"),
    ],
)
def test_admin_faults(tmp_path: Path, table: dict, needle: str) -> None:
    c = Errors()
    build_admin(table, tmp_path, c)
    assert any(needle in e for e in c.errors), c.errors


def test_disabled_admin_needs_no_token(tmp_path: Path) -> None:
    c = Errors()
    assert not build_admin({"enabled": False}, tmp_path, c).enabled
    assert c.errors == []


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ({"stop_grace_seconds": -1}, "service.stop_grace_seconds: must not be negative"),
        ({"stop_grace_seconds": "30"}, "must be a number"),
        ({"retry_after": 0}, "service.retry_after: must be at least 1"),
        ({"retry_after": 1.5}, "service.retry_after: must be an integer"),
        ({"grace": 3}, "service.grace: unknown key"),
    ],
)
def test_service_faults(table: dict, needle: str) -> None:
    c = Errors()
    build_service(table, c)
    assert any(needle in e for e in c.errors), c.errors


def test_service_values() -> None:
    c = Errors()
    s = build_service({"stop_grace_seconds": 0, "retry_after": 5}, c)
    assert c.errors == [] and s == ServiceSettings(0.0, 5)


def test_parse_admin_listen() -> None:
    assert parse_admin_listen("0.0.0.0:80") == ("0.0.0.0", 80)
    with pytest.raises(ValueError):
        parse_admin_listen("127.0.0.1")


def test_through_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        f"""
listen = ["udp:127.0.0.1:5060"]
[admin]
listen = "127.0.0.1:8181"
token = "{GOOD_TOKEN}"
[service]
stop_grace_seconds = 5
retry_after = 30
"""
    )
    config = load_config(path)
    assert config.admin.port == 8181 and config.admin.token == GOOD_TOKEN
    assert config.service == ServiceSettings(5.0, 30)


def test_faults_reported_with_the_others(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('lgo_level = "x"\nadmin = 3\n[service]\nretry_after = -2\n')
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    for needle in ("lgo_level: unknown key", "admin: must be a table", "service.retry_after"):
        assert needle in text
    assert all(line.startswith(str(path)) for line in text.splitlines())
