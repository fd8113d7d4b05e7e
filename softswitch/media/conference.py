"""Rooms: the media side of conferences, lobbies and IVR, next to the MediaController.

:class:`~softswitch.media.controller.MediaController` pairs the two legs of a call.
Conferences need more than pairs, so they get this second small door instead of a
change to the first one: a *room* mixes any number of legs, each leg being a normal
allocated leg of its own call session (one SIP dialog, one session id, as for a
two-party call). The engine implements both interfaces; so do its process-pool
front-ends, with the same plain arguments.

How the SIP side drives it (a caller dials a conference number of tenant ``t``)::

    ep = media.allocate(sid, "caller")             # answer the INVITE with ep in the SDP
    # once the call is up (ACK), put the caller in the tenant's PIN lobby: a room that
    # does not mix (everyone in it hears only what is played to them)
    conf.create_room("t/lobby", mix=False)         # once; creating twice is harmless
    conf.join("t/lobby", sid, "caller", leg_media)  # LegMedia from the SDP answer
    conf.play(LegRef(sid, "caller"), prompt_path("enter_pin"))
    # DtmfReceived(sid, "caller", digit, ms) events arrive through the event handler
    # (RFC 4733 when negotiated, otherwise detected in the audio); collect the PIN
    conf.play(LegRef(sid, "caller"), prompt_path("wrong_pin"))   # if it is wrong
    conf.create_room("t/4711")                     # the conference, if not there yet
    conf.join("t/4711", sid, "caller", leg_media)   # moves the leg out of the lobby
    conf.play(RoomRef("t/4711"), join_tone())
    conf.mute(sid, "caller", True)                 # e.g. on "*6"; play "muted" to it
    conf.record(RoomRef("t/4711"), "/var/lib/softswitch/rec/4711.opus")
    media.update(sid, "caller", new_leg_media)     # re-INVITE: hold, codec, address
    media.release(sid)                             # BYE: the leg leaves its room
    conf.destroy_room("t/4711")                    # when the conference ends

Room ids are the caller's strings; put the tenant in them, rooms of different tenants
never meet. Events besides DtmfReceived and MediaTimeout: :class:`ActiveSpeaker`
(a room's loudest talker changed) and :class:`PlaybackDone` (a prompt finished, for IVR
sequencing). A leg on hold (its own SDP says ``sendonly``) is not heard in a conference
room (no music on hold into the conference) and hears nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from softswitch.media.controller import LegMedia, MediaEvent


@dataclass(frozen=True, slots=True)
class RoomRef:
    """Audio for everyone in a room."""

    room_id: str


@dataclass(frozen=True, slots=True)
class LegRef:
    """Audio for one leg only (it must be in a room)."""

    session_id: str
    leg: str


Target = RoomRef | LegRef
Audio = npt.NDArray[np.int16] | str | Path  # 8 kHz mono int16 samples, or a file


@dataclass(frozen=True, slots=True)
class RoomMember:
    session_id: str
    leg: str
    muted: bool
    codec: str


@dataclass(frozen=True, slots=True)
class RoomInfo:
    room_id: str
    mix: bool
    members: tuple[RoomMember, ...]
    speaker: tuple[str, str] | None  # (session_id, leg) of the loudest talker
    playing: tuple[int, ...]  # playback ids
    recording: tuple[int, ...]  # recording ids


@dataclass(frozen=True, slots=True)
class ActiveSpeaker(MediaEvent):
    """The loudest talker of a room changed (3 dB above the previous one)."""

    room_id: str
    session_id: str
    leg: str


@dataclass(frozen=True, slots=True)
class PlaybackDone(MediaEvent):
    """A playback ran to its end, or its target went away (``completed`` False)."""

    play_id: int
    completed: bool = True


class RoomError(KeyError):
    """Unknown room, or a leg that is not in a room."""


class ConferenceControl(Protocol):
    """Rooms of legs (module docstring). All methods are cheap and return at once."""

    def create_room(self, room_id: str, *, mix: bool = True) -> None:
        """A room; ``mix=False`` makes a room whose members hear only what is played
        to them (PIN lobby, IVR). Creating an existing room changes nothing."""

    def destroy_room(self, room_id: str) -> None:
        """Members leave (their legs stay allocated), playbacks and recordings stop."""

    def join(
        self, room_id: str, session_id: str, leg: str, media: LegMedia, *, muted: bool = False
    ) -> None:
        """Put an allocated leg in a room, with what it negotiated. A leg already in a
        room moves; a leg that was relayed to another leg stops being relayed."""

    def leave(self, session_id: str, leg: str) -> None:
        """Take a leg out of its room (nothing happens if it is in none)."""

    def mute(self, session_id: str, leg: str, on: bool) -> None:
        """A muted leg is not heard by the room but still hears it."""

    def play(self, target: Target, audio: Audio, *, loop: bool = False) -> int:
        """Play audio into a room or to one leg; returns a playback id."""

    def stop_play(self, play_id: int) -> None: ...

    def record(self, target: Target, path: str | Path) -> int:
        """Record a room (what a listener hears) or a leg (its voice and what it hears)
        to ``.wav`` or ``.opus``; returns a recording id."""

    def stop_record(self, record_id: int) -> None:
        """Finish the file. Destroying the room or releasing the leg does it too."""

    def send_dtmf(self, session_id: str, leg: str, digits: str, *, duration_ms: int = 100) -> None:
        """Send digits to a leg in a room: RFC 4733 events when it negotiated
        telephone-event, tones in its audio otherwise."""

    def list_rooms(self) -> list[RoomInfo]: ...
