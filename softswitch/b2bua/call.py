"""A call: the caller's leg, one leg per contact of the callee, and the rules that join
them. Sans-I/O.

The Call forwards typed events between legs and decides what only it can decide: which
branch wins (the first 2xx), which branches to cancel, the answer the caller gets when
every branch failed, the ring timeout, the maximum call length, and the times and
outcome written to the call's CDR.
"""

from __future__ import annotations

import enum
import logging
import math
from typing import TYPE_CHECKING

from softswitch.b2bua.events import (
    Answer,
    CallEvent,
    Cause,
    Fail,
    Hangup,
    Hold,
    Progress,
    Resume,
    Side,
    Update,
)
from softswitch.b2bua.leg import CalleeLeg, CallerLeg, Leg, LegState
from softswitch.media.controller import Codec, Direction, LegMedia
from softswitch.sip.sdp import NegotiatedMedia
from softswitch.store.cdr import CallRecord

if TYPE_CHECKING:
    from softswitch.b2bua.manager import CallManager

log = logging.getLogger("softswitch.b2bua")


class CallState(enum.Enum):
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


def leg_media(n: NegotiatedMedia) -> LegMedia:
    """A leg's negotiated stream for the media engine. The engine takes the phone's own
    direction; NegotiatedMedia holds the switch's view, hence the reversal."""
    c, te = n.codec, n.telephone_event
    return LegMedia(
        n.remote_host,
        n.remote_port,
        Codec(c.name, c.payload_type, c.clock_rate, c.channels, c.fmtp),
        Codec(te.name, te.payload_type, te.clock_rate, te.channels, te.fmtp) if te else None,
        Direction(n.direction.reversed().value),
        n.ptime_ms,
    )


# Statuses that end the whole attempt at once, whatever other branches do (RFC 3261
# 16.7 step 5: a 6xx means the callee will not be reached anywhere).
_GLOBAL_FAILURE = frozenset({600, 603, 604, 606})


def _failure_rank(status: int) -> int:
    """Which branch's failure the caller hears: busy first, then other 4xx, then 5xx."""
    if status in (486, 600):
        return 0
    if 400 <= status < 500 and status not in (408, 401, 407):
        return 1
    if status >= 600:
        return 2
    return 3


def caller_status(status: int, reason: str) -> tuple[int, str]:
    """What the caller is told for a callee's final answer. Authentication challenges,
    redirects and our own timeouts are not the caller's business: 480."""
    if status in (401, 407, 408, 503) or status < 400:
        return 480, "Temporarily Unavailable"
    return status, reason


def disposition_of(status: int) -> tuple[str, Cause]:
    if status in (486, 600):
        return "busy", Cause.BUSY
    if status in (408, 480, 487):
        return "no_answer", Cause.NO_ANSWER
    if status in (603, 403):
        return "failed", Cause.REJECTED
    if status in (404, 604):
        return "failed", Cause.NOT_FOUND
    return "failed", Cause.FAILED


class Call:
    def __init__(
        self,
        manager: CallManager,
        call_id: str,
        tenant: str,
        caller: str,
        callee: str,
        started_at: float,
        start_wall: float,
    ) -> None:
        self.manager = manager
        self.id = call_id
        self.tenant = tenant
        self.caller = caller
        self.callee = callee
        self.started_at = started_at
        self.start_wall = start_wall
        self.answer_wall: float | None = None
        self.state = CallState.RINGING
        self.a: CallerLeg | None = None
        self.branches: list[CalleeLeg] = []
        self.winner: CalleeLeg | None = None
        self.timers: dict[str, int] = {}
        self._best_failure: tuple[int, str] | None = None
        self._early: CalleeLeg | None = None
        self._media_connected = False

    def __repr__(self) -> str:
        return f"<Call {self.id} {self.tenant} {self.caller}->{self.callee} {self.state.value}>"

    # -- set-up -----------------------------------------------------------------------

    def ring(self, ring_timeout: float) -> None:
        self.manager.timers.schedule(self, "ring", self.started_at + ring_timeout)

    # -- events from the legs -----------------------------------------------------------

    def on_event(self, leg: Leg, event: CallEvent) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%r: %r from %r", self, event, leg)
        if leg is self.a:
            self._from_caller(event)
        else:
            assert isinstance(leg, CalleeLeg)
            self._from_branch(leg, event)

    def _from_caller(self, event: CallEvent) -> None:
        a = self.a
        assert a is not None
        if isinstance(event, Hangup):
            if self.state is CallState.RINGING:
                self._cancel_branches(None)
            elif self.winner is not None:
                self.winner.handle(Hangup(event.cause, event.side))
            self.end(event.cause, event.side, 487 if event.cause is Cause.CANCELLED else 200)
        elif isinstance(event, (Hold, Resume)):
            self.media_changed(a)
            if self.winner is not None:
                self.winner.handle(event)
        elif isinstance(event, Update):
            self.media_changed(a)

    def _from_branch(self, leg: CalleeLeg, event: CallEvent) -> None:
        a = self.a
        assert a is not None
        if isinstance(event, Answer):
            if self.state is not CallState.RINGING:
                # Another branch won, or the caller is gone: this one is not wanted.
                leg.handle(Hangup(Cause.NORMAL, Side.SWITCH))
                return
            self._answered(leg)
        elif isinstance(event, Progress):
            if self.state is not CallState.RINGING:
                return
            if event.media is not None and self._early is None:
                self._early = leg
            a.handle(event)
        elif isinstance(event, Fail):
            self._branch_failed(leg, event)
        elif isinstance(event, Hangup):
            if leg is not self.winner:
                return
            if self.state is CallState.ANSWERED:
                a.handle(Hangup(event.cause, event.side))
                self.end(event.cause, event.side, 200)
        elif isinstance(event, (Hold, Resume)):
            if leg is self.winner:
                self.media_changed(leg)
                a.handle(event)
        elif isinstance(event, Update):
            if leg is self.winner:
                self.media_changed(leg)

    def _answered(self, leg: CalleeLeg) -> None:
        a = self.a
        assert a is not None
        self.winner = leg
        self._cancel_branches(leg)
        self.manager.timers.cancel(self, "ring")
        a.handle(Answer(leg.media))
        if a.state is not LegState.ACCEPTED:
            return  # the caller could not be answered; the leg said why
        self.state = CallState.ANSWERED
        self.answer_wall = self.manager.wall()
        self.manager.timers.schedule(
            self, "max_duration", self.manager.now + self.manager.settings.max_call_seconds
        )
        self.media_changed(leg)

    def _branch_failed(self, leg: CalleeLeg, event: Fail) -> None:
        if leg is self.winner:
            # The winner's 2xx could not be used (no SDP): the call cannot go on.
            if self.a is not None:
                self.a.handle(Hangup(Cause.MEDIA_FAILED, Side.SWITCH))
            self.end(Cause.MEDIA_FAILED, Side.SWITCH, 502)
            return
        if self.state is not CallState.RINGING:
            return
        status = event.status
        best = self._best_failure
        if best is None or _failure_rank(status) < _failure_rank(best[0]):
            self._best_failure = (status, event.reason)
        if status in _GLOBAL_FAILURE:
            self._cancel_branches(None)
        elif any(b.state in (LegState.CALLING, LegState.PROCEEDING) for b in self.branches):
            return
        self._fail(*(self._best_failure or (480, "Temporarily Unavailable")))

    def _fail(self, status: int, reason: str) -> None:
        """Every branch failed: tell the caller, write the CDR."""
        assert self.a is not None
        to_caller = caller_status(status, reason)
        self.a.handle(Fail(*to_caller))
        disposition, cause = disposition_of(status)
        self.end(cause, Side.CALLEE, to_caller[0], disposition=disposition)

    def _cancel_branches(self, keep: CalleeLeg | None) -> None:
        for b in self.branches:
            if b is not keep:
                b.handle(Hangup(Cause.CANCELLED, Side.SWITCH))

    # -- media ------------------------------------------------------------------------

    def media_changed(self, leg: Leg) -> None:
        """A leg's negotiated media changed: (re)plan the session in the engine."""
        a = self.a
        b = self.winner or self._early
        if a is None or b is None or a.media is None:
            return
        b_media = b.media or b.early_media
        if b_media is None:
            return
        try:
            self.manager.media.connect(self.id, {"a": leg_media(a.media), "b": leg_media(b_media)})
        except (ValueError, KeyError) as exc:
            log.warning("media plan failed for %r: %s", self, exc)
            self.hangup(Cause.MEDIA_FAILED)
            return
        self._media_connected = True

    # -- timers and the switch's own decisions -------------------------------------------

    def on_timer(self, kind: str, now: float) -> None:
        if kind == "ring" and self.state is CallState.RINGING:
            assert self.a is not None
            self._cancel_branches(None)
            self.a.handle(Hangup(Cause.NO_ANSWER, Side.SWITCH))
            self.end(Cause.NO_ANSWER, Side.SWITCH, 480, disposition="no_answer")
        elif kind == "max_duration" and self.state is CallState.ANSWERED:
            self.hangup(Cause.MAX_DURATION)

    def hangup(self, cause: Cause, side: Side = Side.SWITCH) -> None:
        """End the call from the switch: BYE (or CANCEL and 503/487) on every leg."""
        if self.state is CallState.ENDED:
            return
        ringing = self.state is CallState.RINGING
        if self.a is not None:
            self.a.handle(Hangup(cause, side))
        if ringing:
            self._cancel_branches(None)
        elif self.winner is not None:
            self.winner.handle(Hangup(cause, side))
        self.end(cause, side, 503 if ringing else 200)

    def on_media_timeout(self) -> None:
        if self.state is CallState.ANSWERED:
            self.hangup(Cause.MEDIA_TIMEOUT)

    # -- the end ------------------------------------------------------------------------

    def end(self, cause: Cause, side: Side, status: int, *, disposition: str | None = None) -> None:
        if self.state is CallState.ENDED:
            return
        answered = self.answer_wall is not None
        self.state = CallState.ENDED
        self.manager.timers.cancel_all(self)
        end_wall = self.manager.wall()
        if disposition is None:
            if answered:
                disposition = "answered"
            elif cause is Cause.CANCELLED:
                disposition = "cancelled"
            elif cause is Cause.NO_ANSWER:
                disposition = "no_answer"
            else:
                disposition = "failed"
        billable = 0
        if self.answer_wall is not None:
            billable = max(0, math.ceil(end_wall - self.answer_wall - 1e-6))
        assert self.a is not None
        record = CallRecord(
            id=self.id,
            tenant=self.tenant,
            caller=self.caller,
            callee=self.callee,
            start_time=self.start_wall,
            answer_time=self.answer_wall,
            end_time=end_wall,
            billable_seconds=billable,
            disposition=disposition,
            hangup_cause=cause.value,
            hangup_side=side.value,
            sip_status=200 if answered else status,
            caller_call_id=self.a.invite.call_id,
        )
        self.manager.call_ended(self, record)
