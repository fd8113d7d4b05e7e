"""Builders shared by the trunk tests: a small two-tenant, two-carrier config."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from softswitch.config import _Collector
from softswitch.trunks.config import load_trunks
from softswitch.trunks.model import TrunkSettings

BASE = """
[[tenants]]
domain = "acme.example"
extensions = [
  { user = "201", password = "secret-201" },
  { user = "202", password = "secret-202" },
  { user = "203", password = "secret-203" },
]
trunks = ["carrier-a", "carrier-b"]
[tenants.dialplan]
country = "IT"
[tenants.outbound]
max_concurrent_external = 3
max_calls_per_hour = 10
extension_max_concurrent_external = 2
[tenants.outbound.extensions.203]
external = false
[[tenants.numbers]]
number = "+390212345600"
destination = "201"
caller_id_for = ["201", "202"]
[[tenants.numbers]]
number = "+390212345602"
destination = "202"

[[tenants]]
domain = "beta.example"
extensions = [{ user = "100", password = "secret-100" }]
trunks = ["carrier-a"]
[tenants.dialplan]
country = "GB"
[[tenants.numbers]]
number = "+442079460000"
destination = "100"

[[trunks]]
name = "carrier-a"
host = "192.0.2.10"
username = "0212345600"
password = "trunk-pass"
register = true
country = "IT"
number_format = "national"
tenants = ["*"]

[[trunks]]
name = "carrier-b"
host = "sip.carrier-b.example"
inbound_addresses = ["198.51.100.0/28"]
did_from = "to"
tenants = ["acme.example"]
"""


def load(text: str) -> tuple[TrunkSettings, list[str]]:
    c = _Collector(Path("test.toml"))
    settings = load_trunks(tomllib.loads(text), c)
    return settings, [e.removeprefix("test.toml: ") for e in c.errors]


def load_raw(raw: dict[str, Any]) -> tuple[TrunkSettings, list[str]]:
    c = _Collector(Path("test.toml"))
    settings = load_trunks(raw, c)
    return settings, [e.removeprefix("test.toml: ") for e in c.errors]
