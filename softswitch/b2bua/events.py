"""Typed call events: the only thing the two legs of a call say to each other.

A leg turns the SIP it receives into these, and the events it is handed into SIP of its
own dialog (sippy's CCEvents). Nothing of one leg's signalling (Via, Contact, tags,
SDP addresses) can travel to the other leg, because no event carries any of it: media
travels as the negotiated result of that leg alone.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from softswitch.sip.sdp import MediaDirection, NegotiatedMedia


class Side(enum.Enum):
    """Who ended a call, for the CDR."""

    CALLER = "caller"
    CALLEE = "callee"
    SWITCH = "switch"


class Cause(enum.Enum):
    """Why a call ended (CDR ``hangup_cause``)."""

    NORMAL = "normal_clearing"
    BUSY = "user_busy"
    NO_ANSWER = "no_answer"
    CANCELLED = "cancelled"
    NOT_FOUND = "not_found"
    UNAVAILABLE = "unavailable"
    REJECTED = "rejected"
    FAILED = "failure"
    MAX_DURATION = "max_duration"
    SESSION_TIMER = "session_timer_expired"
    MEDIA_TIMEOUT = "media_timeout"
    NO_ACK = "ack_timeout"
    SHUTDOWN = "shutdown"
    ADMIN = "admin_hangup"
    MEDIA_FAILED = "media_failed"


class CallEvent:
    """Base of every call event."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Progress(CallEvent):
    """A callee branch is ringing (180) or reports progress (183). ``media`` is set when
    the branch answered our offer early, so the caller can hear early media."""

    status: int
    reason: str
    media: NegotiatedMedia | None = None


@dataclass(frozen=True, slots=True)
class Answer(CallEvent):
    """A callee branch answered (2xx); ``media`` is what that branch negotiated."""

    media: NegotiatedMedia | None


@dataclass(frozen=True, slots=True)
class Fail(CallEvent):
    """A callee branch gave a final non-2xx answer, or never answered (408)."""

    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class Hold(CallEvent):
    """The phone of the sending leg put the call on hold. ``direction`` is that phone's
    offered direction (sendonly: it may play music; inactive: nothing flows)."""

    direction: MediaDirection


@dataclass(frozen=True, slots=True)
class Resume(CallEvent):
    """The phone of the sending leg took the call off hold."""


@dataclass(frozen=True, slots=True)
class Update(CallEvent):
    """The sending leg renegotiated without a change of hold state (codec, address).
    Media is anchored, so the other leg needs no renegotiation; the media engine is
    told and relays or transcodes as needed."""

    media: NegotiatedMedia


@dataclass(frozen=True, slots=True)
class Hangup(CallEvent):
    """The call is over as far as the sending leg is concerned."""

    cause: Cause
    side: Side
