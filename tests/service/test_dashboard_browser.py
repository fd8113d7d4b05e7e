"""The dashboard in headless Chromium: it shows, live, the phones a test registers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.service.helpers import ACME, NORD, TOKEN, register, service_config
from tests.service.webdriver import Browser
from tests.support.daemon import SoftswitchDaemon
from tests.support.tools import require_tool

PHONES = """
return [...document.querySelectorAll(
    `section.tenant[data-tenant="${arguments[0]}"] li.phone`)].map(e => e.textContent);
"""


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    chromium = require_tool("chromium", "chromium")
    chromedriver = require_tool("chromedriver", "chromium-driver")
    with Browser(chromedriver, chromium, tmp_path / "browser") as b:
        yield b


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[SoftswitchDaemon]:
    path, _, admin_port = service_config(tmp_path / "softswitch.toml")
    d = SoftswitchDaemon(path, log_path=tmp_path / "softswitch.log")
    d.admin_url = f"http://127.0.0.1:{admin_port}"  # type: ignore[attr-defined]
    with d:
        yield d


@pytest.mark.timeout(120)
def test_dashboard_shows_a_registered_phone_live(
    browser: Browser, daemon: SoftswitchDaemon, tmp_path: Path
) -> None:
    assert register(daemon.address, "201", ACME, "password-201").status == 200
    browser.get(f"{daemon.admin_url}/#token={TOKEN}")  # type: ignore[attr-defined]

    phones = browser.wait_for(PHONES, 15.0, ACME)
    assert len(phones) == 1
    assert "201" in phones[0] and "Alice Rossi" in phones[0] and "softswitch-tests" in phones[0]
    # The token left the address bar (and so the history) once read.
    assert "token" not in browser.execute("return location.href;")
    assert browser.execute("return document.getElementById('login').hidden;") is True
    assert browser.execute("return document.getElementById('state').textContent;") == "live"
    headings = browser.execute(
        "return [...document.querySelectorAll('section.tenant h2')].map(e => e.textContent);"
    )
    assert any(NORD in h for h in headings)

    # Live: a phone registered now shows up without reloading the page.
    assert register(daemon.address, "100", NORD, "password-100").status == 200
    nord = browser.wait_for(PHONES, 10.0, NORD)
    assert "100" in nord[0] and "Reception" in nord[0]
    browser.screenshot(tmp_path / "dashboard.png")


@pytest.mark.timeout(120)
def test_dashboard_asks_for_the_token(browser: Browser, daemon: SoftswitchDaemon) -> None:
    browser.get(f"{daemon.admin_url}/#token=wrong-{TOKEN}")  # type: ignore[attr-defined]
    browser.wait_for("return !document.getElementById('login').hidden;", 10.0)
    assert browser.execute("return document.getElementById('login-error').hidden;") is False
    assert browser.execute("return document.querySelectorAll('section.tenant').length;") == 0
