"""The expected treatment of every RFC 4475 / RFC 5118 torture message.

Shared data: the parser tests (test_torture.py) check it against ``parse_message``, and a
daemon integration test can replay each file at a running softswitch, check the answer,
and then check that the softswitch still answers OPTIONS. ``tests/data/sip/torture.json``
holds the same table for tests that cannot import this module (test_torture.py keeps the
two in step).

kind:
  accept  the parser accepts it and nothing in it calls for an error answer; ordinary
          processing follows (status is None).
  app     the parser accepts it (it is well-formed), but the layer above must answer
          ``status``: the answer is recorded here because that layer lands later.
  reject  parse_message raises BadMessage with ``status`` and a reason phrase containing
          ``reason_contains``; the partial message is enough to route that response.
  drop    parse_message raises BadMessage and no response may be sent (the fault is in
          a response, or the top Via is unreadable): the message is dropped and logged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent.parent / "data" / "sip"
JSON_PATH = DATA_DIR / "torture.json"


@dataclass(frozen=True)
class TortureCase:
    filename: str  # relative to tests/data/sip
    kind: str  # accept | app | reject | drop
    status: int | None
    reason_contains: str | None
    note: str

    @property
    def path(self) -> Path:
        return DATA_DIR / self.filename

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _c(filename: str, kind: str, status: int | None, reason: str | None, note: str) -> TortureCase:
    return TortureCase(filename, kind, status, reason, note)


A, P, R, D = "accept", "app", "reject", "drop"
T = "rfc4475/"
S = "rfc5118/"

CASES: list[TortureCase] = [
    # -- RFC 4475 3.1.1: valid messages -----------------------------------------------
    _c(T + "wsinv.sip", A, None, None, "3.1.1.1 folding, escapes, LWS everywhere, 3 Vias"),
    _c(T + "intmeth.sip", A, None, None, "3.1.1.2 odd method/URI/tokens; app: 501 or 404"),
    _c(T + "esc01.sip", A, None, None, "3.1.1.3 % escapes: R-URI user is sips:user@..."),
    _c(T + "escnull.sip", A, None, None, "3.1.1.4 %00 in user parts; two Contacts"),
    _c(T + "esc02.sip", A, None, None, "3.1.1.5 % not an escape: unknown method, 2 Contacts"),
    _c(T + "lwsdisp.sip", A, None, None, "3.1.1.6 no LWS between display name and <"),
    _c(T + "longreq.sip", A, None, None, "3.1.1.7 long values, 34 Vias in mixed forms"),
    _c(T + "dblreq.sip", A, None, None, "3.1.1.8 REGISTER; the trailing INVITE is ignored"),
    _c(T + "semiuri.sip", A, None, None, "3.1.1.9 user part is user;par=u%40example.net"),
    _c(T + "transports.sip", A, None, None, "3.1.1.10 unknown transports in Via"),
    _c(T + "mpart01.sip", A, None, None, "3.1.1.11 multipart body with binary part"),
    _c(T + "unreason.sip", A, None, None, "3.1.1.12 UTF-8 reason phrase"),
    _c(T + "noreason.sip", A, None, None, "3.1.1.13 empty reason phrase"),
    # -- RFC 4475 3.1.2: invalid messages ---------------------------------------------
    _c(T + "badinv01.sip", R, 400, "Via", "3.1.2.1 ;;,;,, in Via (lenient top Via routes)"),
    _c(T + "clerr.sip", R, 400, "Content-Length", "3.1.2.2 over UDP; TCP would wait"),
    _c(T + "ncl.sip", R, 400, "Bad Content-Length header", "3.1.2.3 negative length"),
    _c(T + "scalar02.sip", R, 400, "CSeq", "3.1.2.4 CSeq > 2**31-1, Max-Forwards 300"),
    _c(T + "scalarlg.sip", D, 400, "CSeq", "3.1.2.5 a response: discarded, never answered"),
    _c(T + "quotbal.sip", R, 400, "Bad To header", "3.1.2.6 unterminated quoted string"),
    _c(T + "ltgtruri.sip", R, 400, "Request-URI", "3.1.2.7 <> around the Request-URI"),
    _c(T + "lwsruri.sip", R, 400, "request line", "3.1.2.8 LWS inside the Request-URI"),
    _c(T + "lwsstart.sip", R, 400, "request line", "3.1.2.9 several SP between elements"),
    _c(T + "trws.sip", R, 400, "request line", "3.1.2.10 SP after SIP/2.0"),
    _c(T + "escruri.sip", R, 400, "Request-URI", "3.1.2.11 escaped headers in R-URI"),
    _c(
        T + "baddate.sip",
        A,
        None,
        None,
        "3.1.2.12 non-GMT Date: the RFC allows ignoring a Date nobody uses; we never read it",
    ),
    _c(
        T + "regbadct.sip",
        P,
        400,
        "Contact",
        "3.1.2.13 addr-spec Contact with '?': Contact is parsed lazily, so the registrar "
        "answers 400 when it reads the binding (parse_contacts raises)",
    ),
    _c(T + "badaspec.sip", R, 400, "Bad To header", "3.1.2.14 spaces inside <addr-spec>"),
    _c(T + "baddn.sip", R, 400, "Bad From header", "3.1.2.15 unquoted comma in display"),
    _c(T + "badvers.sip", R, 505, "Version Not Supported", "3.1.2.16 SIP/7.0"),
    _c(T + "mismatch01.sip", R, 400, "CSeq method", "3.1.2.17 OPTIONS with CSeq INVITE"),
    _c(
        T + "mismatch02.sip",
        R,
        400,
        "CSeq method",
        "3.1.2.18 unknown method + CSeq INVITE: the RFC prefers 501, allows 400; the "
        "parser cannot know which methods are implemented, so 400",
    ),
    _c(T + "bigcode.sip", D, 400, "status code", "3.1.2.19 a response: discarded"),
    # -- RFC 4475 3.2: transaction layer ----------------------------------------------
    _c(
        T + "badbranch.sip",
        A,
        None,
        None,
        "3.2.1 branch is only the magic cookie: must parse; the transaction layer may "
        "answer 400 statelessly or fall back to RFC 2543 matching",
    ),
    # -- RFC 4475 3.3: application layer ----------------------------------------------
    _c(T + "insuf.sip", R, 400, "Missing Call-ID header", "3.3.1 no Call-ID/From/To/M-F"),
    _c(T + "unkscm.sip", R, 416, "Unsupported URI Scheme", "3.3.2 unknown R-URI scheme"),
    _c(T + "novelsc.sip", R, 416, "Unsupported URI Scheme", "3.3.3 soap.beep R-URI"),
    _c(
        T + "unksm2.sip",
        P,
        400,
        None,
        "3.3.4 isbn:/http:/name: URIs parse; a registrar answers 400 (AOR not SIP)",
    ),
    _c(T + "bext01.sip", P, 420, "Bad Extension", "3.3.5 unknown Require/Proxy-Require"),
    _c(T + "invut.sip", P, 415, "Unsupported Media Type", "3.3.6 unknown Content-Type"),
    _c(T + "regaut01.sip", P, 401, None, "3.3.7 unknown auth scheme: challenge with 401"),
    _c(T + "multi01.sip", R, 400, "Multiple", "3.3.8 two Call-ID/CSeq/To/From/M-F"),
    _c(T + "mcl01.sip", R, 400, "Content-Length", "3.3.9 two different Content-Lengths"),
    _c(
        T + "bcast.sip",
        A,
        None,
        None,
        "3.3.10 200 OK with 255.255.255.255 in the second Via: parses; a response is "
        "never answered",
    ),
    _c(
        T + "zeromf.sip",
        P,
        483,
        "Too Many Hops",
        "3.3.11 Max-Forwards 0 towards another user: 483 (an OPTIONS addressed to the "
        "softswitch itself would get 200)",
    ),
    _c(T + "cparam01.sip", A, None, None, "3.3.12 ;unknownparam is a Contact parameter"),
    _c(T + "cparam02.sip", A, None, None, "3.3.13 ;unknownparam is a URI parameter"),
    _c(T + "regescrt.sip", A, None, None, "3.3.14 escaped Route header in Contact URI"),
    _c(T + "sdp01.sip", P, 406, "Not Acceptable", "3.3.15 Accept lists no type we can send"),
    # -- RFC 4475 3.4: backward compatibility ------------------------------------------
    _c(T + "inv2543.sip", A, None, None, "3.4.1 RFC 2543: no branch, no M-F, no tag/CL"),
    # -- RFC 5118 section 4: IPv6 ------------------------------------------------------
    _c(S + "ipv6-good.sip", A, None, None, "4.1 IPv6 references in R-URI, Via, Contact"),
    _c(S + "ipv6-bad.sip", R, 400, "IPv6", "4.2 IPv6 R-URI without brackets"),
    _c(S + "port-ambiguous.sip", A, None, None, "4.3 [2001:db8::10:5070] has no port"),
    _c(S + "port-unambiguous.sip", A, None, None, "4.4 [2001:db8::10]:5070"),
    _c(S + "via-received-param-with-delim.sip", A, None, None, "4.5 received=[v6]"),
    _c(S + "via-received-param-no-delim.sip", A, None, None, "4.5 received=v6"),
    _c(
        S + "ipv6-in-sdp.sip",
        R,
        400,
        "Content-Length",
        "4.6 as printed in the RFC the body is 253 octets but Content-Length says 268; "
        "RFC 3261 18.3 makes that a 400 on a datagram (the IPv6 parts are checked with "
        "a corrected length in test_torture.py)",
    ),
    _c(S + "mult-ip-in-header.sip", A, None, None, "4.7 IPv4 and IPv6 Vias"),
    _c(
        S + "mult-ip-in-sdp.sip",
        A,
        None,
        None,
        "4.8 as printed, Content-Length (181) is shorter than the body: octets past it "
        "are discarded (RFC 3261 18.3)",
    ),
    _c(
        S + "ipv4-mapped-ipv6.sip",
        A,
        None,
        None,
        "4.9 [::ffff:192.0.2.10]; as printed, Content-Length 236 is shorter than the body",
    ),
    _c(S + "ipv6-bug-abnf-3-colons.sip", R, 400, "Request-URI", "4.10 2001:db8:::... invalid"),
    _c(S + "ipv6-correct-abnf-2-colons.sip", A, None, None, "4.10 2001:db8::192.0.2.1"),
]
