"""The command line: ``softswitch run | check-config | registrations | cdr | trunks |
conferences``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence

from softswitch.config import Config, load_config
from softswitch.errors import ConfigError

EXIT_CONFIG = 2


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    from softswitch.app import run
    from softswitch.logs import configure_logging

    configure_logging(args.log_level or config.log_level, config.log_format)
    return run(config)


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    extensions = sum(len(t.extensions) for t in config.tenants)
    print(
        f"{args.config}: ok ({len(config.tenants)} tenants, {extensions} extensions, "
        f"listening on {', '.join(str(a) for a in config.listen)})"
    )
    return 0


def cmd_registrations(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    from softswitch.app import database_path
    from softswitch.store.sqlite import read_bindings

    now = time.time()
    bindings = read_bindings(database_path(config), now)
    if args.tenant:
        bindings = [b for b in bindings if b.tenant == args.tenant.lower()]
    print(format_registrations(config, bindings, now))
    return 0


def cmd_cdr(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    from softswitch.store.cdr import parse_since, read_records, to_csv, to_json
    from softswitch.wiring import state_database

    try:
        since = parse_since(args.since)
    except ValueError:
        print(
            f"error: --since {args.since!r} is not a date (YYYY-MM-DD[THH:MM[:SS]])",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    records = read_records(state_database(config), since, args.tenant)
    text = to_json(records) if args.format == "json" else to_csv(records)
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


def cmd_trunks(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    from softswitch.trunk_service import read_statuses, status_path
    from softswitch.trunks.report import format_trunks

    statuses = read_statuses(status_path(config))
    print(format_trunks(config.trunking, statuses, time.time()))
    return 0


def cmd_conferences(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_CONFIG
    from softswitch.b2bua.conference import SNAPSHOT_NAME

    path = config.state_dir / SNAPSHOT_NAME
    try:
        snapshot = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        snapshot = None
    except (OSError, ValueError) as exc:
        print(f"error: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if snapshot is not None and not _alive(snapshot.get("pid")):
        snapshot = None  # written by a daemon that is gone: its rooms are gone too
    if args.format == "json":
        print(json.dumps(snapshot or {"rooms": [], "waiting": []}, indent=1))
        return 0
    print(format_conferences(config, snapshot, time.time(), args.tenant))
    return 0


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # running as another user (the service account)
    return True


def format_conferences(
    config: Config, snapshot: dict | None, now: float, tenant: str | None = None
) -> str:
    """Every configured room per tenant, with who is in it and who is entering a PIN."""
    if snapshot is None:
        return "the daemon is not running: no conference is in use"
    active = {(r["tenant"], r["number"]): r for r in snapshot.get("rooms", [])}
    waiting: dict[tuple[str, str], int] = {}
    for w in snapshot.get("waiting", []):
        key = (w["tenant"], w["number"])
        waiting[key] = waiting.get(key, 0) + 1
    lines: list[str] = []
    for t in config.tenants:
        if tenant and t.domain != tenant.lower():
            continue
        if not t.conferences:
            continue
        lines.append(f"{t.domain} ({t.name}): {len(t.conferences)} conference rooms")
        for conf in t.conferences:
            room = active.get((t.domain, conf.number))
            people = room["participants"] if room else []
            name = f" {conf.name}" if conf.name else ""
            access = "PIN" if conf.pin else "open"
            state = f"{len(people)}/{conf.max_participants} in the room"
            if waiting.get((t.domain, conf.number)):
                state += f", {waiting[(t.domain, conf.number)]} entering the PIN"
            if room and room.get("started_at"):
                state += f", for {_duration(now - room['started_at'])}"
            lines.append(f"  {conf.number}{name} [{access}]: {state}")
            if people:
                header = ("CALLER", "ROLE", "MUTED", "CODEC", "JOINED")
                rows = [
                    (
                        p["caller"],
                        "moderator" if p["moderator"] else "participant",
                        "yes" if p["muted"] else "no",
                        p["codec"] or "-",
                        _duration(now - p["joined_at"]) + " ago" if p["joined_at"] else "-",
                    )
                    for p in people
                ]
                widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
                for row in [header, *rows]:
                    cells = "  ".join(c.ljust(widths[i]) for i, c in enumerate(row))
                    lines.append("    " + cells.rstrip())
    return "\n".join(lines) if lines else "no conference rooms are configured"


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_registrations(config: Config, bindings: list, now: float) -> str:
    lines: list[str] = []
    by_tenant: dict[str, list] = {}
    for b in bindings:
        by_tenant.setdefault(b.tenant, []).append(b)
    for tenant in config.tenants:
        rows = by_tenant.pop(tenant.domain, [])
        lines.append(f"{tenant.domain} ({tenant.name}): {len(rows)} registered")
        lines.extend(_rows(rows, now))
    for domain, rows in sorted(by_tenant.items()):
        # Bindings of a tenant that has since been removed from the config.
        lines.append(f"{domain} (not in config): {len(rows)} registered")
        lines.extend(_rows(rows, now))
    return "\n".join(lines)


def _rows(rows: list, now: float) -> list[str]:
    if not rows:
        return []
    header = ("USER", "CONTACT", "VIA", "EXPIRES", "USER-AGENT")
    table = [
        (b.user, b.contact, str(b.flow), f"{b.expires_in(now)}s", b.user_agent or "-") for b in rows
    ]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    out = []
    for row in [header, *table]:
        out.append("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="softswitch", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the daemon")
    p.add_argument("--config", required=True, help="path of the TOML config file")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("check-config", help="validate a config file (exit status 2 on errors)")
    p.add_argument("config", help="path of the TOML config file")
    p.set_defaults(func=cmd_check_config)
    p = sub.add_parser("registrations", help="list current registrations per tenant")
    p.add_argument("--config", required=True)
    p.add_argument("--tenant", help="only this tenant's domain")
    p.set_defaults(func=cmd_registrations)
    p = sub.add_parser("cdr", help="export call detail records")
    p.add_argument("--config", required=True)
    p.add_argument(
        "--since", required=True, help="calls started at or after: YYYY-MM-DD[THH:MM[:SS]] (UTC)"
    )
    p.add_argument("--tenant", help="only this tenant's domain")
    p.add_argument("--format", choices=("csv", "json"), default="csv")
    p.set_defaults(func=cmd_cdr)
    p = sub.add_parser("trunks", help="list the carrier trunks and their registration state")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_trunks)
    p = sub.add_parser("conferences", help="list conference rooms and who is in them")
    p.add_argument("--config", required=True)
    p.add_argument("--tenant", help="only this tenant's domain")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_conferences)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
