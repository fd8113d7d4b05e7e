"""SIP requests and responses: frozen values, parsed from and serialized to bytes.

Sans-I/O: no sockets, no clock. A message keeps every header line as it came (original
spelling and order) and parses the few headers that transactions and dialogs need on
first use, caching the result (sippy's lazy headers, h11's validate-once).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from softswitch.sip.errors import (
    MessageTooLarge,
    SipParseError,
    UnsupportedUriScheme,
    VersionNotSupported,
)
from softswitch.sip.headers import (
    CSeq,
    Headers,
    NameAddr,
    Via,
    header_key,
    header_keys_seen,
    parse_cseq,
    parse_name_addr,
    parse_via,
)
from softswitch.sip.uri import Uri, parse_absolute_uri, split_quoted

# A UDP datagram cannot be larger; a stream message is held to the same bound so that
# a peer cannot make us buffer without limit.
MAX_MESSAGE_SIZE = 65_535
MAX_HEADER_LINES = 256

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    410: "Gone",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    421: "Extension Required",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
    606: "Not Acceptable",
}


class _MessageBase:
    """Header views shared by requests and responses (parsed on first use, cached)."""

    __slots__ = ()
    headers: Headers
    body: bytes
    _cache: dict[str, object]

    def _cached(self, key: str, make):  # type: ignore[no-untyped-def]
        try:
            return self._cache[key]
        except KeyError:
            value = make()
            self._cache[key] = value
            return value

    @property
    def vias(self) -> tuple[Via, ...]:
        return self._cached("via", lambda: tuple(parse_via(v) for v in self.headers.values("via")))

    @property
    def top_via(self) -> Via:
        vias = self.vias
        if not vias:
            raise SipParseError("Missing Via header")
        return vias[0]

    @property
    def call_id(self) -> str:
        def make() -> str:
            value = self.headers.get("call-id")
            if value is None or not value.strip():
                raise SipParseError("Missing Call-ID header")
            value = value.strip()
            if _SPACE.search(value):
                raise SipParseError("Bad Call-ID header")
            return value

        return self._cached("call-id", make)

    @property
    def cseq(self) -> CSeq:
        def make() -> CSeq:
            values = self.headers.get_all("cseq")
            if not values:
                raise SipParseError("Missing CSeq header")
            if len(values) > 1:
                raise SipParseError("Multiple CSeq headers")
            return parse_cseq(values[0])

        return self._cached("cseq", make)

    @property
    def from_(self) -> NameAddr:
        return self._cached("from", lambda: self._address("from"))

    @property
    def to(self) -> NameAddr:
        return self._cached("to", lambda: self._address("to"))

    def _address(self, name: str) -> NameAddr:
        values = self.headers.get_all(name)
        if not values:
            raise SipParseError(f"Missing {name.title()} header")
        if len(values) > 1:
            raise SipParseError(f"Multiple {name.title()} headers")
        try:
            return parse_name_addr(values[0])
        except SipParseError as exc:
            raise SipParseError(f"Bad {name.title()} header: {exc.reason}") from None

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("content-type")
        return value.split(";", 1)[0].strip().lower() if value else None


@dataclass(frozen=True, slots=True)
class Request(_MessageBase):
    method: str
    uri: Uri
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"
    _cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def max_forwards(self) -> int | None:
        def make() -> int | None:
            values = self.headers.get_all("max-forwards")
            if not values:
                return None
            if len(values) > 1:
                raise SipParseError("Multiple Max-Forwards headers")
            text = values[0].strip()
            if not _is_digits(text) or len(text.lstrip("0")) > 3 or int(text) > 255:
                raise SipParseError("Bad Max-Forwards header")
            return int(text)

        return self._cached("max-forwards", make)

    def replace(self, **changes: object) -> Request:
        changes.setdefault("_cache", {})
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_bytes(self) -> bytes:
        head = f"{self.method} {self.uri} {self.version}\r\n"
        return _serialize(head, self.headers, self.body)

    def __bytes__(self) -> bytes:
        return self.to_bytes()


@dataclass(frozen=True, slots=True)
class Response(_MessageBase):
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "SIP/2.0"
    _cache: dict[str, object] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    def replace(self, **changes: object) -> Response:
        changes.setdefault("_cache", {})
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def to_bytes(self) -> bytes:
        head = f"{self.version} {self.status} {self.reason}\r\n"
        return _serialize(head, self.headers, self.body)

    def __bytes__(self) -> bytes:
        return self.to_bytes()


Message = Request | Response


def _serialize(start_line: str, headers: Headers, body: bytes) -> bytes:
    # Content-Length always states the real body size: a stream peer frames by it.
    lines = [start_line]
    wrote_length = False
    for name, value in headers:
        if name.lower() in ("content-length", "l"):
            # Every copy states the true length, so no peer can be told two stories.
            value = str(len(body))
            wrote_length = True
        lines.append(f"{name}: {value}\r\n")
    if not wrote_length:
        lines.append(f"Content-Length: {len(body)}\r\n")
    lines.append("\r\n")
    return "".join(lines).encode("utf-8") + body


# -- parsing -----------------------------------------------------------------------------


class PartialMessage:
    """What could be read of a broken message, so that a 400 can still be routed."""

    __slots__ = ("is_request", "method", "headers")

    def __init__(self, is_request: bool, method: str | None, headers: Headers) -> None:
        self.is_request = is_request
        self.method = method
        self.headers = headers

    @property
    def top_via(self) -> Via | None:
        """The top Via if its sent-protocol and sent-by can be read, else None.

        Read leniently: broken parameters are skipped, because a 400 only needs the
        sent-by (and received/rport) to find its way back (RFC 4475 badinv01).
        """
        values = self.headers.get_all("via")
        if not values:
            return None
        first = split_quoted(values[0], ",")[0]
        try:
            return parse_via(first)
        except SipParseError:
            pass
        head, _, params = first.partition(";")
        kept = []
        for part in params.split(";"):
            name, _, _value = part.partition("=")
            if name.strip() and _is_token(name.strip()) and "," not in part:
                kept.append(part.strip())
        try:
            return parse_via(";".join([head, *kept]) if kept else head)
        except SipParseError:
            return None

    @property
    def respondable(self) -> bool:
        """A response can be sent: the fault is in a request whose top Via is readable."""
        return self.is_request and self.top_via is not None


class BadMessage(SipParseError):
    """A parse fault with whatever of the message was readable attached."""

    def __init__(self, error: SipParseError, partial: PartialMessage | None) -> None:
        super().__init__(error.reason, error.status)
        self.partial = partial


def split_head(data: bytes) -> tuple[bytes, bytes]:
    """Split at the empty line; tolerate bare LF line ends (seen from broken stacks)."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return data[:lf], data[lf + 2 :]
    if crlf >= 0:
        return data[:crlf], data[crlf + 4 :]
    return data, b""


def _header_lines(head: str) -> list[str]:
    # Bare LF line ends are accepted (robustness principle: some embedded stacks send
    # them); a CR anywhere else can only be an attack or corruption.
    if "\r" in head:
        head = head.replace("\r\n", "\n")
        if "\r" in head:
            raise SipParseError("Bare CR in header")
    raw = head.split("\n")
    if "\n " not in head and "\n\t" not in head:
        return raw
    lines: list[str] = []
    for line in raw:
        if line and line[0] in " \t":
            # Folded continuation (RFC 3261 section 7.3.1): joins the previous line.
            if len(lines) <= 1:
                raise SipParseError("Folded line without a header")
            lines[-1] = lines[-1].rstrip(" \t") + " " + line.strip(" \t")
        else:
            lines.append(line)
    return lines


def parse_message(data: bytes, *, datagram: bool = True) -> Message:
    """Parse one SIP message. Raises BadMessage (a SipParseError) with the readable part.

    ``datagram`` selects RFC 3261 section 18.3 framing: a datagram without Content-Length
    holds its body to the end and ignores octets past Content-Length; a stream message
    (already cut out by ``StreamFramer``) must state Content-Length and match it exactly.
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise BadMessage(MessageTooLarge(), None)
    # Leading CRLFs before a message are keep-alives or framing noise (RFC 3261 7.5).
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")
    head_bytes, body = split_head(data)
    try:
        head = head_bytes.decode("utf-8")
    except UnicodeDecodeError:
        # Header text must be UTF-8 (RFC 3261 section 7.3.1); latin-1 keeps going so that
        # a 400 can still be built from the readable headers.
        head = head_bytes.decode("latin-1")
        fault: SipParseError | None = SipParseError("Header is not valid UTF-8")
    else:
        fault = None
    try:
        lines = _header_lines(head)
    except SipParseError as exc:
        raise BadMessage(exc, None) from None
    start = lines[0]
    if not start:
        raise BadMessage(SipParseError("Empty message"), None)
    if len(lines) - 1 > MAX_HEADER_LINES:
        raise BadMessage(MessageTooLarge("Too many header lines"), None)
    triples: list[tuple[str, str, str]] = []
    token = _TOKEN_RE.fullmatch
    known = header_keys_seen()
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        name = name.rstrip(" \t")
        # This loop runs for every header of every message: a spelling seen before is a
        # valid token already, so only new ones are checked.
        key = known.get(name)
        if key is None:
            if not sep or token(name) is None:
                fault = fault or SipParseError("Malformed header line")
                continue
            key = header_key(name)
        elif not sep:
            fault = fault or SipParseError("Malformed header line")
            continue
        triples.append((name, key, value.strip(" \t")))
    headers = Headers.from_triples(triples)

    is_request = not start.startswith("SIP/")
    method: str | None = None
    if is_request:
        first = start.split(" ", 1)[0]
        if token(first) is not None:
            method = first
    partial = PartialMessage(is_request, method, headers)
    try:
        if fault is not None:
            raise fault
        body = _frame_body(headers, body, datagram)
        msg = _parse_start(start, headers, body)
        _validate(msg)
    except SipParseError as exc:
        raise BadMessage(exc, partial) from None
    return msg


def read_partial(data: bytes) -> PartialMessage | None:
    """The readable part of a message head (for answering a framing error with a 400)."""
    try:
        msg = parse_message(data, datagram=True)
    except BadMessage as exc:
        return exc.partial
    method = msg.method if isinstance(msg, Request) else None
    return PartialMessage(isinstance(msg, Request), method, msg.headers)


def _parse_start(start: str, headers: Headers, body: bytes) -> Message:
    if start.startswith("SIP/"):
        parts = start.split(" ", 2)
        if len(parts) < 2:
            raise SipParseError("Bad status line")
        version = parts[0]
        if version.upper() != "SIP/2.0":
            raise VersionNotSupported()
        code = parts[1]
        if len(code) != 3 or not _is_digits(code) or not 100 <= int(code) <= 699:
            raise SipParseError("Bad status code")
        reason = parts[2] if len(parts) == 3 else ""
        return Response(int(code), reason, headers, body, "SIP/2.0")
    # Request-Line = Method SP Request-URI SP SIP-Version: exactly one SP each, nothing
    # after the version (RFC 4475 lwsstart, trws, lwsruri).
    parts = start.split(" ")
    if len(parts) != 3:
        raise SipParseError("Bad request line")
    method, uri_text, version = parts
    if not _is_token(method):
        raise SipParseError("Bad method")
    if not version.upper().startswith("SIP/"):
        raise SipParseError("Bad request line")
    if version.upper() != "SIP/2.0":
        raise VersionNotSupported()
    try:
        uri = parse_absolute_uri(uri_text)
    except UnsupportedUriScheme:
        raise
    except SipParseError as exc:
        raise SipParseError(f"Bad Request-URI: {exc.reason}") from None
    if uri.headers is not None:
        # RFC 3261 section 19.1.1: headers are not allowed in a Request-URI (RFC 4475
        # escruri). Liberal acceptance would let a sender smuggle a Route through us.
        raise SipParseError("Bad Request-URI: headers are not allowed")
    return Request(method, uri, headers, body, "SIP/2.0")


def _frame_body(headers: Headers, rest: bytes, datagram: bool) -> bytes:
    values = headers.get_all("content-length")
    if not values:
        if datagram:
            # A datagram without Content-Length holds its body to the end (RFC 3261 18.3).
            return rest
        raise SipParseError("Missing Content-Length header")
    distinct = {v.strip() for v in values}
    if len(distinct) > 1:
        raise SipParseError("Conflicting Content-Length headers")
    text = values[0].strip()
    if not _is_digits(text):
        raise SipParseError("Bad Content-Length header")
    if len(text.lstrip("0")) > 6 or int(text) > MAX_MESSAGE_SIZE:
        raise MessageTooLarge("Content-Length too large")
    length = int(text)
    if length > len(rest):
        raise SipParseError("Content-Length larger than the body")
    if not datagram and length != len(rest):
        raise SipParseError("Content-Length smaller than the body")
    # Octets past Content-Length in a datagram are discarded (RFC 3261 18.3, RFC 4475
    # dblreq).
    return rest[:length] if length != len(rest) else rest


def _single(msg: Message, name: str, label: str) -> None:
    if len(msg.headers.get_all(name)) > 1:
        raise SipParseError(f"Multiple {label} headers")


def _validate(msg: Message) -> None:
    """The checks every message must pass before anyone acts on it."""
    try:
        vias = msg.vias
    except SipParseError as exc:
        raise SipParseError(f"Bad Via header: {exc.reason}") from None
    if not vias:
        raise SipParseError("Missing Via header")
    msg.call_id  # noqa: B018 - parses and checks
    _single(msg, "call-id", "Call-ID")
    cseq = msg.cseq
    msg.from_  # noqa: B018
    msg.to  # noqa: B018
    if isinstance(msg, Request):
        if cseq.method != msg.method:
            raise SipParseError("CSeq method does not match the request method")
        msg.max_forwards  # noqa: B018


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
_SPACE = re.compile(r"\s")


def _is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def _is_header_name(text: str) -> bool:
    return _is_token(text)


def _is_digits(text: str) -> bool:
    # str.isdigit() also accepts other scripts' digits, which int() may then refuse.
    return text.isascii() and text.isdigit()


# -- building ---------------------------------------------------------------------------


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
    body: bytes = b"",
    content_type: str | None = None,
) -> Response:
    """A response to ``request`` as RFC 3261 section 8.2.6 says: Via, From, Call-ID and
    CSeq copied, To copied with our tag added (when asked) if the request had none."""
    lines: list[tuple[str, str]] = []
    for name, value in request.headers:
        key = name.lower()
        if key in ("via", "v", "from", "f", "call-id", "i", "cseq"):
            lines.append((name, value))
        elif key in ("to", "t"):
            if to_tag and status > 100 and "tag=" not in value.lower().replace(" ", ""):
                value = f"{value};tag={to_tag}"
            lines.append((name, value))
    lines.extend(extra)
    if content_type:
        lines.append(("Content-Type", content_type))
    lines.append(("Content-Length", str(len(body))))
    return Response(status, reason or REASON_PHRASES.get(status, "Unknown"), Headers(lines), body)


def make_error_response(error: BadMessage, *, to_tag: str | None = None) -> Response | None:
    """The response that answers a message we could not parse, or None when none may be
    sent: the fault is in a response, or the top Via cannot be read (the message is then
    dropped and logged, RFC 3261 section 18.2.1 needs the Via to route a response)."""
    partial = error.partial
    if partial is None or not partial.respondable:
        return None
    lines: list[tuple[str, str]] = []
    for name, value in partial.headers:
        key = header_key(name)
        if key in ("via", "from", "call-id", "cseq"):
            lines.append((name, value))
        elif key == "to":
            if to_tag and "tag=" not in value.lower().replace(" ", ""):
                value = f"{value};tag={to_tag}"
            lines.append((name, value))
    lines.append(("Content-Length", "0"))
    # The reason phrase names the fault; it must stay one line of printable text.
    reason = "".join(ch if ch.isprintable() else "?" for ch in error.reason)[:200]
    return Response(
        error.status, reason or REASON_PHRASES.get(error.status, "Bad Request"), Headers(lines)
    )
