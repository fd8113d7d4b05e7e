"""SIP, SIPS and tel URIs (RFC 3261 section 19.1, RFC 3966), plus the small lexical
helpers the header parsers share (quote-aware splitting, parameters)."""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import unquote as _percent_decode

from softswitch.sip.errors import SipParseError, UnsupportedUriScheme

_SPACE = re.compile(r"\s")
_SIP_URI_BAD = re.compile(r'[\s<>"]')
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*$")
_HOSTNAME = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.)*[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?\.?$"
)
_IPV4 = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$")
# user and password characters of RFC 3261 (unreserved, escaped, user-unreserved).
_USER_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,;?/]|%[0-9A-Fa-f]{2})+$")
_PASSWORD_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()&=+$,]|%[0-9A-Fa-f]{2})*$")
_PARAM_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/:&+$]|%[0-9A-Fa-f]{2})+$")
# hname / hvalue characters plus the '=' and '&' that join them (RFC 3261 section 25.1).
_HEADERS_CHARS = re.compile(r"^(?:[A-Za-z0-9\-_.!~*'()\[\]/?:+$=&]|%[0-9A-Fa-f]{2})*$")


def split_quoted(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside quoted strings and angle brackets; parts are stripped."""
    if '"' not in text and "<" not in text:
        # The common case (no quoting at all) stays in C.
        return [part.strip() for part in text.split(sep)]
    parts: list[str] = []
    start = 0
    in_quote = False
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if in_quote:
            if ch == "\\":
                i += 2
                continue
            if ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == sep and depth == 0:
            parts.append(text[start:i].strip())
            start = i + 1
        i += 1
    parts.append(text[start:].strip())
    return parts


def unquote(text: str) -> str:
    """The content of a quoted-string, escapes resolved; other text is returned stripped."""
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        body = text[1:-1]
        out: list[str] = []
        i = 0
        while i < len(body):
            ch = body[i]
            if ch == "\\" and i + 1 < len(body):
                out.append(body[i + 1])
                i += 2
                continue
            out.append(ch)
            i += 1
        return "".join(out)
    return text


def split_params(text: str) -> list[tuple[str, str | None]]:
    """``a=1;b;c="x;y"`` -> ``[("a", "1"), ("b", None), ("c", '"x;y"')]``."""
    out: list[tuple[str, str | None]] = []
    for part in split_quoted(text, ";"):
        if not part:
            raise SipParseError("Empty parameter")
        name, sep, value = part.partition("=")
        name = name.strip()
        out.append((name, value.strip() if sep else None))
    return out


def unescape(text: str) -> str:
    """Resolve ``%HH`` escapes (RFC 3261 19.1.2), once and not recursively (RFC 3986):
    ``v%61lue%25%34%31`` is ``value%41``, never ``valueA``. Bytes that are not UTF-8
    (``%00`` is legal, so are bare octets) come back as surrogate escapes."""
    if "%" not in text:
        return text
    return _percent_decode(text, errors="surrogateescape")


def valid_host(host: str) -> bool:
    if not host or len(host) > 255:
        return False
    if host.startswith("["):
        if not host.endswith("]"):
            return False
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    if _IPV4.match(host):
        return all(
            len(part) == 1 or (part[0] != "0" and int(part) <= 255) for part in host.split(".")
        )
    return bool(_HOSTNAME.match(host))


def split_hostport(text: str) -> tuple[str, int | None]:
    if not text:
        raise SipParseError("Missing host")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise SipParseError("Bad IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise SipParseError("Bad host:port")
        port_text = rest[1:] if rest else ""
    else:
        host, sep, port_text = text.partition(":")
        if sep and not port_text:
            raise SipParseError("Bad port")
        if ":" in port_text:
            raise SipParseError("Bad host:port (IPv6 address without brackets)")
    if not valid_host(host):
        raise SipParseError("Bad host")
    if not port_text:
        return host, None
    if not _is_digits(port_text) or len(port_text) > 5 or int(port_text) > 65535:
        raise SipParseError("Bad port")
    return host, int(port_text)


def _is_digits(text: str) -> bool:
    # str.isdigit() also accepts other scripts' digits, which int() may then refuse.
    return text.isascii() and text.isdigit()


@dataclass(frozen=True, slots=True)
class Uri:
    """A parsed URI. ``host`` keeps IPv6 brackets; ``params`` keep their order and case."""

    scheme: str
    user: str | None = None
    host: str = ""
    port: int | None = None
    password: str | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: str | None = None
    opaque: str | None = None  # the whole scheme-specific part of a non-SIP URI

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key.lower() == name:
                return value if value is not None else ""
        return None

    @property
    def user_unescaped(self) -> str | None:
        """The user part with its escapes resolved (``%75se%72`` is ``user``)."""
        return unescape(self.user) if self.user is not None else None

    @property
    def transport(self) -> str | None:
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def host_port(self) -> str:
        return f"{self.host}:{self.port}" if self.port is not None else self.host

    def with_(self, **changes: object) -> Uri:
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return Uri(**fields)  # type: ignore[arg-type]

    def __str__(self) -> str:
        if not self.is_sip:
            return f"{self.scheme}:{self.opaque}"
        out = f"{self.scheme}:"
        if self.user is not None:
            out += self.user
            if self.password is not None:
                out += f":{self.password}"
            out += "@"
        out += self.host_port
        for key, value in self.params:
            out += f";{key}" if value is None else f";{key}={value}"
        if self.headers is not None:
            out += f"?{self.headers}"
        return out


# The same few URIs arrive again and again (a phone's AOR in every re-REGISTER, the
# domain in every Request-URI); a Uri is immutable, so a parse can be shared.
@functools.lru_cache(maxsize=8192)
def parse_uri(text: str) -> Uri:
    """Parse a URI. SIP/SIPS are fully checked; tel and others are kept opaque."""
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME.match(scheme):
        raise SipParseError("Bad URI")
    scheme_l = scheme.lower()
    if scheme_l not in ("sip", "sips"):
        if not rest or _SPACE.search(rest):
            raise SipParseError("Bad URI")
        if scheme_l == "tel":
            return Uri("tel", opaque=rest, user=rest.split(";", 1)[0])
        return Uri(scheme_l, opaque=rest)
    if _SIP_URI_BAD.search(rest):
        raise SipParseError("Bad SIP URI")
    user: str | None = None
    password: str | None = None
    # Neither uri-parameters nor headers may hold an unescaped '@', but a user part may
    # hold '?', ';' and ',' (RFC 4475 intmeth), so the last '@' ends the userinfo.
    headers: str | None = None
    main = rest
    if "@" in rest:
        userinfo, main = rest.rsplit("@", 1)
        user, psep, pw = userinfo.partition(":")
        if psep:
            password = pw
            if not _PASSWORD_CHARS.match(pw):
                raise SipParseError("Bad SIP URI password")
        if not user or not _USER_CHARS.match(user):
            raise SipParseError("Bad SIP URI user")
    if "?" in main:
        main, headers = main.split("?", 1)
        if headers and not _HEADERS_CHARS.match(headers):
            raise SipParseError("Bad SIP URI headers")
    hostport, _, param_text = main.partition(";")
    host, port = split_hostport(hostport)
    params: tuple[tuple[str, str | None], ...] = ()
    if param_text:
        plist = split_params(param_text)
        for key, value in plist:
            if not _PARAM_CHARS.match(key) or (value is not None and not _valid_pvalue(value)):
                raise SipParseError("Bad SIP URI parameter")
        params = tuple(plist)
    return Uri(scheme_l, user, host, port, password, params, headers)


def _valid_pvalue(value: str) -> bool:
    return value == "" or bool(_PARAM_CHARS.match(value))


def parse_absolute_uri(text: str) -> Uri:
    """Like parse_uri, but raises 416 for schemes a SIP request line cannot carry."""
    uri = parse_uri(text)
    if uri.scheme not in ("sip", "sips", "tel"):
        raise UnsupportedUriScheme(f"Unsupported URI Scheme {uri.scheme}")
    return uri
