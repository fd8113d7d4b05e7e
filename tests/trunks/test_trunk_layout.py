"""softswitch.trunks is a sans-I/O core: no sockets, event loop, clock or upper layers."""

from __future__ import annotations

import ast
from pathlib import Path

TRUNKS = Path(__file__).resolve().parents[2] / "softswitch" / "trunks"
BANNED = (
    "asyncio",
    "socket",
    "time",
    "selectors",
    "softswitch.clock",
    "softswitch.transport",
    "softswitch.server",
    "softswitch.app",
    "softswitch.b2bua",
    "softswitch.store",
    "softswitch.media",
)


def test_trunks_import_nothing_with_io() -> None:
    bad = []
    for path in sorted(TRUNKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if any(name == b or name.startswith(b + ".") for b in BANNED):
                    bad.append(f"{path.name}: {name}")
    assert bad == []
