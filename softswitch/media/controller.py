"""The one door between signalling and media.

The B2BUA never touches RTP: it asks a MediaController for ports, tells it what each
leg negotiated, and hears back typed media events. Everything crossing this door is a
plain dataclass, so the media side can live in this process or in worker processes
behind a local control channel without the signalling side noticing.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class Direction(enum.Enum):
    """The direction the phone declared for its leg (its own SDP attribute, RFC 3264
    section 5.1), not the switch's. The SDP layer reports directions from the switch's
    side (``NegotiatedMedia.direction``); the B2BUA reverses them into this."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"  # the phone only sends (it put the call on hold): send it nothing
    RECVONLY = "recvonly"  # the phone only receives: expect nothing from it
    INACTIVE = "inactive"  # neither way


@dataclass(frozen=True, slots=True)
class Codec:
    """A payload format as negotiated on one leg: the payload type is that leg's."""

    name: str  # "PCMU", "PCMA", "opus", "telephone-event"
    payload_type: int
    clock_rate: int = 8000
    channels: int = 1
    fmtp: str = ""


@dataclass(frozen=True, slots=True)
class MediaEndpoint:
    """The switch's own RTP address for one leg (RTCP on port + 1)."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class LegMedia:
    """What one leg negotiated: where the phone said it receives (may be replaced by
    latching to the address its packets really come from), what to send it, and how."""

    remote_host: str | None
    remote_port: int | None
    codec: Codec
    telephone_event: Codec | None = None
    direction: Direction = Direction.SENDRECV
    ptime_ms: int = 20


class MediaEvent:
    __slots__ = ()


@dataclass(frozen=True, slots=True)
class MediaTimeout(MediaEvent):
    """No RTP from a leg (that is not on hold) for the configured time."""

    session_id: str
    leg: str


@dataclass(frozen=True, slots=True)
class DtmfReceived(MediaEvent):
    """An RFC 4733 digit finished on a leg."""

    session_id: str
    leg: str
    digit: str
    duration_ms: int


class MediaController(Protocol):
    """Implemented by the media engine (in-process or a pool of worker processes)."""

    def allocate(self, session_id: str, leg: str) -> MediaEndpoint:
        """Reserve an even RTP port (and the odd RTCP port above it) for a leg."""

    def connect(self, session_id: str, legs: dict[str, LegMedia]) -> None:
        """Start (or re-plan, after a re-INVITE) media between the allocated legs of a
        session: relay when the legs share a codec, transcode when they do not."""

    def update(self, session_id: str, leg: str, media: LegMedia) -> None:
        """One leg renegotiated (hold, resume, codec change, new address)."""

    def release(self, session_id: str) -> None:
        """Stop and free every port of the session. Releasing twice is harmless."""

    def set_event_handler(self, handler: Callable[[MediaEvent], None]) -> None: ...
