"""``python -m bench [--quick] [NAME ...]``: run bench/bench_NAME.py modules.

Each module exposes ``run(quick: bool = False) -> list[dict]``. All figures are
printed and written to bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench._common import RESULTS_DIR, figure

BENCH_DIR = Path(__file__).resolve().parent


def discover() -> list[str]:
    return sorted(p.stem.removeprefix("bench_") for p in BENCH_DIR.glob("bench_*.py"))


def run_one(name: str, quick: bool) -> list[dict[str, Any]]:
    try:
        module = importlib.import_module(f"bench.bench_{name}")
        return list(module.run(quick=quick))
    except Exception as e:  # one broken bench must not hide the others' figures
        traceback.print_exc()
        return [figure(f"bench {name}", None, None, "", 0.0, "", error=f"{type(e).__name__}: {e}")]


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 100 else f"{v:,.0f}"
    return str(v)


def print_table(figures: list[dict[str, Any]]) -> None:
    rows = [("figure", "ours", "peer", "peer name", "ratio", "target", "")]
    for f in figures:
        ratio, target = f.get("ratio"), f.get("target")
        if f.get("error"):
            verdict = "FAILED: " + str(f["error"])
        elif ratio is None:
            verdict = "no ratio"
        else:
            verdict = "ok" if ratio >= target else "below target"
        if f.get("note"):
            verdict += f" ({f['note']})"
        rows.append(
            (
                f"{f.get('figure')} [{f.get('unit', '')}]",
                _fmt(f.get("ours")),
                _fmt(f.get("peer")),
                str(f.get("peer_name", "")),
                _fmt(ratio),
                _fmt(target),
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:6], widths, strict=True)) + "  " + r[6])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"benches to run (default all: {discover()})")
    parser.add_argument("--quick", action="store_true", help="fewer, shorter steps")
    args = parser.parse_args(argv)
    available = discover()
    unknown = [n for n in args.names if n not in available]
    if unknown:
        parser.error(f"unknown bench {unknown}; available: {available}")
    figures: list[dict[str, Any]] = []
    for name in args.names or available:
        started = time.monotonic()
        print(f"== bench {name}", flush=True)
        figures += run_one(name, args.quick)
        print(f"== bench {name} done in {time.monotonic() - started:.0f} s", flush=True)
    print()
    print_table(figures)
    RESULTS_DIR.mkdir(exist_ok=True)
    tmp = RESULTS_DIR / "latest.json.tmp"
    tmp.write_text(json.dumps(figures, indent=2) + "\n")
    tmp.replace(RESULTS_DIR / "latest.json")
    print(f"\nwritten {RESULTS_DIR / 'latest.json'}")
    return 1 if any(f.get("error") for f in figures) else 0


if __name__ == "__main__":
    sys.exit(main())
