"""Fixtures exposing the helpers in tests/support; all processes stop at teardown."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.baresip import BaresipPhone
from tests.support.daemon import Extension, SoftswitchDaemon, write_config
from tests.support.tools import require_tool


@pytest.fixture
def sipp_bin() -> str:
    return require_tool("sipp")


@pytest.fixture
def baresip_bin() -> str:
    return require_tool("baresip")


@pytest.fixture
def softswitch(tmp_path: Path) -> Iterator[Callable[..., SoftswitchDaemon]]:
    """Factory: ``softswitch(tenants, **config_options)`` -> a started daemon."""
    started: list[SoftswitchDaemon] = []

    def start(tenants: Mapping[str, Sequence[Extension]], **options: Any) -> SoftswitchDaemon:
        workdir = tmp_path / f"softswitch{len(started)}"
        config = write_config(workdir / "softswitch.toml", tenants, **options)
        daemon = SoftswitchDaemon(config, log_path=workdir / "softswitch.log")
        started.append(daemon)
        daemon.start()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def phones(tmp_path: Path, baresip_bin: str) -> Iterator[Callable[..., BaresipPhone]]:
    """Factory: same arguments as BaresipPhone minus ``workdir``; returns it started."""
    started: list[BaresipPhone] = []

    def start(*args: Any, **kwargs: Any) -> BaresipPhone:
        phone = BaresipPhone(tmp_path / f"phone{len(started)}", *args, **kwargs)
        started.append(phone)
        return phone.start()

    yield start
    for phone in started:
        phone.stop()
