"""The layer rules of docs/design.md, checked on the source (imports only)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# package prefix -> module prefixes it must never import
FORBIDDEN = {
    "softswitch.sip": (
        "asyncio",
        "socket",
        "time",
        "selectors",
        "softswitch.transport",
        "softswitch.services",
        "softswitch.server",
        "softswitch.app",
        "softswitch.store",
        "softswitch.media",
        "softswitch.b2bua",
        "softswitch.routing",
        "softswitch.clock",
    ),
    "softswitch.services": (
        "asyncio",
        "socket",
        "softswitch.transport",
        "softswitch.server",
        "softswitch.app",
    ),
    "softswitch.store": ("asyncio", "socket", "softswitch.transport", "softswitch.server"),
    "swcodecs": ("softswitch",),
}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT / "codecs" if path.is_relative_to(ROOT / "codecs") else ROOT)
    parts = list(rel.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_layers_import_only_downwards():
    files = list((ROOT / "softswitch").rglob("*.py")) + list((ROOT / "codecs").rglob("*.py"))
    violations = []
    for path in files:
        name = module_name(path)
        for layer, banned in FORBIDDEN.items():
            if name != layer and not name.startswith(layer + "."):
                continue
            for imported in imports_of(path):
                if any(imported == b or imported.startswith(b + ".") for b in banned):
                    violations.append(f"{name} imports {imported}")
    assert violations == []


def test_codecs_folder_is_not_a_package_and_swcodecs_imports():
    assert not (ROOT / "codecs" / "__init__.py").exists()
    assert importlib.import_module("codecs").__file__.startswith(str(Path(ast.__file__).parent))
    assert importlib.import_module("swcodecs").__file__.startswith(str(ROOT / "codecs"))
