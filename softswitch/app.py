"""The composition root: config, state, clock, the SIP server, signals."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
from pathlib import Path

from softswitch.clock import SystemClock
from softswitch.config import Config
from softswitch.logs import get_logger
from softswitch.server import SipServer
from softswitch.store.sqlite import SqliteLocationStore

log = get_logger("softswitch")

DB_NAME = "softswitch.db"
SECRET_NAME = "nonce.key"


def database_path(config: Config) -> Path:
    return config.state_dir / DB_NAME


def load_secret(state_dir: Path) -> bytes:
    """The key that signs digest nonces. Kept on disk so that phones holding a nonce
    from before a restart are not all re-challenged (and not counted as failures)."""
    path = state_dir / SECRET_NAME
    state_dir.mkdir(parents=True, exist_ok=True)
    try:
        secret = path.read_bytes()
        if len(secret) >= 32:
            return secret
    except FileNotFoundError:
        pass
    secret = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret


async def serve(config: Config) -> int:
    clock = SystemClock()
    store = SqliteLocationStore(database_path(config))
    server = SipServer(config, clock, store, load_secret(config.state_dir))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await server.start()
    except OSError as exc:
        log.error("cannot_listen", error=str(exc))
        store.close()
        return 1
    log.info(
        "started",
        tenants=len(config.tenants),
        registrations=len(store.all_bindings(clock.wall())),
        state=str(config.state_dir),
    )
    await stop.wait()
    log.info("stopping")
    server.close()
    store.close()
    return 0


def run(config: Config) -> int:
    try:
        import uvloop
    except ImportError:  # uvloop is optional off Linux
        return asyncio.run(serve(config))
    return uvloop.run(serve(config))
