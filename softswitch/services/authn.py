"""Who is asking: digest authentication of requests from a tenant's extensions.

One policy for REGISTER (401/WWW-Authenticate) and, later, INVITE and other requests
(407/Proxy-Authenticate). Two promises an operator relies on:

- an unknown user and a wrong password get exactly the same answers, so nobody can
  discover which extension numbers exist;
- only real failures count towards a ban: a request without credentials that gets the
  first challenge is the normal start of every registration, not an attack.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from softswitch.config import Extension, Tenant
from softswitch.services.bans import AuthFailureTracker
from softswitch.sip.auth import (
    AuthParseError,
    AuthResult,
    DigestCredentials,
    DigestServer,
    format_challenge,
    parse_credentials,
)
from softswitch.sip.message import Request
from softswitch.sip.quirks import DEFAULT_MD5_ONLY_USER_AGENTS, wants_md5_only

FOREIGN_NONCE = "nonce not issued by us for this realm"


class AuthKind(enum.Enum):
    """Which header pair a challenge uses (RFC 3261 sections 22.2 and 22.3)."""

    WWW = (401, "WWW-Authenticate", "authorization")
    PROXY = (407, "Proxy-Authenticate", "proxy-authorization")

    @property
    def status(self) -> int:
        return self.value[0]

    @property
    def challenge_header(self) -> str:
        return self.value[1]

    @property
    def credentials_header(self) -> str:
        return self.value[2]


@dataclass(frozen=True, slots=True)
class AuthOutcome:
    """``extension`` is set when authenticated; otherwise ``status`` and ``headers`` are
    the response to send (a challenge or 403) and ``failure`` says whether it counts."""

    extension: Extension | None
    status: int = 0
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    failure: bool = False
    banned_now: bool = False
    log_reason: str = ""


class Authenticator:
    def __init__(
        self,
        digest: DigestServer,
        bans: AuthFailureTracker,
        md5_only_user_agents: tuple[str, ...] = DEFAULT_MD5_ONLY_USER_AGENTS,
    ) -> None:
        self.digest = digest
        self.bans = bans
        self.md5_only_user_agents = md5_only_user_agents

    def challenge(
        self,
        kind: AuthKind,
        tenant: Tenant,
        now_wall: float,
        *,
        stale: bool = False,
        request: Request | None = None,
    ) -> AuthOutcome:
        challenges = self.digest.challenges(tenant.domain, now_wall, stale=stale)
        if request is not None and wants_md5_only(
            request.headers.get("user-agent"), self.md5_only_user_agents
        ):
            challenges = [c for c in challenges if c.algorithm.upper() == "MD5"]
        headers = tuple((kind.challenge_header, format_challenge(c)) for c in challenges)
        return AuthOutcome(None, kind.status, "", headers)

    def check(
        self,
        request: Request,
        kind: AuthKind,
        tenant: Tenant,
        user: str,
        source_ip: str,
        now_wall: float,
        now_mono: float,
    ) -> AuthOutcome:
        """Authenticate ``request`` as extension ``user`` of ``tenant``."""
        creds = self._credentials(request, kind, tenant.domain)
        if creds is None:
            return self.challenge(kind, tenant, now_wall, request=request)
        extension = tenant.extension(creds.username)
        # Whatever is wrong, verification runs the same way: an unknown user is checked
        # against a stand-in password so that neither answer nor timing tells them apart.
        password = extension.password if extension is not None else None
        verdict = self.digest.evaluate(request.method, creds, tenant.domain, password, now_wall)
        result = verdict.result
        if result is AuthResult.STALE:
            return self.challenge(kind, tenant, now_wall, stale=True, request=request)
        if result is AuthResult.OK and extension is not None and creds.username == user:
            self.bans.record_success(source_ip)
            return AuthOutcome(extension)
        if verdict.reason == FOREIGN_NONCE:
            # A nonce we never issued (a secret from before a reinstall, another server):
            # no password was tested against our challenge, so it is no failure either.
            return self.challenge(kind, tenant, now_wall, request=request)
        if result is AuthResult.OK:
            why = "authenticated as another extension"
        elif result is AuthResult.REPLAY:
            why = "nonce-count replayed"
        elif extension is None:
            why = "unknown user"
        else:
            why = "wrong password"
        banned = self.bans.record_failure(source_ip, now_mono)
        return AuthOutcome(None, 403, "Forbidden", (), True, banned, why)

    @staticmethod
    def _credentials(request: Request, kind: AuthKind, realm: str) -> DigestCredentials | None:
        """The credentials meant for this realm, or None (then we challenge)."""
        for value in request.headers.get_all(kind.credentials_header):
            try:
                creds = parse_credentials(value)
            except AuthParseError:
                continue
            if creds.realm == realm:
                return creds
        return None
