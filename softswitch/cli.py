"""The command line: ``softswitch run | check-config | registrations | cdr``."""

from __future__ import annotations

import argparse
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)
