"""The call timer queue, and the import rules of the call packages."""

from __future__ import annotations

import ast
from pathlib import Path

from softswitch.b2bua.timers import TimerQueue

ROOT = Path(__file__).resolve().parents[2]


class Owner:
    def __init__(self) -> None:
        self.timers: dict[str, int] = {}

    def on_timer(self, kind: str, now: float) -> None:
        pass


def test_reschedule_cancel_and_order() -> None:
    q = TimerQueue()
    a, b = Owner(), Owner()
    q.schedule(a, "ring", 30.0)
    q.schedule(b, "ring", 10.0)
    q.schedule(a, "max", 20.0)
    q.schedule(b, "ring", 40.0)  # replaces the 10 s one
    assert q.next_deadline() == 20.0 and len(q) == 3
    q.cancel(a, "max")
    assert q.next_deadline() == 30.0 and len(q) == 2
    assert q.pop_due(35.0) == [(a, "ring")]
    assert not q.pending(a, "ring") and q.pending(b, "ring")
    q.cancel_all(b)
    assert q.next_deadline() is None and len(q) == 0


def test_stale_entries_are_purged() -> None:
    q = TimerQueue()
    owners = [Owner() for _ in range(10)]
    for i in range(5000):
        q.schedule(owners[i % 10], "refresh", float(i))
    assert len(q) == 10
    assert len(q._heap) < 2000
    assert [k for _o, k in q.pop_due(1e9)] == ["refresh"] * 10


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_call_packages_stay_sans_io() -> None:
    banned = {
        "b2bua": (
            "asyncio",
            "socket",
            "time",
            "softswitch.transport",
            "softswitch.server",
            "softswitch.app",
            "softswitch.clock",
            "softswitch.media.local",
            "softswitch.media.engine",
        ),
        "routing": (
            "asyncio",
            "socket",
            "time",
            "softswitch.transport",
            "softswitch.server",
            "softswitch.app",
            "softswitch.b2bua",
            "softswitch.store",
            "softswitch.media",
        ),
    }
    violations = []
    for package, forbidden in banned.items():
        for path in (ROOT / "softswitch" / package).rglob("*.py"):
            for name in imports_of(path):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    violations.append(f"{path.name} imports {name}")
    dialog = imports_of(ROOT / "softswitch" / "sip" / "dialog.py")
    violations += [n for n in dialog if not (n.startswith("softswitch.sip") or "." not in n)]
    assert violations == []
