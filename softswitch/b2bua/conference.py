"""Conference bridges, the signalling side. Sans-I/O.

A call to a conference number is a call with one leg: the caller's, answered by the
switch itself, whose other end is a room of the media engine (the rooms interface of
:mod:`softswitch.media.conference`). Its life:

1. answer the INVITE at once with SDP negotiated for this leg alone (PCMU, PCMA, Opus,
   telephone-event: the room decodes everything, so no codec has to match another
   leg's);
2. on the ACK, put the leg in the tenant's lobby, a room that does not mix;
3. rooms with a PIN: play "enter PIN" and collect digits until ``#``, the length of the
   longest PIN, or a pause. Three wrong tries: "wrong PIN", goodbye tone, BYE. The
   moderator PIN marks the caller as a moderator;
4. join the conference room (a full room: busy tone, BYE), join tone to the room;
5. ``*6`` mutes and unmutes, with a prompt to that caller only;
6. BYE (or any end) leaves the room; the others hear the leave tone. When a room with
   a moderator PIN loses its last moderator, everybody else hears the goodbye tone and
   gets BYE.

A :class:`ConferenceCall` is a :class:`~softswitch.b2bua.call.Call` to the rest of the
B2BUA: it sits in the manager's table of calls, so session timers, the maximum call
length, the media timeout, admin hang-up, shutdown and CDRs work as for any call. The
:class:`Conferences` registry keeps the rooms in use and the snapshot the CLI reads.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from softswitch.b2bua.call import Call, CallState, leg_media
from softswitch.b2bua.events import Answer, CallEvent, Cause, Hangup, Hold, Resume, Side, Update
from softswitch.b2bua.leg import CallerLeg, Leg, LegState, LocalAddress, ServerTxKey
from softswitch.config import Conference
from softswitch.logs import get_logger
from softswitch.media.conference import Audio, ConferenceControl, LegRef, PlaybackDone, RoomRef
from softswitch.media.controller import DtmfReceived, MediaEvent
from softswitch.media.tones import join_tone, leave_tone, prompt_path, silence, tone
from softswitch.sip.message import Request
from softswitch.sip.sdp import SUPPORTED, Codec, SessionDescription
from softswitch.sip.transaction.events import Destination

if TYPE_CHECKING:
    from softswitch.b2bua.manager import CallManager

log = get_logger("softswitch.conferences")

LEG = "a"
PIN_TRIES = 3
FIRST_DIGIT_TIMEOUT = 15.0
"""Seconds from the "enter PIN" prompt to the first digit; counts as a wrong try."""
NEXT_DIGIT_TIMEOUT = 5.0
"""A pause this long after a digit ends the PIN as if ``#`` had been pressed."""
STAR_WINDOW = 3.0
"""``*`` then ``6`` within this many seconds toggles mute."""
PROMPT_LIMIT = 20.0
"""A prompt whose end the media side never reports is taken as finished after this."""
SNAPSHOT_NAME = "conferences.json"
# A room decodes every leg, so a conference leg takes any codec the engine can decode.
# Opus endpoints (browsers) send RFC 4733 events at the Opus clock rate (RFC 4733
# section 7.1.1), hence a second telephone-event.
ROOM_CODECS: tuple[Codec, ...] = (*SUPPORTED, Codec("telephone-event", 110, 48000, 1, "0-16"))


def goodbye_tone() -> np.ndarray:
    """Three falling notes: the switch is about to hang up."""
    return np.concatenate([silence(200), leave_tone(), silence(60), tone(440, 250)])


def full_tone() -> np.ndarray:
    """Busy signal (480 + 620 Hz, three bursts): the room is full."""
    burst = np.concatenate([tone((480, 620), 250), silence(250)])
    return np.concatenate([burst, burst, burst])


def lobby_id(tenant: str) -> str:
    return f"{tenant}/lobby"


def room_id(tenant: str, number: str) -> str:
    return f"{tenant}/conference/{number}"


class Phase(enum.Enum):
    ANSWERING = "answering"  # 200 sent, waiting for the ACK
    LOBBY = "pin"  # in the lobby, entering the PIN
    JOINED = "joined"
    LEAVING = "leaving"  # a last prompt plays, then BYE


class ConferenceLeg(CallerLeg):
    """The caller's leg of a conference call: more codecs, and it reports its ACK."""

    codecs = ROOM_CODECS

    def _after_acked(self) -> None:
        super()._after_acked()
        call = self.call
        if isinstance(call, ConferenceCall):
            call.acked()


@dataclass(eq=False)
class ActiveRoom:
    """A conference room with at least one participant."""

    tenant: str
    conference: Conference
    started_at: float  # wall clock
    members: dict[str, ConferenceCall] = field(default_factory=dict)
    recording: int | None = None
    recording_path: str | None = None
    closing: bool = False  # its last moderator left: everyone is being sent away

    @property
    def id(self) -> str:
        return room_id(self.tenant, self.conference.number)


class ConferenceCall(Call):
    """One caller of a conference (module docstring)."""

    def __init__(
        self,
        manager: CallManager,
        registry: Conferences,
        call_id: str,
        tenant: str,
        caller: str,
        conference: Conference,
        started_at: float,
        start_wall: float,
    ) -> None:
        super().__init__(
            manager, call_id, tenant, caller, conference.number, started_at, start_wall
        )
        self.registry = registry
        self.conference = conference
        self.phase = Phase.ANSWERING
        self.room: ActiveRoom | None = None
        self.moderator = False
        self.muted = False
        self.joined_wall: float | None = None
        self.digits = ""
        self.tries = 0
        self._star_at: float | None = None
        self._queue: list[Audio] = []
        self._then: Callable[[], None] | None = None
        self._play_id: int | None = None

    def __repr__(self) -> str:
        return (
            f"<ConferenceCall {self.id} {self.tenant} {self.caller}->{self.callee} "
            f"{self.phase.value}>"
        )

    @property
    def control(self) -> ConferenceControl:
        conf = self.registry.control()
        assert conf is not None  # checked before the call was answered
        return conf

    # -- set-up -----------------------------------------------------------------------

    def answer(self) -> bool:
        """Answer the caller's INVITE; False when the call could not be answered (the
        leg has replied with the reason and the call has ended)."""
        a = self.a
        assert a is not None
        a.handle(Answer(None))
        if a.state is not LegState.ACCEPTED or self.state is CallState.ENDED:
            if self.state is not CallState.ENDED:
                self.end(Cause.MEDIA_FAILED, Side.SWITCH, 488)
            return False
        self.state = CallState.ANSWERED
        self.answer_wall = self.manager.wall()
        self.manager.timers.schedule(
            self, "max_duration", self.manager.now + self.manager.settings.max_call_seconds
        )
        return True

    def acked(self) -> None:
        """The caller ACKed our 200: the media path is there, the lobby can begin."""
        if self.phase is not Phase.ANSWERING or self.state is not CallState.ANSWERED:
            return
        a = self.a
        assert a is not None
        if a.media is None:
            self.hangup(Cause.MEDIA_FAILED)
            return
        lobby = lobby_id(self.tenant)
        try:
            self.control.create_room(lobby, mix=False)
            self.control.join(lobby, self.id, LEG, leg_media(a.media))
        except (KeyError, ValueError) as exc:
            log.warning("conference_lobby_failed", call=self.id, error=str(exc))
            self.hangup(Cause.MEDIA_FAILED)
            return
        self.phase = Phase.LOBBY
        self.registry.changed()
        if self.conference.pin:
            self._ask_pin()
        else:
            self._join(moderator=False)

    # -- the PIN ------------------------------------------------------------------------

    def _ask_pin(self) -> None:
        self.digits = ""
        self._say(prompt_path("enter_pin"))
        self._arm_digit_timer(FIRST_DIGIT_TIMEOUT)

    def _arm_digit_timer(self, seconds: float) -> None:
        self.manager.timers.schedule(self, "pin", self.manager.now + seconds)

    def _entry_complete(self) -> bool:
        """Whether the digits so far can only be meant as they are: as long as the
        longest PIN, or one PIN that no other PIN goes on from."""
        digits = self.digits
        pins = [p for p in (self.conference.pin, self.conference.moderator_pin) if p]
        if len(digits) >= max(len(p) for p in pins):
            return True
        return digits in pins and not any(p != digits and p.startswith(digits) for p in pins)

    def on_dtmf(self, digit: str) -> None:
        if self.state is not CallState.ANSWERED:
            return
        if self.phase is Phase.LOBBY and self.conference.pin:
            # Typing over the prompt is normal: it stops.
            self._say()
            if digit == "#":
                self._check_pin()
                return
            if not digit.isdigit():
                return
            self.digits += digit
            if self._entry_complete():
                self._check_pin()
            else:
                self._arm_digit_timer(NEXT_DIGIT_TIMEOUT)
        elif self.phase is Phase.JOINED:
            now = self.manager.now
            if digit == "*":
                self._star_at = now
            elif digit == "6" and self._star_at is not None and now - self._star_at <= STAR_WINDOW:
                self._star_at = None
                self.set_muted(not self.muted)
            else:
                self._star_at = None

    def _check_pin(self) -> None:
        self.manager.timers.cancel(self, "pin")
        entered, self.digits = self.digits, ""
        conf = self.conference
        if entered and entered == conf.pin:
            self._join(moderator=False)
            return
        if entered and conf.moderator_pin and entered == conf.moderator_pin:
            self._join(moderator=True)
            return
        self.tries += 1
        log.info(
            "conference_wrong_pin",
            call=self.id,
            tenant=self.tenant,
            conference=conf.number,
            caller=self.caller,
            tries=self.tries,
        )
        wrong = prompt_path("wrong_pin")
        if self.tries >= PIN_TRIES:
            self.phase = Phase.LEAVING
            self._say(wrong, goodbye_tone(), then=lambda: self.hangup(Cause.REJECTED))
        else:
            self._say(wrong, prompt_path("enter_pin"))
            self._arm_digit_timer(FIRST_DIGIT_TIMEOUT)

    # -- the room -----------------------------------------------------------------------

    def _join(self, *, moderator: bool) -> None:
        a = self.a
        assert a is not None and a.media is not None
        room, created = self.registry.room_for(self.tenant, self.conference)
        if len(room.members) >= room.conference.max_participants:
            log.info(
                "conference_full",
                call=self.id,
                tenant=self.tenant,
                conference=self.conference.number,
                caller=self.caller,
            )
            self.phase = Phase.LEAVING
            self._say(full_tone(), then=lambda: self.hangup(Cause.BUSY))
            return
        conf = self.control
        try:
            if created:
                conf.create_room(room.id)
            conf.join(room.id, self.id, LEG, leg_media(a.media))
        except (KeyError, ValueError) as exc:
            log.warning("conference_join_failed", call=self.id, error=str(exc))
            self.registry.drop_if_empty(room)
            self.hangup(Cause.MEDIA_FAILED)
            return
        if created:
            self.registry.start_recording(room)
        room.members[self.id] = self
        room.closing = False
        self.room = room
        self.phase = Phase.JOINED
        self.moderator = moderator
        self.joined_wall = self.manager.wall()
        self._play(RoomRef(room.id), join_tone())
        log.info(
            "conference_joined",
            call=self.id,
            tenant=self.tenant,
            conference=self.conference.number,
            caller=self.caller,
            moderator=moderator,
            participants=len(room.members),
        )
        self.registry.changed()

    def set_muted(self, on: bool) -> None:
        if self.phase is not Phase.JOINED or on == self.muted:
            return
        try:
            self.control.mute(self.id, LEG, on)
        except KeyError as exc:
            log.warning("conference_mute_failed", call=self.id, error=str(exc))
            return
        self.muted = on
        self._say(prompt_path("muted" if on else "unmuted"))
        self.registry.changed()

    def _leave_room(self) -> None:
        room, self.room = self.room, None
        if room is None:
            return
        room.members.pop(self.id, None)
        conf = self.registry.control()
        if conf is not None:
            try:
                conf.leave(self.id, LEG)
            except KeyError:
                pass
        if not room.members:
            self.registry.close_room(room)
        elif room.closing:
            pass
        elif (
            self.moderator
            and room.conference.moderator_pin
            and not any(m.moderator for m in room.members.values())
        ):
            room.closing = True
            log.info(
                "conference_ended_by_moderator",
                tenant=room.tenant,
                conference=room.conference.number,
                remaining=len(room.members),
            )
            for other in list(room.members.values()):
                other.send_away()
        else:
            self._play(RoomRef(room.id), leave_tone())
        self.registry.changed()

    def send_away(self) -> None:
        """The room is closing: goodbye tone, then BYE."""
        if self.state is not CallState.ANSWERED or self.phase is Phase.LEAVING:
            return
        self.phase = Phase.LEAVING
        self._say(goodbye_tone(), then=lambda: self.hangup(Cause.NORMAL))

    # -- prompts ------------------------------------------------------------------------

    def _play(self, target: RoomRef | LegRef, audio: Audio) -> int | None:
        conf = self.registry.control()
        if conf is None:
            return None
        try:
            return conf.play(target, audio)
        except (KeyError, ValueError, OSError) as exc:
            log.warning("conference_play_failed", call=self.id, error=str(exc))
            return None

    def _say(self, *items: Audio, then: Callable[[], None] | None = None) -> None:
        """Play ``items`` to this caller one after another, then run ``then``. Stops
        whatever this caller was being told; with no items, only that."""
        self._stop_current()
        self._queue = list(items)
        self._then = then
        if items:
            self._next_prompt()

    def _stop_current(self) -> None:
        self.manager.timers.cancel(self, "prompt")
        if self._play_id is None:
            return
        play_id, self._play_id = self._play_id, None
        self.registry.forget_play(play_id)
        conf = self.registry.control()
        if conf is not None:
            try:
                conf.stop_play(play_id)
            except KeyError:
                pass

    def _next_prompt(self) -> None:
        while self._queue:
            audio = self._queue.pop(0)
            play_id = self._play(LegRef(self.id, LEG), audio)
            if play_id is not None:
                self._play_id = play_id
                self.registry.own_play(play_id, self)
                self.manager.timers.schedule(self, "prompt", self.manager.now + PROMPT_LIMIT)
                return
        self._play_id = None
        self.manager.timers.cancel(self, "prompt")
        then, self._then = self._then, None
        if then is not None:
            then()

    def on_play_done(self, play_id: int) -> None:
        if play_id == self._play_id and self.state is not CallState.ENDED:
            self._play_id = None
            self._next_prompt()

    # -- events, timers and the end ------------------------------------------------------

    def on_event(self, leg: Leg, event: CallEvent) -> None:
        if isinstance(event, Hangup):
            if self.state is CallState.ANSWERED:
                status = 200
            elif event.cause is Cause.CANCELLED:
                status = 487
            else:
                status = 488 if event.cause is Cause.MEDIA_FAILED else 500
            self.end(event.cause, event.side, status)
        elif isinstance(event, (Hold, Resume, Update)):
            self.media_changed(leg)

    def media_changed(self, leg: Leg) -> None:
        """A re-INVITE or UPDATE changed the caller's media (hold, codec, address)."""
        a = self.a
        if a is None or a.media is None or self.state is not CallState.ANSWERED:
            return
        if self.phase is Phase.ANSWERING:
            return  # the leg joins the lobby on the ACK, with what it has then
        try:
            self.manager.media.update(self.id, LEG, leg_media(a.media))
        except (KeyError, ValueError) as exc:
            log.warning("conference_media_update_failed", call=self.id, error=str(exc))
            self.hangup(Cause.MEDIA_FAILED)

    def on_timer(self, kind: str, now: float) -> None:
        if kind == "pin" and self.phase is Phase.LOBBY:
            self._check_pin()
        elif kind == "prompt" and self._play_id is not None:
            # The end of the prompt never came: go on as if it had.
            self._stop_current()
            self._next_prompt()
        else:
            super().on_timer(kind, now)

    def hangup(self, cause: Cause, side: Side = Side.SWITCH) -> None:
        if self.state is CallState.ENDED:
            return
        answered = self.state is CallState.ANSWERED
        if self.a is not None:
            self.a.handle(Hangup(cause, side))
        self.end(cause, side, 200 if answered else 503)

    def end(self, cause: Cause, side: Side, status: int, *, disposition: str | None = None) -> None:
        if self.state is CallState.ENDED:
            return
        self._queue, self._then = [], None
        if self._play_id is not None:
            self.registry.forget_play(self._play_id)
            self._play_id = None
        was = self.phase
        self.phase = Phase.LEAVING
        self._leave_room()
        if was is Phase.LOBBY or was is Phase.LEAVING:
            self.registry.changed()
        super().end(cause, side, status, disposition=disposition)

    # -- what the operator sees -----------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        a = self.a
        codec = a.media.codec.name if a is not None and a.media is not None else None
        return {
            "call": self.id,
            "caller": self.caller,
            "joined_at": self.joined_wall,
            "moderator": self.moderator,
            "muted": self.muted,
            "codec": codec,
        }


class Conferences:
    """The rooms in use, for all tenants; owned by the CallManager."""

    def __init__(self, manager: CallManager) -> None:
        self.manager = manager
        self.rooms: dict[str, ActiveRoom] = {}
        self._plays: dict[int, ConferenceCall] = {}
        self.on_change: Callable[[], None] | None = None
        """Called whenever rooms or participants change (the snapshot writer)."""

    def control(self) -> ConferenceControl | None:
        """The media side's rooms, when the media controller in use has them."""
        media = self.manager.media
        return media if hasattr(media, "create_room") else None  # type: ignore[return-value]

    # -- new calls ----------------------------------------------------------------------

    def new_call(
        self,
        call: Call,
        conference: Conference,
        key: ServerTxKey,
        invite: Request,
        offer: SessionDescription | None,
        local: LocalAddress,
        dest: Destination,
    ) -> ConferenceCall | None:
        """Answer a call to ``conference``; the call to keep track of, or None when it
        was refused or could not be answered (the caller has its answer, the CDR is
        written where the attempt counts)."""
        manager = self.manager
        conf_call = ConferenceCall(
            manager,
            self,
            call.id,
            call.tenant,
            call.caller,
            conference,
            call.started_at,
            call.start_wall,
        )
        a = ConferenceLeg(manager, conf_call, key, invite, offer, local, dest)
        conf_call.a = a
        if self.control() is None:
            log.warning("conference_unavailable", reason="the media engine has no rooms")
            self._refuse(conf_call, 503, "Service Unavailable", Cause.MEDIA_FAILED)
            return None
        try:
            a.endpoint = manager.media.allocate(call.id, LEG)
        except Exception as exc:  # ports exhausted or cannot bind: the caller must know
            log.warning("media_allocate_failed", call=call.id, error=str(exc))
            self._refuse(conf_call, 503, "Service Unavailable", Cause.MEDIA_FAILED)
            return None
        refusal = a.start()
        if refusal is not None:
            # 422: the caller retries with a longer session interval; not a call attempt.
            manager.respond(key, refusal)
            manager.media.release(call.id)
            return None
        log.info(
            "conference_call",
            call=call.id,
            tenant=call.tenant,
            caller=call.caller,
            conference=conference.number,
        )
        if not conf_call.answer():
            return None
        return conf_call

    def _refuse(self, call: ConferenceCall, status: int, reason: str, cause: Cause) -> None:
        a = call.a
        assert a is not None
        self.manager.respond(a.server_key, a._response(a.invite, status, reason))
        call.end(cause, Side.SWITCH, status, disposition="failed")

    # -- media events -------------------------------------------------------------------

    def on_media_event(self, event: MediaEvent) -> None:
        if isinstance(event, DtmfReceived):
            call = self.manager.calls.get(event.session_id)
            if isinstance(call, ConferenceCall) and event.leg == LEG:
                call.on_dtmf(event.digit)
        elif isinstance(event, PlaybackDone):
            owner = self._plays.pop(event.play_id, None)
            if owner is not None:
                owner.on_play_done(event.play_id)

    def own_play(self, play_id: int, call: ConferenceCall) -> None:
        self._plays[play_id] = call

    def forget_play(self, play_id: int) -> None:
        self._plays.pop(play_id, None)

    # -- rooms --------------------------------------------------------------------------

    def room_for(self, tenant: str, conference: Conference) -> tuple[ActiveRoom, bool]:
        """The room of ``conference``, and whether it was made just now."""
        rid = room_id(tenant, conference.number)
        room = self.rooms.get(rid)
        if room is not None:
            return room, False
        room = self.rooms[rid] = ActiveRoom(tenant, conference, self.manager.wall())
        return room, True

    def drop_if_empty(self, room: ActiveRoom) -> None:
        if not room.members and self.rooms.get(room.id) is room:
            del self.rooms[room.id]

    def start_recording(self, room: ActiveRoom) -> None:
        if not room.conference.record:
            return
        conf = self.control()
        if conf is None:
            return
        stamp = datetime.fromtimestamp(self.manager.wall(), UTC).strftime("%Y%m%dT%H%M%SZ")
        folder = Path(self.manager.config.state_dir) / "recordings" / room.tenant
        path = folder / f"{room.conference.number}-{stamp}.wav"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            room.recording = conf.record(RoomRef(room.id), path)
        except (OSError, KeyError, ValueError) as exc:
            log.warning("conference_record_failed", room=room.id, error=str(exc))
            return
        room.recording_path = str(path)
        log.info("conference_recording", room=room.id, path=str(path))

    def close_room(self, room: ActiveRoom) -> None:
        """The last participant left: the room and its recording end."""
        if self.rooms.get(room.id) is room:
            del self.rooms[room.id]
        conf = self.control()
        if conf is not None:
            try:
                conf.destroy_room(room.id)
            except KeyError:
                pass
        log.info("conference_closed", tenant=room.tenant, conference=room.conference.number)

    def changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # the snapshot is for people; calls must go on without it
                log.exception("conference_snapshot_failed")

    # -- what operators see ---------------------------------------------------------------

    def waiting(self) -> list[ConferenceCall]:
        """Callers in a lobby, entering a PIN."""
        return [
            c
            for c in self.manager.calls.values()
            if isinstance(c, ConferenceCall) and c.phase is Phase.LOBBY
        ]

    def snapshot(self, wall: float | None = None) -> dict[str, Any]:
        """Rooms, participants and callers in the lobbies, JSON-ready."""
        rooms = []
        for room in sorted(self.rooms.values(), key=lambda r: (r.tenant, r.conference.number)):
            rooms.append(
                {
                    "tenant": room.tenant,
                    "number": room.conference.number,
                    "name": room.conference.name,
                    "started_at": room.started_at,
                    "max_participants": room.conference.max_participants,
                    "recording": room.recording_path,
                    "participants": [m.describe() for m in room.members.values()],
                }
            )
        waiting = [
            {
                "tenant": c.tenant,
                "number": c.conference.number,
                "caller": c.caller,
                "since": c.answer_wall,
            }
            for c in self.waiting()
        ]
        return {
            "written_at": self.manager.wall() if wall is None else wall,
            "rooms": rooms,
            "waiting": waiting,
        }
