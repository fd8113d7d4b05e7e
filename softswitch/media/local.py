"""The in-process media engine behind the MediaController interface, on asyncio.

Usage from the daemon::

    media = LocalMediaController("203.0.113.5", (16384, 32767), media_timeout=30.0)
    media.set_event_handler(b2bua.on_media_event)
    await media.start()          # after the event loop runs; binds nothing yet
    ...                          # allocate / connect / update / release from signalling
    await media.stop()           # closes every RTP socket

The driver is deliberately thin: the engine's epoll descriptor is one reader of the
event loop, and one timer paces the 20 ms ticks (:class:`~.pacer.TickPacer`). All
control calls are synchronous and cheap (binding two sockets at most), so signalling
calls them directly from its own callbacks on the same loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from softswitch.clock import Clock, SystemClock
from softswitch.media.controller import LegMedia, MediaEndpoint, MediaEvent
from softswitch.media.engine import EngineStats, MediaEngine
from softswitch.media.pacer import TickPacer

log = logging.getLogger(__name__)

TICK = 0.020
_MAX_PASSES = 2  # drain passes per wake-up: ticks wait at most this long behind a burst


class LocalMediaController:
    """:class:`~softswitch.media.controller.MediaController` on an in-process engine."""

    def __init__(
        self,
        host: str,
        port_range: tuple[int, int],
        *,
        media_timeout: float = 30.0,
        latch_window: float = 10.0,
        clock: Clock | None = None,
        tick: float = TICK,
        rcvbuf: int = 256 * 1024,
        max_events: int = 1024,
        advertised_host: str | None = None,
    ) -> None:
        self.clock = clock or SystemClock()
        self.engine = MediaEngine(
            host,
            port_range,
            media_timeout=media_timeout,
            latch_window=latch_window,
            rcvbuf=rcvbuf,
            max_events=max_events,
            advertised_host=advertised_host,
        )
        self._tick = tick
        self._max_events = max_events
        self._handler: Callable[[MediaEvent], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pacer: TickPacer | None = None

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.engine.fileno(), self._on_readable)
        self._pacer = TickPacer(self._tick, self.clock.now())
        self._arm()

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._loop is not None:
            self._loop.remove_reader(self.engine.fileno())
            self._loop = None
        self.engine.close()

    async def __aenter__(self) -> LocalMediaController:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- MediaController --------------------------------------------------------------

    def allocate(self, session_id: str, leg: str) -> MediaEndpoint:
        return self.engine.allocate(session_id, leg)

    def connect(self, session_id: str, legs: dict[str, LegMedia]) -> None:
        self.engine.connect(session_id, legs, self.clock.now())

    def update(self, session_id: str, leg: str, media: LegMedia) -> None:
        self.engine.update(session_id, leg, media, self.clock.now())

    def release(self, session_id: str) -> None:
        self.engine.release(session_id)

    def set_event_handler(self, handler: Callable[[MediaEvent], None]) -> None:
        self._handler = handler

    @property
    def stats(self) -> EngineStats:
        st = self.engine.stats
        if self._pacer is not None:
            st.late_ticks = self._pacer.late
            st.skipped_ticks = self._pacer.skipped
        return st

    # --- driver -------------------------------------------------------------------------

    def _on_readable(self) -> None:
        engine = self.engine
        now = self.clock.now()
        for _ in range(_MAX_PASSES):
            if engine.drain(now) < self._max_events:
                break
        if engine.events:
            self._dispatch()

    def _on_tick(self) -> None:
        self._timer = None
        pacer = self._pacer
        if pacer is None:
            return
        now = self.clock.now()
        for _ in range(pacer.due(now)):
            self.engine.tick(now)
        if self.engine.events:
            self._dispatch()
        self._arm()

    def _arm(self) -> None:
        if self._loop is None or self._pacer is None:
            return
        delay = self._pacer.next_deadline() - self.clock.now()
        self._timer = self._loop.call_later(max(delay, 0.0), self._on_tick)

    def _dispatch(self) -> None:
        events = self.engine.take_events()
        handler = self._handler
        if handler is None:
            return
        for event in events:
            try:
                handler(event)
            except Exception:  # a bad handler must not stop the media of every call
                log.exception("media event handler failed on %r", event)
