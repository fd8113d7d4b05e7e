"""Named interop workarounds: each has a name, a config switch and a test.

``md5_only``: some SIP stacks give up on a 401 as soon as any of its ``WWW-Authenticate``
values names an algorithm other than MD5, instead of taking the first one they support
as RFC 8760 section 2.4 asks. libre (baresip 1.0) fails with "Function not implemented"
whether SHA-256 comes first or second; older desk-phone firmware is reported to do the
same. A User-Agent that starts with one of the configured prefixes is offered MD5 alone;
everybody else gets SHA-256 and MD5 side by side, SHA-256 first.
"""

from __future__ import annotations

DEFAULT_MD5_ONLY_USER_AGENTS: tuple[str, ...] = ("baresip",)


def wants_md5_only(user_agent: str | None, prefixes: tuple[str, ...]) -> bool:
    if not user_agent or not prefixes:
        return False
    ua = user_agent.strip().lower()
    return any(ua.startswith(p.lower()) for p in prefixes)
