"""Hand-built SIP requests over plain UDP sockets, and a client-side digest helper.

Deliberately independent of the daemon's own SIP code: a test that used the code under
test to build its requests could not catch a symmetric mistake.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

Address = tuple[str, int]

# RFC 3261 7.3.3 compact forms, so header lookups work whatever the peer sends.
_COMPACT = {
    "v": "via",
    "f": "from",
    "t": "to",
    "i": "call-id",
    "m": "contact",
    "l": "content-length",
    "c": "content-type",
    "k": "supported",
    "s": "subject",
    "e": "content-encoding",
}


def canonical_header_name(name: str) -> str:
    lower = name.strip().lower()
    return _COMPACT.get(lower, lower)


def new_branch() -> str:
    return "z9hG4bK" + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id() -> str:
    return secrets.token_hex(12) + "@127.0.0.1"


@dataclass(frozen=True)
class SipResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    @property
    def status_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def header_names(self) -> list[str]:
        return [canonical_header_name(n) for n, _ in self.headers]

    def get_all(self, name: str) -> list[str]:
        want = canonical_header_name(name)
        return [v for n, v in self.headers if canonical_header_name(n) == want]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None


def parse_response(data: bytes) -> SipResponse | None:
    """A response datagram, or None if ``data`` is not a SIP response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8", "replace").split("\r\n")
    m = re.match(r"SIP/2\.0 (\d{3}) ?(.*)$", lines[0])
    if not m:
        return None
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            # Folded continuation line (RFC 3261 7.3.1).
            name, value = headers[-1]
            headers[-1] = (name, value + " " + line.strip())
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return SipResponse(int(m.group(1)), m.group(2), headers, body, data)


def build_request(
    method: str,
    request_uri: str,
    *,
    local: Address,
    from_uri: str,
    to_uri: str,
    call_id: str | None = None,
    cseq: int = 1,
    from_tag: str | None = None,
    branch: str | None = None,
    contact: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    transport: str = "UDP",
) -> bytes:
    """A complete request; ``local`` is the sent-by address the response must reach."""
    host, port = local
    lines = [
        f"{method} {request_uri} SIP/2.0",
        f"Via: SIP/2.0/{transport} {host}:{port};rport;branch={branch or new_branch()}",
        "Max-Forwards: 70",
        f"From: <{from_uri}>;tag={from_tag or new_tag()}",
        f"To: <{to_uri}>",
        f"Call-ID: {call_id or new_call_id()}",
        f"CSeq: {cseq} {method}",
    ]
    if contact:
        lines.append(f"Contact: {contact}")
    lines.extend(f"{n}: {v}" for n, v in headers)
    lines.append("User-Agent: softswitch-tests")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def _udp_socket(bind_host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((bind_host, 0))
    return sock


def send_request(
    raw: bytes,
    host: str,
    port: int,
    *,
    timeout: float = 2.0,
    sock: socket.socket | None = None,
    retransmit: float | None = 0.5,
) -> SipResponse | None:
    """Send ``raw`` over UDP and return the first final response, or None on timeout.

    Provisional responses are skipped. Retransmits like a UAC would (doubling from
    ``retransmit`` seconds) so one lost datagram does not fail a test; pass ``None``
    to send exactly once. Responses that belong to another request (different
    Call-ID or CSeq) are ignored. With ``sock=None`` a fresh socket is used, and the
    Via in ``raw`` must then carry rport, as ``build_request`` does.
    """
    own = sock is None
    s = sock or _udp_socket()
    call_id, cseq = _ids_of(raw)
    try:
        deadline = time.monotonic() + timeout
        interval = retransmit
        next_send = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if next_send is not None and now >= next_send:
                s.sendto(raw, (host, port))
                if interval is None:
                    next_send = None
                else:
                    next_send = now + interval
                    interval = min(interval * 2, 4.0)
            wait = deadline - now
            if next_send is not None:
                wait = min(wait, max(next_send - now, 0.001))
            s.settimeout(wait)
            try:
                data, _ = s.recvfrom(65535)
            except TimeoutError:
                continue
            resp = parse_response(data)
            if resp is None or resp.status < 200:
                continue
            if call_id and resp.get("call-id") != call_id:
                continue
            if cseq and resp.get("cseq") != cseq:
                continue
            return resp
    finally:
        if own:
            s.close()


def _ids_of(raw: bytes) -> tuple[str | None, str | None]:
    text = raw.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    call_id = cseq = None
    for line in text.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        canon = canonical_header_name(name)
        if canon == "call-id":
            call_id = value.strip()
        elif canon == "cseq":
            cseq = " ".join(value.split())
    return call_id, cseq


def send_options(host: str, port: int, timeout: float = 1.0) -> str | None:
    """Status line of the answer to an out-of-dialog OPTIONS, or None if none came."""
    with _udp_socket() as s:
        local = s.getsockname()
        raw = build_request(
            "OPTIONS",
            f"sip:{host}:{port}",
            local=local,
            from_uri=f"sip:probe@{local[0]}:{local[1]}",
            to_uri=f"sip:{host}:{port}",
            headers=[("Accept", "application/sdp")],
        )
        resp = send_request(raw, host, port, timeout=timeout, sock=s)
    return resp.status_line if resp else None


class SipUdpClient:
    """One UDP socket acting as a phone: builds requests whose Via matches the socket."""

    def __init__(self, server: Address, bind_host: str = "127.0.0.1") -> None:
        self.server = server
        self.sock = _udp_socket(bind_host)
        self.local: Address = self.sock.getsockname()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> SipUdpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, raw: bytes, timeout: float = 2.0, retransmit: float | None = 0.5):
        return send_request(
            raw, *self.server, timeout=timeout, sock=self.sock, retransmit=retransmit
        )

    def register_request(
        self,
        user: str,
        domain: str,
        *,
        call_id: str,
        cseq: int,
        from_tag: str,
        expires: int = 300,
        authorization: str | None = None,
        request_uri: str | None = None,
    ) -> bytes:
        aor = f"sip:{user}@{domain}"
        extra = [("Expires", str(expires))]
        if authorization:
            extra.append(("Authorization", authorization))
        return build_request(
            "REGISTER",
            request_uri or f"sip:{domain}",
            local=self.local,
            from_uri=aor,
            to_uri=aor,
            call_id=call_id,
            cseq=cseq,
            from_tag=from_tag,
            contact=f"<sip:{user}@{self.local[0]}:{self.local[1]}>",
            headers=extra,
        )


# --- digest (RFC 2617 / RFC 7616 / RFC 8760), client side -------------------------

_HASHES = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
}


@dataclass(frozen=True)
class DigestChallenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    params: dict[str, str] = field(default_factory=dict)


def parse_auth_params(value: str) -> tuple[str, dict[str, str]]:
    """Scheme and parameters of a WWW-Authenticate/Authorization value.

    Commas inside quoted strings do not split parameters; keys are lower-cased.
    """
    scheme, _, rest = value.strip().partition(" ")
    params: dict[str, str] = {}
    for m in re.finditer(r'\s*([A-Za-z0-9_-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)\s*,?', rest):
        key, raw_value = m.group(1).lower(), m.group(2)
        if raw_value.startswith('"'):
            raw_value = re.sub(r"\\(.)", r"\1", raw_value[1:-1])
        params[key] = raw_value
    return scheme, params


def parse_challenges(resp: SipResponse) -> list[DigestChallenge]:
    """Digest challenges of a 401/407, in the order the server listed them."""
    out = []
    for value in resp.get_all("www-authenticate") + resp.get_all("proxy-authenticate"):
        scheme, p = parse_auth_params(value)
        if scheme.lower() != "digest":
            continue
        qop = tuple(q.strip() for q in p.get("qop", "").split(",") if q.strip())
        out.append(
            DigestChallenge(
                realm=p.get("realm", ""),
                nonce=p.get("nonce", ""),
                algorithm=p.get("algorithm", "MD5").upper(),
                qop=qop,
                opaque=p.get("opaque"),
                stale=p.get("stale", "").lower() == "true",
                params=p,
            )
        )
    return out


def pick_challenge(challenges: Sequence[DigestChallenge], algorithm: str) -> DigestChallenge:
    for ch in challenges:
        if ch.algorithm == algorithm.upper():
            return ch
    raise LookupError(f"no {algorithm} challenge among {[c.algorithm for c in challenges]}")


def digest_authorization(
    challenge: DigestChallenge,
    *,
    method: str,
    uri: str,
    username: str,
    password: str,
    cnonce: str | None = None,
    nc: int = 1,
) -> str:
    """Authorization header value answering ``challenge`` (MD5 or SHA-256, qop=auth)."""
    h = _HASHES.get(challenge.algorithm)
    if h is None:
        raise ValueError(f"unsupported digest algorithm {challenge.algorithm}")

    def hx(s: str) -> str:
        return h(s.encode()).hexdigest()

    ha1 = hx(f"{username}:{challenge.realm}:{password}")
    ha2 = hx(f"{method}:{uri}")
    parts = [
        f'username="{username}"',
        f'realm="{challenge.realm}"',
        f'nonce="{challenge.nonce}"',
        f'uri="{uri}"',
        f"algorithm={challenge.algorithm}",
    ]
    if "auth" in challenge.qop:
        cnonce = cnonce or secrets.token_hex(8)
        nc_text = f"{nc:08x}"
        response = hx(f"{ha1}:{challenge.nonce}:{nc_text}:{cnonce}:auth:{ha2}")
        parts += ["qop=auth", f'cnonce="{cnonce}"', f"nc={nc_text}"]
    else:
        response = hx(f"{ha1}:{challenge.nonce}:{ha2}")
    parts.append(f'response="{response}"')
    if challenge.opaque is not None:
        parts.append(f'opaque="{challenge.opaque}"')
    return "Digest " + ", ".join(parts)
