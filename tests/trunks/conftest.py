"""Fixtures for the trunk tests."""

from __future__ import annotations

import pytest

from softswitch.trunks.model import TrunkSettings
from tests.trunks.trunk_fixtures import BASE, load


@pytest.fixture
def settings() -> TrunkSettings:
    loaded, errors = load(BASE)
    assert errors == []
    return loaded
