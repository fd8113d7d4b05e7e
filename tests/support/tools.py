"""Finding external programs: skip on a developer machine, fail in CI."""

from __future__ import annotations

import os
import shutil

import pytest

# Debian package that provides each tool, for the skip/fail message.
DEBIAN_PACKAGES: dict[str, str] = {
    "sipp": "sip-tester",
    "baresip": "baresip-core",
    "kamailio": "kamailio",
    "espeak-ng": "espeak-ng",
    "sox": "sox",
    "sqlite3": "sqlite3",
    "taskset": "util-linux",
}

# Daemons such as kamailio live in sbin, which is not on a normal user's PATH.
_EXTRA_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def find_tool(name: str) -> str | None:
    """Path of an executable, looking in sbin directories too."""
    path = os.environ.get("PATH", os.defpath)
    return shutil.which(name, path=os.pathsep.join([path, *_EXTRA_DIRS]))


def in_ci() -> bool:
    return bool(os.environ.get("CI"))


def require_tool(name: str, package: str | None = None) -> str:
    """Path of ``name``; skips the test if missing, except in CI where that is a failure.

    A CI run that silently skips interop tests would report green without testing
    anything, hence the hard failure there.
    """
    found = find_tool(name)
    if found:
        return found
    package = package or DEBIAN_PACKAGES.get(name, name)
    if in_ci():
        pytest.fail(f"{name} not installed; .ci/run installs it (Debian package {package})")
    pytest.skip(f"{name} not installed (Debian package {package})")
