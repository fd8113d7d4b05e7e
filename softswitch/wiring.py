"""Creating and stopping what the call side of the server needs: the media controller
and the CDR store. Kept apart from the server so a daemon that wires things itself (or
a test) can inject its own."""

from __future__ import annotations

from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from softswitch.config import Config
from softswitch.media.controller import MediaController
from softswitch.store.cdr import SqliteCdrStore

# The registrations live in the same file (app.DB_NAME); one WAL database per daemon.
DB_NAME = "softswitch.db"


def state_database(config: Config) -> Path:
    return config.state_dir / DB_NAME


async def start_media(config: Config) -> MediaController:
    """The media controller the config asks for (in-process, or worker processes once
    a ``[media]`` table says so), started."""
    from softswitch.media.factory import make_media_controller

    media = make_media_controller(config)
    await media.start()
    return media


async def stop_media(media: MediaController) -> None:
    stop = getattr(media, "stop", None)
    if stop is not None:
        await stop()


def run_to_completion(coro: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never suspends (a close that only closes sockets) from
    synchronous code. One that would wait is abandoned: at shutdown the process exit
    closes whatever it held."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()


def open_cdr_store(config: Config) -> SqliteCdrStore:
    return SqliteCdrStore(state_database(config))
