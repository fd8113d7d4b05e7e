"""Header storage and the typed header values the core needs.

Headers keep their original spelling and order so that what we pass on is what we got;
matching is on the lower-cased full name, so compact forms (``v``, ``i``, ``m``...) and
any capitalisation find the same header (h11's ``(raw_name, lowercased_name, value)``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from softswitch.sip.errors import SipParseError
from softswitch.sip.uri import (
    Uri,
    parse_uri,
    split_hostport,
    split_params,
    split_quoted,
    unquote,
    valid_host,
)

# RFC 3261 section 7.3.3 plus the later RFCs that added compact forms.
COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# Headers whose value is never a comma-separated list, even when it contains commas
# (dates, free text, credentials).
_SINGLE_VALUE = frozenset(
    {
        "www-authenticate",
        "authorization",
        "proxy-authenticate",
        "proxy-authorization",
        "authentication-info",
        "date",
        "subject",
        "user-agent",
        "server",
        "organization",
        "call-id",
        "cseq",
        "from",
        "to",
        "content-length",
        "content-type",
        "max-forwards",
        "expires",
        "min-expires",
        "retry-after",
        "timestamp",
        "warning",
        "reason",
    }
)


_KEYS: dict[str, str] = {}


def header_keys_seen() -> dict[str, str]:
    """The memo behind header_key (read-only use: spelling -> key)."""
    return _KEYS


def header_key(name: str) -> str:
    """The matching key of a header name: lower case, compact forms expanded."""
    try:
        return _KEYS[name]
    except KeyError:
        pass
    key = name.lower()
    key = COMPACT_FORMS.get(key, key)
    # Real traffic uses a few dozen spellings; the bound keeps a hostile peer from
    # growing the memo without limit.
    if len(_KEYS) < 2048:
        _KEYS[name] = key
    return key


class Headers:
    """An ordered, immutable multi-map of header lines.

    Each line is ``(raw_name, key, value)``; ``key`` is ``header_key(raw_name)``.
    Methods that change something return a new Headers.
    """

    __slots__ = ("_lines",)

    def __init__(self, lines: Iterable[tuple[str, str]] = ()) -> None:
        self._lines: tuple[tuple[str, str, str], ...] = tuple(
            (name, header_key(name), value) for name, value in lines
        )

    @classmethod
    def from_triples(cls, triples: Iterable[tuple[str, str, str]]) -> Headers:
        """From ``(raw_name, header_key(raw_name), value)`` triples the caller has keyed."""
        return cls._from_triples(triples)

    @classmethod
    def _from_triples(cls, triples: Iterable[tuple[str, str, str]]) -> Headers:
        new = cls.__new__(cls)
        new._lines = tuple(triples)
        return new

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for name, _key, value in self._lines:
            yield name, value

    def __len__(self) -> int:
        return len(self._lines)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = header_key(name)
        return any(k == key for _, k, _ in self._lines)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._lines == other._lines

    def __hash__(self) -> int:
        return hash(self._lines)

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"

    def get(self, name: str, default: str | None = None) -> str | None:
        key = header_key(name)
        for _, k, value in self._lines:
            if k == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every line's value for this header, in order, not split at commas."""
        key = header_key(name)
        return [value for _, k, value in self._lines if k == key]

    def values(self, name: str) -> list[str]:
        """Every element of a list header across all its lines (commas outside quotes
        and angle brackets split elements, RFC 3261 section 7.3.1)."""
        key = header_key(name)
        out: list[str] = []
        for _, k, value in self._lines:
            if k != key:
                continue
            if key in _SINGLE_VALUE or "," not in value:
                # Most lines hold one element: no need to scan for quotes and brackets.
                if value:
                    out.append(value)
            else:
                out.extend(part for part in split_quoted(value, ",") if part)
        return out

    def raw_names(self, name: str) -> list[str]:
        key = header_key(name)
        return [raw for raw, k, _ in self._lines if k == key]

    def add(self, name: str, value: str) -> Headers:
        return Headers._from_triples((*self._lines, (name, header_key(name), value)))

    def prepend(self, name: str, value: str) -> Headers:
        return Headers._from_triples(((name, header_key(name), value), *self._lines))

    def remove(self, name: str) -> Headers:
        key = header_key(name)
        return Headers._from_triples(line for line in self._lines if line[1] != key)

    def replace(self, name: str, value: str) -> Headers:
        """Set a single-valued header: the first line keeps its place, others go."""
        key = header_key(name)
        out: list[tuple[str, str, str]] = []
        done = False
        for line in self._lines:
            if line[1] != key:
                out.append(line)
            elif not done:
                out.append((line[0], key, value))
                done = True
        if not done:
            out.append((name, key, value))
        return Headers._from_triples(out)

    def remove_first(self, name: str) -> Headers:
        """Remove the first element of a list header (e.g. our own Via on a response)."""
        key = header_key(name)
        out: list[tuple[str, str, str]] = []
        done = False
        for raw, k, value in self._lines:
            if k == key and not done:
                done = True
                rest = split_quoted(value, ",")[1:]
                if rest:
                    out.append((raw, k, ", ".join(rest)))
                continue
            out.append((raw, k, value))
        return Headers._from_triples(out)


def _token_params(text: str) -> tuple[tuple[str, str | None], ...]:
    return tuple(split_params(text))


@dataclass(frozen=True, slots=True)
class Via:
    """One Via element: ``SIP/2.0/UDP host:port;branch=...``."""

    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...] = ()
    protocol: str = "SIP/2.0"

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key.lower() == name:
                return value if value is not None else ""
        return None

    def has_param(self, name: str) -> bool:
        name = name.lower()
        return any(key.lower() == name for key, _ in self.params)

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def sent_by(self) -> str:
        return f"{self.host}:{self.port}" if self.port is not None else self.host

    def with_params(self, **changes: str | None) -> Via:
        """A copy with these parameters set (value None writes a bare flag)."""
        params = list(self.params)
        for name, value in changes.items():
            for i, (key, _old) in enumerate(params):
                if key.lower() == name:
                    params[i] = (key, value)
                    break
            else:
                params.append((name, value))
        return Via(self.transport, self.host, self.port, tuple(params), self.protocol)

    def __str__(self) -> str:
        out = f"{self.protocol}/{self.transport} {self.sent_by}"
        for key, value in self.params:
            out += f";{key}" if value is None else f";{key}={value}"
        return out


# The form nearly every phone sends: no spaces, token parameters. Anything else (LWS,
# quoted or odd parameter values) takes the general path below.
_VIA_COMMON = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(?::([0-9]{1,5}))?"
    r"((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[A-Za-z0-9\-.!%*_+`'~:\[\]]+)?)*)"
)


def parse_via(value: str) -> Via:
    """Parse one Via element (not a comma list). Raises SipParseError."""
    m = _VIA_COMMON.fullmatch(value)
    if m is not None:
        transport, host, port_text, param_text = m.groups()
        port = int(port_text) if port_text is not None else None
        if valid_host(host) and (port is None or port <= 65535):
            params: tuple[tuple[str, str | None], ...] = ()
            if param_text:
                params = tuple(
                    (k, v if sep else None)
                    for k, sep, v in (p.partition("=") for p in param_text[1:].split(";"))
                )
            return Via(transport.upper(), host, port, params, "SIP/2.0")
    text = value.strip()
    # sent-protocol allows LWS around the slashes (RFC 3261 section 25.1 SLASH).
    parts = text.split("/", 2)
    if len(parts) != 3:
        raise SipParseError("Bad Via header")
    name, version = parts[0].strip(), parts[1].strip()
    rest = parts[2].lstrip()
    i = 0
    while i < len(rest) and not rest[i].isspace() and rest[i] not in ";":
        i += 1
    transport = rest[:i]
    rest = rest[i:].strip()
    if not name or not version or not transport or not rest:
        raise SipParseError("Bad Via header")
    sent_by, _, param_text = rest.partition(";")
    # LWS may surround the ':' of sent-by (COLON = SWS ":" SWS) but nothing else.
    sent_by = _join_sent_by(sent_by)
    host, port = split_hostport(sent_by)
    if not _is_token(name) or not _is_token(version) or not _is_token(transport):
        raise SipParseError("Bad Via header")
    params = _token_params(param_text) if param_text else ()
    for key, pvalue in params:
        if not key or not _is_token(key):
            raise SipParseError("Bad Via parameter")
        if key.lower() == "branch" and not pvalue:
            raise SipParseError("Bad Via branch")
    return Via(transport.upper(), host, port, params, f"{name.upper()}/{version}")


_COLON_LWS = re.compile(r"[ \t]*:[ \t]*")


def _join_sent_by(text: str) -> str:
    # LWS may surround the ':' of sent-by (COLON = SWS ":" SWS), nothing else may hold it.
    text = text.strip(" \t")
    if " " in text or "\t" in text:
        text = _COLON_LWS.sub(":", text)
        if " " in text or "\t" in text:
            raise SipParseError("Bad Via sent-by")
    return text


def parse_vias(headers: Headers) -> tuple[Via, ...]:
    return tuple(parse_via(v) for v in headers.values("via"))


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def _is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def _is_digits(text: str) -> bool:
    # str.isdigit() also accepts other scripts' digits, which int() may then refuse.
    return text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class NameAddr:
    """``"Display" <uri>;tag=...`` or a bare addr-spec with header parameters."""

    uri: Uri
    display: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    bracketed: bool = True

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key.lower() == name:
                return value if value is not None else ""
        return None

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def with_param(self, name: str, value: str | None) -> NameAddr:
        params = [(k, v) for k, v in self.params if k.lower() != name.lower()]
        params.append((name, value))
        return NameAddr(self.uri, self.display, tuple(params), self.bracketed)

    def __str__(self) -> str:
        if self.display is not None:
            out = f"{_quote_display(self.display)} <{self.uri}>"
        else:
            out = f"<{self.uri}>"
        for key, value in self.params:
            out += f";{key}" if value is None else f";{key}={value}"
        return out


def _quote_display(display: str) -> str:
    return '"' + display.replace("\\", "\\\\").replace('"', '\\"') + '"'


# From/To/Contact values repeat within a dialog and across re-registrations; the result
# is immutable, so it is cached like parse_uri.
@functools.lru_cache(maxsize=8192)
def parse_name_addr(value: str) -> NameAddr:
    """Parse From/To/Contact/Route-style values. Raises SipParseError."""
    text = value.strip()
    if not text:
        raise SipParseError("Empty address")
    display: str | None = None
    if text.startswith('"'):
        end = _closing_quote(text)
        display = unquote(text[: end + 1])
        text = text[end + 1 :].lstrip()
        if not text.startswith("<"):
            raise SipParseError("Display name without <URI>")
    elif "<" in text:
        lt = text.index("<")
        words = text[:lt].strip()
        if words:
            if not all(_is_token(w) for w in words.split()):
                raise SipParseError("Bad display name")
            display = " ".join(words.split())
        text = text[lt:]
    if text.startswith("<"):
        end = text.find(">")
        if end < 0:
            raise SipParseError("Unterminated <URI>")
        inner = text[1:end]
        if inner != inner.strip():
            # LAQUOT is SWS "<" and RAQUOT is ">" SWS: the addr-spec itself is tight
            # (RFC 4475 badaspec).
            raise SipParseError("Spaces inside <URI>")
        uri = parse_uri(inner)
        rest = text[end + 1 :].strip()
        if rest and not rest.startswith(";"):
            raise SipParseError("Junk after <URI>")
        params = _token_params(rest[1:]) if rest else ()
        return NameAddr(uri, display, params, True)
    # addr-spec form: parameters after the URI belong to the header, not the URI
    # (RFC 3261 section 20.10), and the URI itself cannot hold ',', '?' or ';'.
    uri_text, _, rest = text.partition(";")
    uri_text = uri_text.strip()
    if any(ch in uri_text for ch in " \t?,"):
        raise SipParseError("Bad addr-spec")
    uri = parse_uri(uri_text)
    return NameAddr(uri, None, _token_params(rest) if rest else (), False)


def _closing_quote(text: str) -> int:
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i
        i += 1
    raise SipParseError("Unterminated quoted string")


@dataclass(frozen=True, slots=True)
class CSeq:
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(value: str) -> CSeq:
    parts = value.split()
    if len(parts) != 2 or not _is_digits(parts[0]) or not _is_token(parts[1]):
        raise SipParseError("Bad CSeq header")
    if len(parts[0].lstrip("0")) > 10:
        raise SipParseError("CSeq number out of range")
    seq = int(parts[0])
    if seq >= 2**31:
        raise SipParseError("CSeq number out of range")
    return CSeq(seq, parts[1])


@dataclass(frozen=True, slots=True)
class ContactValue:
    """A Contact element, or the ``*`` wildcard of a de-registration."""

    address: NameAddr | None
    wildcard: bool = False

    @property
    def expires(self) -> int | None:
        if self.address is None:
            return None
        value = self.address.param("expires")
        if value is None:
            return None
        if not _is_digits(value) or len(value.lstrip("0")) > 10:
            raise SipParseError("Bad Contact expires")
        return int(value)


def parse_contacts(headers: Headers) -> list[ContactValue]:
    out: list[ContactValue] = []
    for value in headers.values("contact"):
        if value.strip() == "*":
            out.append(ContactValue(None, True))
        else:
            out.append(ContactValue(parse_name_addr(value)))
    return out


def parse_int_header(headers: Headers, name: str, limit: int = 2**32 - 1) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not _is_digits(value) or len(value.lstrip("0")) > 10 or int(value) > limit:
        raise SipParseError(f"Bad {name} header")
    return int(value)
