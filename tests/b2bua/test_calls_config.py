"""The [calls] table of the config file."""

from __future__ import annotations

from pathlib import Path

import pytest

from softswitch.config import CallSettings, build_config
from softswitch.errors import ConfigError

PATH = Path("/tmp/softswitch.toml")


def test_defaults() -> None:
    assert build_config({}, PATH).calls == CallSettings()
    assert CallSettings() == CallSettings(30.0, 14400.0, 1800, 90, 20000, 29999, 30.0, "")


def test_values() -> None:
    calls = build_config(
        {
            "calls": {
                "ring_timeout": 2,
                "max_call_seconds": 60,
                "session_expires": 90,
                "min_se": 90,
                "rtp_port_min": 40000,
                "rtp_port_max": 40099,
                "media_timeout": 5.5,
                "media_address": "::1",
            }
        },
        PATH,
    ).calls
    assert calls == CallSettings(2.0, 60.0, 90, 90, 40000, 40099, 5.5, "::1")


def test_every_fault_named() -> None:
    with pytest.raises(ConfigError) as err:
        build_config(
            {
                "calls": {
                    "ring_timeout": 0,
                    "max_call_seconds": -1,
                    "session_expires": 100,
                    "min_se": 60,
                    "rtp_port_min": 80,
                    "rtp_port_max": 70000,
                    "media_timeout": "x",
                    "media_address": "media.example",
                    "ringtimeout": 3,
                }
            },
            PATH,
        )
    text = str(err.value)
    for key in (
        "calls.ring_timeout: must be greater than zero",
        "calls.max_call_seconds: must be greater than zero",
        "calls.min_se: must be at least 90",
        "calls.rtp_port_min: must be a port between 1024 and 65535",
        "calls.rtp_port_max: must be a port between 1024 and 65535",
        "calls.media_timeout: must be an integer or a number",
        "calls.media_address: 'media.example' is not an IP address",
        "calls.ringtimeout: unknown key",
    ):
        assert key in text, text
    with pytest.raises(ConfigError, match="session_expires: must not be smaller than min_se"):
        build_config({"calls": {"session_expires": 100, "min_se": 120}}, PATH)


def test_example_config_is_valid() -> None:
    from softswitch.config import load_config

    example = Path(__file__).resolve().parents[2] / "config.example.toml"
    assert load_config(example).calls.ring_timeout == 30
