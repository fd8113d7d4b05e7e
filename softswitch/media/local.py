"""The in-process media engine behind the MediaController interface, on asyncio.

Usage from the daemon::

    media = LocalMediaController("203.0.113.5", (16384, 32767), media_timeout=30.0)
    media.set_event_handler(b2bua.on_media_event)
    await media.start()          # after the event loop runs; binds nothing yet
    ...                          # allocate / connect / update / release from signalling
    await media.stop()           # closes every RTP socket

It is also the :class:`~softswitch.media.conference.ConferenceControl` of that engine
(``create_room``, ``join``, ``mute``, ``play``, ``record`` ...; see that module for how
signalling drives a conference).

The driver is deliberately thin: the engine's epoll descriptor is one reader of the
event loop, and one timer paces the 20 ms ticks (:class:`~.pacer.TickPacer`). All
control calls are synchronous and cheap (binding two sockets at most), so signalling
calls them directly from its own callbacks on the same loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from softswitch.clock import Clock, SystemClock
from softswitch.media.conference import Audio, RoomInfo, Target
from softswitch.media.controller import LegMedia, MediaEndpoint, MediaEvent
from softswitch.media.engine import EngineStats, MediaEngine
from softswitch.media.pacer import TickPacer

log = logging.getLogger(__name__)

TICK = 0.020
_MAX_PASSES = 2  # drain passes per wake-up: ticks wait at most this long behind a burst


class LocalMediaController:
    """:class:`~softswitch.media.controller.MediaController` and
    :class:`~softswitch.media.conference.ConferenceControl` on an in-process engine."""

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
        batch_send: bool = False,
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
            batch_send=batch_send,
        )
        self._tick = tick
        self._max_events = max_events
        self._handler: Callable[[MediaEvent], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._poll_timer: asyncio.TimerHandle | None = None
        self._poll_cost = 0.0  # how long a read of the rooms' sockets takes, averaged
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
        for timer in (self._timer, self._poll_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._poll_timer = None
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

    # --- ConferenceControl ------------------------------------------------------------

    def create_room(self, room_id: str, *, mix: bool = True) -> None:
        self.engine.create_room(room_id, mix=mix)

    def destroy_room(self, room_id: str) -> None:
        self.engine.destroy_room(room_id)
        self._dispatch_soon()

    def join(
        self, room_id: str, session_id: str, leg: str, media: LegMedia, *, muted: bool = False
    ) -> None:
        self.engine.join(room_id, session_id, leg, media, self.clock.now(), muted=muted)

    def leave(self, session_id: str, leg: str) -> None:
        self.engine.leave(session_id, leg)
        self._dispatch_soon()

    def mute(self, session_id: str, leg: str, on: bool) -> None:
        self.engine.mute(session_id, leg, on)

    def play(self, target: Target, audio: Audio, *, loop: bool = False) -> int:
        return self.engine.play(target, audio, loop=loop)

    def stop_play(self, play_id: int) -> None:
        self.engine.stop_play(play_id)
        self._dispatch_soon()

    def record(self, target: Target, path: str | Path) -> int:
        return self.engine.record(target, path)

    def stop_record(self, record_id: int) -> None:
        self.engine.stop_record(record_id)

    def send_dtmf(self, session_id: str, leg: str, digits: str, *, duration_ms: int = 100) -> None:
        self.engine.send_dtmf(session_id, leg, digits, duration_ms=duration_ms)

    def list_rooms(self) -> list[RoomInfo]:
        return self.engine.list_rooms()

    def _dispatch_soon(self) -> None:
        # Control calls may produce events (a playback ended early); they reach the
        # handler from the loop, not from inside the caller's call.
        if self.engine.events and self._loop is not None:
            self._loop.call_soon(self._dispatch)

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
        pacer = self._pacer
        if pacer is not None and self.clock.now() >= pacer.next_deadline():
            # Under load the loop goes from one readable callback to the next and the
            # tick's timer would wait its turn behind them: run the tick here instead.
            self._on_tick()
        elif engine.events:
            self._dispatch()

    def _on_tick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
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
        if self._poll_timer is None and self.engine.room_legs:
            self._arm_poll()

    def _arm_poll(self) -> None:
        if self._loop is None or self._pacer is None:
            return
        now = self.clock.now()
        # The last read before a tick goes as close to it as is safe, so that the tick
        # itself has little left to read and its packets leave at a steady time.
        last = self._pacer.next_deadline() - 2 * self._poll_cost - 0.0005
        at = now + self.engine.room_poll
        if at > last > now:
            at = last
        self._poll_timer = self._loop.call_later(at - now, self._on_room_poll)

    def _on_room_poll(self) -> None:
        # Rooms' packets are read in bulk every few milliseconds rather than as each
        # arrives (one wake-up for hundreds of sockets), and at every tick.
        self._poll_timer = None
        engine, pacer = self.engine, self._pacer
        if not engine.room_legs or pacer is None:
            return
        now = self.clock.now()
        if pacer.next_deadline() - now < 2 * self._poll_cost + 0.0005:
            # A read now could still be running when the tick is due, and the tick
            # reads everything anyway: wait for the tick.
            if self._loop is not None:
                delay = pacer.next_deadline() - now + engine.room_poll
                self._poll_timer = self._loop.call_later(delay, self._on_room_poll)
            return
        engine.drain_rooms(now)
        took = self.clock.now() - now
        self._poll_cost += (took - self._poll_cost) / 8
        if engine.events:
            self._dispatch()
        self._arm_poll()

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
