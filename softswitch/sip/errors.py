"""SIP errors that know their response.

Inside the SIP layers every protocol fault is raised as a SipError carrying the status
and reason phrase it should be answered with; the one place that turns a failed request
into a response is the transaction user's front door, so a fault never leaks as a
traceback (the aioquic ``ProtocolError.error_code`` / h11 ``error_status_hint`` idea).
"""

from __future__ import annotations

from softswitch.errors import SoftswitchError


class SipError(SoftswitchError):
    status: int = 500
    reason: str = "Server Internal Error"

    def __init__(self, reason: str | None = None, status: int | None = None) -> None:
        if status is not None:
            self.status = status
        if reason is not None:
            self.reason = reason
        super().__init__(f"{self.status} {self.reason}")


class SipParseError(SipError):
    """The bytes are not a SIP message we can act on (answered with 400 when routable)."""

    status = 400
    reason = "Bad Request"


class MessageTooLarge(SipParseError):
    status = 513
    reason = "Message Too Large"


class VersionNotSupported(SipParseError):
    status = 505
    reason = "Version Not Supported"


class UnsupportedUriScheme(SipParseError):
    status = 416
    reason = "Unsupported URI Scheme"
