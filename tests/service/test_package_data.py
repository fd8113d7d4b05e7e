"""``pip install .`` (not only an editable install) must ship the dashboard's files."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "softswitch" / "admin" / "static"


def test_dashboard_files_are_package_data() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    patterns = package_data.get("softswitch.admin", [])
    files = sorted(p.relative_to(STATIC.parent).as_posix() for p in STATIC.iterdir())
    assert files, "no dashboard files"
    missing = [f for f in files if not any(fnmatch.fnmatch(f, pat) for pat in patterns)]
    assert missing == [], (
        f"not installed by `pip install .`: {missing}; pyproject.toml needs "
        '[tool.setuptools.package-data] softswitch.admin = ["static/*"]'
    )
