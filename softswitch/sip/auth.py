"""SIP digest authentication (RFC 3261 section 22, RFC 7616, RFC 8760), both sides.

Server side, three decisions shape this module:

* Nonces are stateless. A nonce is ``base64url(version | issued-at | salt | HMAC)`` where the
  HMAC (SHA-256, keyed with a server secret the caller persists) covers the timestamp, the
  salt and the realm. Any worker, or the daemon after a restart, can tell a nonce it issued
  from a forged one, and how old it is, without a shared table. Binding the realm means a
  nonce handed out by one tenant cannot be replayed against another.
* The only per-nonce state is the highest nonce-count seen (replay protection for
  ``qop=auth``). It lives in a bounded LRU in this process. Eviction, and a restart when the
  server is told its start time, cost a legitimate client at most one extra ``stale=true``
  round trip, never a replay window (see `NonceCountTracker`). Several workers sharing one
  secret do not share this table, so requests of one client must reach one worker for the
  replay check to hold.
* An unknown user is answered exactly like a wrong password: the same hashes are computed
  (against a dummy secret) and compared in constant time, and the result is ``FAILED`` in
  both cases. Neither the answer nor its timing tells a scanner which extensions exist.

Client side (`choose_challenge`, `build_authorization`) is used for trunks and by tests.

Only ``qop=auth`` and the RFC 2069 no-qop form are supported; ``auth-int`` needs the body
hash and no SIP peer we care about requires it. The module is sans-I/O: time is always
passed in as ``now`` (seconds, wall clock for nonces, since they must survive restarts).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

__all__ = [
    "AuthParseError",
    "AuthResult",
    "AuthVerdict",
    "DigestAlgorithm",
    "DigestChallenge",
    "DigestCredentials",
    "DigestServer",
    "NcCheck",
    "NonceCountTracker",
    "NonceManager",
    "NonceState",
    "UnsupportedChallenge",
    "build_authorization",
    "choose_challenge",
    "compute_ha1",
    "compute_response",
    "format_challenge",
    "format_credentials",
    "parse_challenge",
    "parse_credentials",
]


class AuthParseError(ValueError):
    """A challenge or credentials header value is malformed."""


class UnsupportedChallenge(ValueError):
    """No challenge offered by the peer can be answered (unknown algorithm, auth-int only)."""


class DigestAlgorithm(enum.Enum):
    MD5 = "MD5"
    MD5_SESS = "MD5-sess"
    SHA256 = "SHA-256"
    SHA256_SESS = "SHA-256-sess"

    @classmethod
    def from_token(cls, token: str) -> DigestAlgorithm | None:
        """The algorithm named by ``token`` (case-insensitive), or None if unknown."""
        return _ALGORITHMS_BY_LOWER.get(token.lower())

    @property
    def is_session(self) -> bool:
        return self in (DigestAlgorithm.MD5_SESS, DigestAlgorithm.SHA256_SESS)

    @property
    def hex_length(self) -> int:
        return 32 if self in (DigestAlgorithm.MD5, DigestAlgorithm.MD5_SESS) else 64


_ALGORITHMS_BY_LOWER = {a.value.lower(): a for a in DigestAlgorithm}

# Client preference: stronger hash first (RFC 8760), plain before -sess since -sess buys
# nothing for SIP and some servers implement it wrongly.
_CLIENT_PREFERENCE = {
    DigestAlgorithm.SHA256: 0,
    DigestAlgorithm.SHA256_SESS: 1,
    DigestAlgorithm.MD5: 2,
    DigestAlgorithm.MD5_SESS: 3,
}


def _utf8(text: str) -> bytes:
    # surrogatepass: a lone surrogate that slipped in from a lenient decoder must give a
    # failed comparison, never an exception in the middle of authentication.
    return text.encode("utf-8", "surrogatepass")


def _h(algorithm: DigestAlgorithm, text: str) -> str:
    data = _utf8(text)
    if algorithm.hex_length == 32:
        # MD5 here is a protocol requirement, not our choice of primitive; FIPS builds
        # refuse plain hashlib.md5() without the flag.
        return hashlib.md5(data, usedforsecurity=False).hexdigest()
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True, slots=True)
class DigestChallenge:
    """A parsed ``WWW-Authenticate`` / ``Proxy-Authenticate`` Digest challenge.

    ``algorithm`` is kept as received (default ``MD5`` per RFC 7616) so an unknown one can be
    skipped rather than rejected; ``qop`` holds the lower-cased options offered.
    """

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False

    @property
    def digest_algorithm(self) -> DigestAlgorithm | None:
        return DigestAlgorithm.from_token(self.algorithm)


@dataclass(frozen=True, slots=True)
class DigestCredentials:
    """A parsed ``Authorization`` / ``Proxy-Authorization`` Digest credentials value.

    ``nc`` is kept as the 8 hex digits the client sent, because those exact characters enter
    the response hash; `nc_value` gives the number.
    """

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None

    @property
    def digest_algorithm(self) -> DigestAlgorithm | None:
        return DigestAlgorithm.from_token(self.algorithm)

    @property
    def nc_value(self) -> int | None:
        if self.nc is None or not _NC.fullmatch(self.nc):
            return None
        return int(self.nc, 16)


# --------------------------------------------------------------------------------------
# Parsing

_WS = re.compile(r"[ \t]*")
_FOLD = re.compile(r"\r\n(?=[ \t])")
# RFC 3261 token.
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")
# Unquoted values are accepted a little beyond RFC token (any visible ASCII but the
# delimiters) because some UAs send e.g. ``algorithm=SHA-256`` fine but ``uri=sip:x`` bare.
_BARE_VALUE = re.compile(r"[\x21\x23-\x2b\x2d-\x5b\x5d-\x7e]+")
# qdtext: anything but DQUOTE, backslash and controls (tab allowed); no surrogates.
# quoted-pair: backslash and any character but NUL, CR, LF and surrogates.
_QUOTED = re.compile(
    r'"((?:[^"\\\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]|\\[^\x00\r\n\ud800-\udfff])*)"'
)
_UNESCAPE = re.compile(r"\\(.)", re.DOTALL)
_NC = re.compile(r"[0-9a-fA-F]{8}")


def _quoted_error(text: str, start: int, name: str) -> AuthParseError:
    """Explain why the quoted string at ``start`` did not match, for a useful log line."""
    i = start + 1
    while i < len(text):
        c = text[i]
        if c == '"':
            break
        if c == "\\":
            if i + 1 >= len(text):
                return AuthParseError(f"dangling backslash at end of {name!r} value")
            nxt = text[i + 1]
            if nxt in "\x00\r\n" or "\ud800" <= nxt <= "\udfff":
                return AuthParseError(
                    f"invalid escaped character {nxt!r} in {name!r} value at offset {i + 1}"
                )
            i += 2
            continue
        if (c < " " and c != "\t") or c == "\x7f" or "\ud800" <= c <= "\udfff":
            return AuthParseError(f"invalid character {c!r} in {name!r} value at offset {i}")
        i += 1
    return AuthParseError(f"unterminated quoted string for {name!r} starting at offset {start}")


def _parse_digest(value: str, what: str) -> dict[str, str]:
    """Split ``Digest k=v, k="v"`` into a dict with lower-cased names and unquoted values."""
    if not isinstance(value, str):
        raise AuthParseError(f"{what} must be text, not {type(value).__name__}")
    # RFC 3261 LWS allows line folding; it means a single space.
    text = _FOLD.sub("", value)
    n = len(text)
    i = _WS.match(text, 0).end()
    m = _TOKEN.match(text, i)
    if m is None:
        raise AuthParseError(f"{what}: expected an auth scheme at offset {i}")
    if m.group().lower() != "digest":
        raise AuthParseError(f"{what}: unsupported auth scheme {m.group()!r}")
    i = m.end()
    j = _WS.match(text, i).end()
    if j == n:
        raise AuthParseError(f"{what}: no parameters after 'Digest'")
    if j == i:
        raise AuthParseError(f"{what}: expected whitespace after 'Digest' at offset {i}")
    i = j
    params: dict[str, str] = {}
    while True:
        i = _WS.match(text, i).end()
        if i < n and text[i] == ",":
            # RFC 7230 section 7: empty list elements are to be ignored.
            i += 1
            continue
        if i == n:
            break
        m = _TOKEN.match(text, i)
        if m is None:
            raise AuthParseError(
                f"{what}: expected a parameter name at offset {i}, found {text[i]!r}"
            )
        name = m.group().lower()
        i = _WS.match(text, m.end()).end()
        if i == n or text[i] != "=":
            raise AuthParseError(f"{what}: expected '=' after parameter {name!r} at offset {i}")
        i = _WS.match(text, i + 1).end()
        if i < n and text[i] == '"':
            q = _QUOTED.match(text, i)
            if q is None:
                raise _quoted_error(text, i, name)
            val = _UNESCAPE.sub(lambda e: e.group(1), q.group(1))
            i = q.end()
        else:
            b = _BARE_VALUE.match(text, i)
            if b is None:
                found = repr(text[i]) if i < n else "end of input"
                raise AuthParseError(
                    f"{what}: expected a value for {name!r} at offset {i}, found {found}"
                )
            val = b.group()
            i = b.end()
        if name in params:
            # Two realms or two responses is ambiguous at best and an attack at worst.
            raise AuthParseError(f"{what}: duplicate parameter {name!r}")
        params[name] = val
        i = _WS.match(text, i).end()
        if i == n:
            break
        if text[i] != ",":
            raise AuthParseError(
                f"{what}: expected ',' after parameter {name!r} at offset {i}, found {text[i]!r}"
            )
        i += 1
    if not params:
        raise AuthParseError(f"{what}: no parameters after 'Digest'")
    return params


def _require(params: dict[str, str], names: Iterable[str], what: str) -> None:
    missing = [name for name in names if name not in params]
    if missing:
        raise AuthParseError(f"{what}: missing required parameter(s) {', '.join(missing)}")


def parse_challenge(value: str) -> DigestChallenge:
    """Parse a ``WWW-Authenticate`` / ``Proxy-Authenticate`` value; raise AuthParseError."""
    what = "challenge"
    params = _parse_digest(value, what)
    _require(params, ("realm", "nonce"), what)
    qop: tuple[str, ...] = ()
    if "qop" in params:
        qop = tuple(q.strip().lower() for q in params["qop"].split(",") if q.strip())
        if not qop:
            raise AuthParseError(f"{what}: empty qop parameter")
    return DigestChallenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=params.get("algorithm", "MD5"),
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def parse_credentials(value: str) -> DigestCredentials:
    """Parse an ``Authorization`` / ``Proxy-Authorization`` value; raise AuthParseError."""
    what = "credentials"
    params = _parse_digest(value, what)
    _require(params, ("username", "realm", "nonce", "uri", "response"), what)
    qop = params.get("qop")
    if qop is not None:
        qop = qop.strip().lower()
        if not qop:
            raise AuthParseError(f"{what}: empty qop parameter")
        _require(params, ("nc", "cnonce"), f"{what} with qop")
    nc = params.get("nc")
    if nc is not None and not _NC.fullmatch(nc):
        raise AuthParseError(f"{what}: nc must be 8 hex digits, got {nc!r}")
    return DigestCredentials(
        username=params["username"],
        realm=params["realm"],
        nonce=params["nonce"],
        uri=params["uri"],
        response=params["response"],
        algorithm=params.get("algorithm", "MD5"),
        qop=qop,
        nc=nc,
        cnonce=params.get("cnonce"),
        opaque=params.get("opaque"),
    )


# --------------------------------------------------------------------------------------
# Serialising


def _quote(value: str) -> str:
    # A CR or LF here would let a configured realm or a peer-supplied string inject headers.
    if any(c in value for c in "\r\n\x00"):
        raise ValueError(f"cannot quote a value containing CR, LF or NUL: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_token(value: str, name: str) -> str:
    if not _TOKEN.fullmatch(value):
        raise ValueError(f"{name} must be a token, got {value!r}")
    return value


def format_challenge(challenge: DigestChallenge) -> str:
    """Serialise a challenge as a header value (``Digest realm="...", ...``)."""
    parts = [
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"algorithm={_check_token(challenge.algorithm, 'algorithm')}",
    ]
    if challenge.qop:
        for q in challenge.qop:
            _check_token(q, "qop")
        parts.append(f'qop="{",".join(challenge.qop)}"')
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    if challenge.stale:
        parts.append("stale=true")
    return "Digest " + ", ".join(parts)


def format_credentials(creds: DigestCredentials) -> str:
    """Serialise credentials as a header value (``Digest username="...", ...``)."""
    parts = [
        f"username={_quote(creds.username)}",
        f"realm={_quote(creds.realm)}",
        f"nonce={_quote(creds.nonce)}",
        f"uri={_quote(creds.uri)}",
        f"response={_quote(creds.response)}",
        f"algorithm={_check_token(creds.algorithm, 'algorithm')}",
    ]
    if creds.cnonce is not None:
        parts.append(f"cnonce={_quote(creds.cnonce)}")
    if creds.opaque is not None:
        parts.append(f"opaque={_quote(creds.opaque)}")
    # qop and nc are bare tokens on purpose: RFC 7616 says they MUST NOT be quoted.
    if creds.qop is not None:
        parts.append(f"qop={_check_token(creds.qop, 'qop')}")
    if creds.nc is not None:
        parts.append(f"nc={_check_token(creds.nc, 'nc')}")
    return "Digest " + ", ".join(parts)


# --------------------------------------------------------------------------------------
# Computation


def compute_ha1(algorithm: DigestAlgorithm, username: str, realm: str, password: str) -> str:
    """``H(username:realm:password)``, the value a user store may keep instead of passwords.

    For the ``-sess`` variants this is still the base value; the nonce and cnonce are mixed in
    by `compute_response`.
    """
    return _h(algorithm, f"{username}:{realm}:{password}")


def compute_response(
    algorithm: DigestAlgorithm,
    ha1: str,
    method: str,
    uri: str,
    nonce: str,
    *,
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
) -> str:
    """The ``response`` value for a base HA1 (see `compute_ha1`); hex, lower case.

    With ``qop=auth`` (``nc`` being the 8 hex digits as sent) the RFC 7616 form is used; with
    no qop, the RFC 2069 form. ``-sess`` needs ``cnonce``.
    """
    if algorithm.is_session:
        if cnonce is None:
            raise ValueError(f"{algorithm.value} needs a cnonce")
        ha1 = _h(algorithm, f"{ha1}:{nonce}:{cnonce}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop is None:
        return _h(algorithm, f"{ha1}:{nonce}:{ha2}")
    if qop != "auth":
        raise ValueError(f"unsupported qop {qop!r}")
    if nc is None or cnonce is None:
        raise ValueError("qop=auth needs nc and cnonce")
    return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")


# --------------------------------------------------------------------------------------
# Client side


def _usable(challenge: DigestChallenge) -> DigestAlgorithm | None:
    algorithm = challenge.digest_algorithm
    if algorithm is None:
        return None
    if challenge.qop and "auth" not in challenge.qop:
        return None
    if not challenge.qop and algorithm.is_session:
        # -sess needs a cnonce, which only exists with qop.
        return None
    return algorithm


def choose_challenge(challenges: Sequence[DigestChallenge]) -> DigestChallenge:
    """Pick the challenge to answer: SHA-256 over MD5, skipping what we cannot answer.

    Among equally strong ones the first wins (servers list theirs in order of preference).
    Raises UnsupportedChallenge if nothing is usable.
    """
    best: DigestChallenge | None = None
    best_rank = len(_CLIENT_PREFERENCE)
    for challenge in challenges:
        algorithm = _usable(challenge)
        if algorithm is not None and _CLIENT_PREFERENCE[algorithm] < best_rank:
            best, best_rank = challenge, _CLIENT_PREFERENCE[algorithm]
    if best is None:
        offered = ", ".join(f"{c.algorithm} qop={','.join(c.qop) or '-'}" for c in challenges)
        raise UnsupportedChallenge(f"no usable digest challenge among: {offered or 'none'}")
    return best


def build_authorization(
    challenge: DigestChallenge,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str,
    nc: int,
) -> str:
    """Answer ``challenge``: the value for an ``Authorization``/``Proxy-Authorization`` header.

    Uses ``qop=auth`` when offered, otherwise the RFC 2069 form (``cnonce`` and ``nc`` are then
    unused). The caller keeps ``nc`` counting up per nonce and picks a fresh random ``cnonce``.
    """
    algorithm = _usable(challenge)
    if algorithm is None:
        raise UnsupportedChallenge(
            f"cannot answer algorithm={challenge.algorithm} qop={','.join(challenge.qop) or '-'}"
        )
    qop: str | None = None
    nc_text: str | None = None
    sent_cnonce: str | None = None
    if challenge.qop:
        if not 1 <= nc <= 0xFFFFFFFF:
            raise ValueError(f"nc out of range: {nc}")
        qop, nc_text, sent_cnonce = "auth", f"{nc:08x}", cnonce
    ha1 = compute_ha1(algorithm, username, challenge.realm, password)
    response = compute_response(
        algorithm, ha1, method, uri, challenge.nonce, qop=qop, nc=nc_text, cnonce=sent_cnonce
    )
    return format_credentials(
        DigestCredentials(
            username=username,
            realm=challenge.realm,
            nonce=challenge.nonce,
            uri=uri,
            response=response,
            algorithm=algorithm.value,
            qop=qop,
            nc=nc_text,
            cnonce=sent_cnonce,
            opaque=challenge.opaque,
        )
    )


# --------------------------------------------------------------------------------------
# Server side: nonces


class NonceState(enum.Enum):
    VALID = "valid"
    STALE = "stale"  # ours and intact, but older than the lifetime
    INVALID = "invalid"  # forged, tampered with, another realm's, or not ours at all


_NONCE_VERSION = 1
_NONCE_HEADER = struct.Struct(">Bq8s")  # version, issued-at in ms, random salt
_NONCE_MAC_LEN = 16
_NONCE_RAW_LEN = _NONCE_HEADER.size + _NONCE_MAC_LEN
_NONCE_TEXT = re.compile(rf"[A-Za-z0-9_-]{{{4 * _NONCE_RAW_LEN // 3}}}")


class NonceManager:
    """Issues and checks stateless, realm-bound nonces.

    ``secret`` must be kept by the caller across restarts (and shared by workers) or every
    outstanding nonce turns INVALID. ``lifetime`` is in seconds. The random salt makes every
    nonce unique, so two phones challenged in the same millisecond never share a
    nonce-count sequence.
    """

    def __init__(
        self,
        secret: bytes,
        lifetime: float,
        *,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("nonce secret must be at least 16 bytes")
        if not lifetime > 0:
            raise ValueError("nonce lifetime must be positive")
        self._secret = bytes(secret)
        self._lifetime = float(lifetime)
        self._random_bytes = random_bytes

    @property
    def lifetime(self) -> float:
        return self._lifetime

    def _mac(self, header: bytes, realm: str) -> bytes:
        return hmac.new(self._secret, header + _utf8(realm), hashlib.sha256).digest()[
            :_NONCE_MAC_LEN
        ]

    def issue(self, realm: str, now: float) -> str:
        try:
            header = _NONCE_HEADER.pack(_NONCE_VERSION, round(now * 1000), self._random_bytes(8))
        except (struct.error, OverflowError) as exc:
            raise ValueError(f"cannot encode nonce time {now!r}") from exc
        raw = header + self._mac(header, realm)
        return base64.urlsafe_b64encode(raw).decode("ascii")

    def issued_at(self, nonce: str, realm: str) -> float | None:
        """When an authentic nonce for ``realm`` was issued (seconds), else None."""
        if not isinstance(nonce, str) or not _NONCE_TEXT.fullmatch(nonce):
            return None
        raw = base64.urlsafe_b64decode(nonce)
        header, mac = raw[: _NONCE_HEADER.size], raw[_NONCE_HEADER.size :]
        version, issued_ms, _salt = _NONCE_HEADER.unpack(header)
        if version != _NONCE_VERSION:
            return None
        if not hmac.compare_digest(mac, self._mac(header, realm)):
            return None
        return issued_ms / 1000

    def state_at(self, issued_at: float, now: float) -> NonceState:
        # A nonce from the future means the wall clock stepped back; the nonce is ours, so
        # let the client refresh it instead of calling it forged.
        return NonceState.VALID if abs(now - issued_at) <= self._lifetime else NonceState.STALE

    def check(self, nonce: str, realm: str, now: float) -> NonceState:
        issued = self.issued_at(nonce, realm)
        if issued is None:
            return NonceState.INVALID
        return self.state_at(issued, now)


class NcCheck(enum.Enum):
    FRESH = "fresh"  # higher than anything seen for this nonce; now recorded
    REPLAY = "replay"  # not higher than the highest seen
    FORGOTTEN = "forgotten"  # may have been evicted: ask for a new nonce to be safe


class NonceCountTracker:
    """Highest nonce-count per nonce, in a bounded LRU; O(1) per check.

    Entries die with their nonce (issue time + lifetime). When the table is full the least
    recently used entry is dropped, and its issue time raises a watermark: a nonce issued at
    or before the watermark that is not in the table might have been dropped, so it is
    answered FORGOTTEN (the caller re-challenges with stale=true) rather than trusted from
    nc=1 again. Nonces issued after the watermark cannot have been dropped, so their first
    use is simply recorded. A full table thus costs some clients one round trip but never
    opens a replay window.
    """

    def __init__(
        self, lifetime: float, max_entries: int = 100_000, *, started_at: float | None = None
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._lifetime = float(lifetime)
        self._max = max_entries
        self._seen: OrderedDict[str, tuple[int, float]] = OrderedDict()
        # Nonces issued before a restart may have counts we no longer know: same treatment
        # as evicted ones.
        self._watermark = float("-inf") if started_at is None else float(started_at)

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, nonce: str, nc: int, issued_at: float, now: float) -> NcCheck:
        self._expire_some(now)
        entry = self._seen.get(nonce)
        if entry is not None and entry[1] + self._lifetime < now:
            del self._seen[nonce]
            entry = None
        if entry is None:
            if issued_at <= self._watermark:
                return NcCheck.FORGOTTEN
            self._seen[nonce] = (nc, issued_at)
            self._evict_overflow(now)
            return NcCheck.FRESH
        self._seen.move_to_end(nonce)
        if nc <= entry[0]:
            return NcCheck.REPLAY
        self._seen[nonce] = (nc, issued_at)
        return NcCheck.FRESH

    def _expire_some(self, now: float) -> None:
        # Look at two entries per call: amortised cleanup without an O(n) sweep. Anything
        # expired that hides behind a live entry is harmless and is dropped later.
        for _ in range(2):
            if not self._seen:
                return
            nonce, (_, issued) = next(iter(self._seen.items()))
            if issued + self._lifetime >= now:
                return
            del self._seen[nonce]

    def _evict_overflow(self, now: float) -> None:
        while len(self._seen) > self._max:
            _, (_, issued) = self._seen.popitem(last=False)
            if issued + self._lifetime >= now:
                self._watermark = max(self._watermark, issued)


# --------------------------------------------------------------------------------------
# Server side: verification


class AuthResult(enum.Enum):
    OK = "ok"
    STALE = "stale"  # right answer, old nonce: re-challenge with stale=true, not a failure
    FAILED = "failed"  # wrong password, unknown user, bad nonce, wrong realm ...
    REPLAY = "replay"  # right answer, but this nonce-count was already used


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """An AuthResult plus a short reason for logs (never for the peer: it may name a cause)."""

    result: AuthResult
    reason: str


_SUPPORTED_QOP = frozenset({"auth"})


class DigestServer:
    """Challenges and verifies digest credentials for any number of realms (tenants)."""

    def __init__(
        self,
        nonces: NonceManager,
        algorithms: Sequence[DigestAlgorithm] = (DigestAlgorithm.SHA256, DigestAlgorithm.MD5),
        *,
        max_tracked_nonces: int = 100_000,
        started_at: float | None = None,
    ) -> None:
        """``started_at`` (wall-clock seconds, if given) makes nonces issued before it answer
        STALE once, because their nonce-counts were lost with the previous process."""
        if not algorithms:
            raise ValueError("at least one algorithm is required")
        self._nonces = nonces
        self._algorithms = tuple(algorithms)
        self._counts = NonceCountTracker(nonces.lifetime, max_tracked_nonces, started_at=started_at)
        # Stand-in secrets for unknown users: random so nobody can log in with them.
        self._dummy_password = secrets.token_hex(16)
        self._dummy_ha1 = {a: _h(a, secrets.token_hex(16)) for a in DigestAlgorithm}

    @property
    def algorithms(self) -> tuple[DigestAlgorithm, ...]:
        return self._algorithms

    def challenges(self, realm: str, now: float, stale: bool = False) -> list[DigestChallenge]:
        """One challenge per algorithm, in order of preference, sharing one fresh nonce."""
        nonce = self._nonces.issue(realm, now)
        return [
            DigestChallenge(realm=realm, nonce=nonce, algorithm=a.value, qop=("auth",), stale=stale)
            for a in self._algorithms
        ]

    def challenge_values(self, realm: str, now: float, stale: bool = False) -> list[str]:
        """Header values for ``WWW-Authenticate``/``Proxy-Authenticate``, one per algorithm."""
        return [format_challenge(c) for c in self.challenges(realm, now, stale)]

    def verify(
        self,
        method: str,
        creds: DigestCredentials,
        realm: str,
        password: str | None,
        now: float,
    ) -> AuthResult:
        """Check ``creds`` for a request; ``password=None`` means the user is unknown.

        The ``uri`` parameter is deliberately not compared with the Request-URI: SIPp and
        some phones put ``sip:host:port`` there, and the response is bound to what they sent.
        Without qop (RFC 2069 form) there is no nonce-count, hence no replay check; such a
        response can be replayed for the nonce lifetime.
        """
        return self.evaluate(method, creds, realm, password, now).result

    def verify_ha1(
        self,
        method: str,
        creds: DigestCredentials,
        realm: str,
        ha1: str | None,
        now: float,
    ) -> AuthResult:
        """Like `verify`, from a stored `compute_ha1` value for the credentials' algorithm.

        The HA1 must have been computed with the hash of ``creds.algorithm`` (MD5 for MD5 and
        MD5-sess, SHA-256 for the SHA-256 pair); ``ha1=None`` means the user is unknown.
        """
        return self.evaluate_ha1(method, creds, realm, ha1, now).result

    def evaluate(
        self,
        method: str,
        creds: DigestCredentials,
        realm: str,
        password: str | None,
        now: float,
    ) -> AuthVerdict:
        """`verify` with a reason for the logs."""
        return self._evaluate(method, creds, realm, now, password, is_ha1=False)

    def evaluate_ha1(
        self,
        method: str,
        creds: DigestCredentials,
        realm: str,
        ha1: str | None,
        now: float,
    ) -> AuthVerdict:
        """`verify_ha1` with a reason for the logs."""
        return self._evaluate(method, creds, realm, now, ha1, is_ha1=True)

    def _evaluate(
        self,
        method: str,
        creds: DigestCredentials,
        realm: str,
        now: float,
        secret: str | None,
        *,
        is_ha1: bool,
    ) -> AuthVerdict:
        # Checks that do not depend on who the user is may return early: they reveal nothing.
        if not creds.username:
            return AuthVerdict(AuthResult.FAILED, "empty username")
        if creds.realm != realm:
            return AuthVerdict(AuthResult.FAILED, f"realm {creds.realm!r} is not {realm!r}")
        algorithm = creds.digest_algorithm
        if algorithm is None or algorithm not in self._algorithms:
            return AuthVerdict(AuthResult.FAILED, f"algorithm {creds.algorithm!r} not offered")
        nc_value: int | None = None
        if creds.qop is not None:
            if creds.qop not in _SUPPORTED_QOP:
                return AuthVerdict(AuthResult.FAILED, f"qop {creds.qop!r} not supported")
            nc_value = creds.nc_value
            if nc_value is None or creds.cnonce is None:
                return AuthVerdict(AuthResult.FAILED, "qop without valid nc and cnonce")
        elif algorithm.is_session:
            return AuthVerdict(AuthResult.FAILED, f"{algorithm.value} without qop")
        issued = self._nonces.issued_at(creds.nonce, realm)
        if issued is None:
            return AuthVerdict(AuthResult.FAILED, "nonce not issued by us for this realm")

        # From here on, known and unknown users walk the same path at the same cost: an
        # unknown user gets a random stand-in secret of the same kind.
        known = secret is not None
        if is_ha1:
            base_ha1 = secret.lower() if secret is not None else self._dummy_ha1[algorithm]
        else:
            password = secret if secret is not None else self._dummy_password
            base_ha1 = compute_ha1(algorithm, creds.username, realm, password)
        expected = compute_response(
            algorithm,
            base_ha1,
            method,
            creds.uri,
            creds.nonce,
            qop=creds.qop,
            nc=creds.nc,
            cnonce=creds.cnonce,
        )
        matches = hmac.compare_digest(_utf8(expected), _utf8(creds.response.lower()))
        if not (matches and known):
            return AuthVerdict(AuthResult.FAILED, "wrong password or unknown user")

        if self._nonces.state_at(issued, now) is NonceState.STALE:
            return AuthVerdict(AuthResult.STALE, "nonce expired")
        if nc_value is not None:
            seen = self._counts.check(creds.nonce, nc_value, issued, now)
            if seen is NcCheck.REPLAY:
                return AuthVerdict(AuthResult.REPLAY, f"nc {creds.nc} already used")
            if seen is NcCheck.FORGOTTEN:
                return AuthVerdict(AuthResult.STALE, "nonce-count history evicted")
        return AuthVerdict(AuthResult.OK, "ok")
