"""Cutting SIP messages out of a TCP/TLS byte stream (RFC 3261 section 18.3).

Sans-I/O, in h11's receive-buffer manner: the transport ``feed()``s whatever bytes
arrived and calls ``next_message()`` until it answers ``NEED_DATA``. Each call returns one
of:

* ``bytes``: one whole message (head, empty line, exactly Content-Length body octets),
  ready for ``parse_message(data, datagram=False)``;
* ``KEEPALIVE_PING``: a double CRLF between messages (RFC 5626 section 4.4.1); the
  transport must answer it with a single CRLF;
* ``KEEPALIVE_PONG``: a single CRLF between messages, the answer to our own ping (or the
  harmless leading CRLF that RFC 3261 section 7.5 says to ignore);
* ``NEED_DATA``: nothing complete yet.

A stream cannot be resynchronised after a framing fault, so ``FramingError`` (a
``BadMessage`` carrying its status and whatever head was readable) is final: the transport
answers with ``make_error_response(error)`` when that gives a response, then closes. It is
raised again on every later call.

Work is O(n) in bytes received: the search for the empty line resumes where it stopped,
consumed bytes are dropped from the front in amortised batches, and nothing is rescanned
when data trickles in a byte at a time.
"""

from __future__ import annotations

import enum
import re

from softswitch.sip.errors import MessageTooLarge, SipParseError
from softswitch.sip.message import MAX_MESSAGE_SIZE, BadMessage, PartialMessage, read_partial


class FramingEvent(enum.Enum):
    NEED_DATA = "need data"
    KEEPALIVE_PING = "keep-alive ping"
    KEEPALIVE_PONG = "keep-alive pong"


NEED_DATA = FramingEvent.NEED_DATA
KEEPALIVE_PING = FramingEvent.KEEPALIVE_PING
KEEPALIVE_PONG = FramingEvent.KEEPALIVE_PONG

# A ping the transport must answer: one CRLF (RFC 5626 section 4.4.1).
PONG = b"\r\n"


class FramingError(BadMessage):
    """The stream cannot be framed any further (400 or 513); the connection must close."""

    def __init__(self, error: SipParseError, partial: PartialMessage | None = None) -> None:
        super().__init__(error, partial)


# The header section is ASCII up to the values we read here; a folded Content-Length is
# not worth supporting, it then fails as a bad value.
_CONTENT_LENGTH = re.compile(rb"(?im)^(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)")


class StreamFramer:
    """Frames one direction of one connection. ``client=True`` on connections we opened:
    there a lone CRLF is a pong to report at once, while a server must wait to see
    whether a CRLF is the first half of a ping."""

    def __init__(self, max_size: int = MAX_MESSAGE_SIZE, *, client: bool = False) -> None:
        self.max_size = max_size
        self.client = client
        self._buf = bytearray()
        self._start = 0  # first unconsumed byte
        self._scan = 0  # where the search for the empty line resumes
        self._total: int | None = None  # whole length of the message being read
        self._error: FramingError | None = None

    def feed(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned."""
        return len(self._buf) - self._start

    def next_message(self) -> bytes | FramingEvent:
        if self._error is not None:
            raise self._error
        try:
            return self._next()
        except FramingError as exc:
            self._error = exc
            self._buf = bytearray()
            self._start = 0
            raise

    def _next(self) -> bytes | FramingEvent:
        buf = self._buf
        if self._total is None:
            while True:
                if self._start == len(buf):
                    return NEED_DATA
                first = buf[self._start]
                if first == 0x0A:
                    # A bare LF between messages: tolerated noise, never a keep-alive.
                    self._consume(1)
                    continue
                if first == 0x0D:
                    return self._keepalive()
                break
            start = self._start
            end = self._find_head_end()
            if end < 0:
                if len(buf) - start > self.max_size:
                    raise FramingError(MessageTooLarge("Header section too large"))
                return NEED_DATA
            self._total = (end - start) + self._content_length(start, end)
        start = self._start
        total = self._total
        if len(buf) - start < total:
            return NEED_DATA
        message = bytes(buf[start : start + total])
        self._consume(total)
        self._total = None
        return message

    def _keepalive(self) -> FramingEvent:
        start = self._start
        rest = bytes(self._buf[start : start + 4])
        if rest == b"\r\n\r\n" and not self.client:
            self._consume(4)
            return KEEPALIVE_PING
        if len(rest) < 2:
            return NEED_DATA
        if rest[1] != 0x0A:
            raise FramingError(SipParseError("Stray CR between messages"))
        if self.client or (len(rest) >= 3 and rest[2] != 0x0D) or len(rest) == 4:
            # A CRLF not followed by a second one: the pong to a ping of ours.
            self._consume(2)
            return KEEPALIVE_PONG
        return NEED_DATA

    def _find_head_end(self) -> int:
        """Index just past the empty line (CRLF CRLF, or LF LF from sloppy stacks), or -1.
        Every byte is searched once however the data is split; finding an LF looks back
        at most two bytes."""
        buf = self._buf
        start = self._start
        pos = max(self._scan, start)
        while True:
            nl = buf.find(b"\n", pos)
            if nl < 0:
                self._scan = len(buf)
                return -1
            if nl - 1 >= start and buf[nl - 1] == 0x0A:
                return nl + 1
            if nl - 2 >= start and buf[nl - 1] == 0x0D and buf[nl - 2] == 0x0A:
                return nl + 1
            pos = nl + 1

    def _content_length(self, start: int, end: int) -> int:
        head = bytes(self._buf[start:end])
        values = {v.strip() for v in _CONTENT_LENGTH.findall(head)}
        if not values:
            # RFC 3261 section 18.3: on a stream Content-Length is the only framing.
            raise FramingError(SipParseError("Missing Content-Length header"), read_partial(head))
        if len(values) > 1:
            raise FramingError(
                SipParseError("Conflicting Content-Length headers"), read_partial(head)
            )
        text = values.pop()
        if not (text.isdigit() and text.isascii()):
            raise FramingError(SipParseError("Bad Content-Length header"), read_partial(head))
        if len(text.lstrip(b"0")) > 9 or (end - start) + int(text) > self.max_size:
            raise FramingError(MessageTooLarge("Content-Length too large"), read_partial(head))
        return int(text)

    def _consume(self, n: int) -> None:
        self._start += n
        self._scan = max(self._scan, self._start)
        # Drop the consumed prefix only when it is most of the buffer: amortised O(1)
        # per byte, where dropping after every message would be quadratic.
        if self._start > 4096 and self._start * 2 > len(self._buf):
            del self._buf[: self._start]
            self._scan -= self._start
            self._start = 0
