"""Answering a carrier's digest challenges (client side), for REGISTER and INVITE alike.

One `DigestClient` per credential set and dialog or registration. It remembers the last
challenge so refreshes can carry credentials up front (one round trip instead of two),
counts nonce uses (``nc``) and tells a rejected password from an expired nonce: after we
answered a fresh challenge, another challenge without ``stale=true`` means the carrier
did not like our credentials, and asking again would only get the account locked.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from softswitch.sip.auth import (
    AuthParseError,
    DigestChallenge,
    UnsupportedChallenge,
    build_authorization,
    choose_challenge,
    parse_challenge,
)
from softswitch.sip.headers import Headers, Via
from softswitch.sip.message import Request, Response
from softswitch.sip.transaction.keys import new_branch

__all__ = ["AuthFailure", "Credentials", "DigestClient", "with_credentials"]

# In a row, stale nonces are normal once; a peer that keeps saying stale is broken.
_MAX_STALE_IN_A_ROW = 3


@dataclass(frozen=True, slots=True)
class Credentials:
    """A header to add: (``Authorization`` or ``Proxy-Authorization``, value)."""

    header: str
    value: str


@dataclass(frozen=True, slots=True)
class AuthFailure:
    reason: str


def _default_cnonce() -> str:
    return secrets.token_hex(8)


class DigestClient:
    def __init__(
        self,
        username: str,
        password: str,
        *,
        cnonce: Callable[[], str] = _default_cnonce,
    ) -> None:
        self._username = username
        self._password = password
        self._cnonce = cnonce
        self._challenge: DigestChallenge | None = None
        self._header = "Authorization"
        self._nc = 0
        self._fresh_answer = False  # the last request answered a challenge just received
        self._stale_in_a_row = 0

    @property
    def challenge(self) -> DigestChallenge | None:
        return self._challenge

    def answer(self, response: Response, method: str, uri: str) -> Credentials | AuthFailure:
        """Credentials for re-sending the request that got ``response`` (401 or 407)."""
        if response.status == 401:
            header, challenge_header = "Authorization", "www-authenticate"
        elif response.status == 407:
            header, challenge_header = "Proxy-Authorization", "proxy-authenticate"
        else:
            return AuthFailure(f"{response.status} is not a challenge")
        challenges: list[DigestChallenge] = []
        for value in response.headers.get_all(challenge_header):
            try:
                challenges.append(parse_challenge(value))
            except AuthParseError:
                continue  # a Basic or broken challenge next to a usable Digest one
        try:
            chosen = choose_challenge(challenges)
        except UnsupportedChallenge as exc:
            self._fresh_answer = False
            return AuthFailure(str(exc))
        if self._fresh_answer and not chosen.stale:
            self._fresh_answer = False
            same = self._challenge is not None and chosen.nonce == self._challenge.nonce
            what = "the same nonce" if same else "a new nonce"
            return AuthFailure(
                f"credentials rejected ({response.status} again with {what}, not stale):"
                " wrong username or password"
            )
        if chosen.stale:
            self._stale_in_a_row += 1
            if self._stale_in_a_row > _MAX_STALE_IN_A_ROW:
                self._fresh_answer = False
                return AuthFailure("peer keeps answering stale=true")
        else:
            self._stale_in_a_row = 0
        if self._challenge is not None and chosen.nonce == self._challenge.nonce:
            self._nc += 1
        else:
            self._nc = 1
        self._challenge = chosen
        self._header = header
        self._fresh_answer = True
        return self._credentials(method, uri)

    def preemptive(self, method: str, uri: str) -> Credentials | None:
        """Credentials from the last challenge, for a new request (``nc`` counts on), or
        None before any challenge. A challenge to this request is then answered afresh."""
        if self._challenge is None:
            return None
        self._nc += 1
        self._fresh_answer = False
        return self._credentials(method, uri)

    def accepted(self) -> None:
        """The request carrying our credentials got a non-challenge final response."""
        self._fresh_answer = False
        self._stale_in_a_row = 0

    def forget(self) -> None:
        """Drop the cached challenge (new credentials, or a new registration)."""
        self._challenge = None
        self._nc = 0
        self._fresh_answer = False
        self._stale_in_a_row = 0

    def _credentials(self, method: str, uri: str) -> Credentials:
        assert self._challenge is not None
        if self._nc > 0xFFFFFFFF:
            self._nc = 1
        value = build_authorization(
            self._challenge, method, uri, self._username, self._password, self._cnonce(), self._nc
        )
        return Credentials(self._header, value)


def with_credentials(request: Request, credentials: Credentials) -> Request:
    """``request`` re-sent with credentials: a new transaction (fresh branch, CSeq + 1,
    RFC 3261 section 22.2) in the same dialog, and the credentials header set."""
    headers = request.headers
    vias = headers.get_all("via")
    if not vias:
        raise ValueError("request has no Via")
    top = request.top_via
    params = tuple((k, v) for k, v in top.params if k.lower() not in ("branch",))
    new_top = Via(top.transport, top.host, top.port, (("branch", new_branch()), *params))
    headers = headers.remove_first("via").prepend("Via", str(new_top))
    cseq = request.cseq
    headers = headers.replace("CSeq", f"{cseq.seq + 1} {cseq.method}")
    headers = headers.remove("authorization").remove("proxy-authorization")
    headers = _insert_before_length(headers, credentials.header, credentials.value)
    return request.replace(headers=headers)


def _insert_before_length(headers: Headers, name: str, value: str) -> Headers:
    lines = list(headers)
    for i, (raw, _value) in enumerate(lines):
        if raw.lower() in ("content-length", "l"):
            lines.insert(i, (name, value))
            break
    else:
        lines.append((name, value))
    return Headers(lines)
