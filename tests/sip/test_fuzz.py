"""Property-based fuzzing of the parser and the stream framer.

Only SipParseError (and its subclasses) may ever escape; whatever parses must serialize
and re-parse to the same message; the framer must cut any chunking of valid traffic back
into exactly the messages that were sent.

Examples per test: $SIP_FUZZ_EXAMPLES, else 10,000 under CI (env CI set), else 2,000.
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softswitch.sip.errors import SipParseError
from softswitch.sip.framing import KEEPALIVE_PING, NEED_DATA, FramingError, StreamFramer
from softswitch.sip.headers import header_key
from softswitch.sip.message import Message, Request, Response, parse_message
from tests.sip.torture_cases import CASES

EXAMPLES = int(os.environ.get("SIP_FUZZ_EXAMPLES", 10_000 if os.environ.get("CI") else 2_000))
settings.register_profile(
    "sip-fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FUZZ = settings(settings.get_profile("sip-fuzz"))

REGISTER = (
    b"REGISTER sip:example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\nTo: <sip:alice@example.com>\r\n"
    b'From: "Alice" <sip:alice@example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\nCSeq: 314159 REGISTER\r\n"
    b"Contact: <sip:alice@192.0.2.10:5060;transport=udp>;expires=3600\r\n"
    b'Authorization: Digest username="alice", realm="example.com", nonce="abc", '
    b'uri="sip:example.com", response="0123456789abcdef0123456789abcdef"\r\n'
    b"Content-Length: 0\r\n\r\n"
)
INVITE = (
    b"INVITE sip:bob@[2001:db8::1]:5060;transport=tcp SIP/2.0\r\n"
    b"v: SIP/2.0/TCP pc.example.com;branch=z9hG4bKnashds8\r\n"
    b"Max-Forwards: 70\r\nt: Bob <sip:bob@example.com>\r\nf: <sip:a@example.com>;tag=9fxced76sl\r\n"
    b"i: 3848276298220188511@example.com\r\nCSeq: 1 INVITE\r\nm: <sip:a@pc.example.com>\r\n"
    b"c: application/sdp\r\nl: 31\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n"
)
SEEDS = [REGISTER, INVITE] + [c.path.read_bytes() for c in CASES if c.kind in ("accept", "app")]


def _content_free(msg: Message) -> list[tuple[str, str]]:
    # Serialization always states the true body length, so Content-Length may differ.
    return [(n, v) for n, v in msg.headers if header_key(n) != "content-length"]


def _assert_round_trip(msg: Message) -> None:
    again = parse_message(msg.to_bytes())
    assert type(again) is type(msg)
    if isinstance(msg, Request):
        assert isinstance(again, Request)
        assert (again.method, again.uri) == (msg.method, msg.uri)
    else:
        assert isinstance(again, Response)
        assert (again.status, again.reason) == (msg.status, msg.reason)
    assert _content_free(again) == _content_free(msg)
    assert again.body == msg.body


@FUZZ
@given(st.binary(max_size=1500), st.booleans())
def test_arbitrary_bytes_only_raise_parse_errors(data: bytes, datagram: bool) -> None:
    try:
        msg = parse_message(data, datagram=datagram)
    except SipParseError:
        return
    _assert_round_trip(msg)


OPS = ("flip", "insert", "delete", "dup", "cut", "swap")
EDITS = st.lists(
    st.tuples(
        st.sampled_from(OPS),
        st.integers(0, 1 << 16),
        st.integers(0, 1 << 16),
        st.binary(min_size=1, max_size=6),
    ),
    max_size=4,
)


def mutate(seed: bytes, edits: list[tuple[str, int, int, bytes]]) -> bytes:
    """Byte flips, insertions, deletions and cuts anywhere; duplicated and swapped lines."""
    data = bytearray(seed)
    for op, a, b, chunk in edits:
        pos = a % (len(data) + 1)
        if op == "flip" and data:
            data[pos % len(data)] = chunk[0]
        elif op == "insert":
            data[pos:pos] = chunk
        elif op == "delete":
            del data[pos : pos + 1 + b % 16]
        elif op == "cut":
            del data[pos:]
        else:
            lines = bytes(data).split(b"\r\n")
            if len(lines) > 2:
                i, j = 1 + a % (len(lines) - 1), 1 + b % (len(lines) - 1)
                if op == "dup":
                    lines.insert(j, lines[i])
                else:
                    lines[i], lines[j] = lines[j], lines[i]
                data = bytearray(b"\r\n".join(lines))
    return bytes(data)


@FUZZ
@given(st.sampled_from(SEEDS), EDITS, st.booleans())
def test_mutated_messages_only_raise_parse_errors_and_round_trip(
    seed: bytes, edits: list[tuple[str, int, int, bytes]], datagram: bool
) -> None:
    data = mutate(seed, edits)
    try:
        msg = parse_message(data, datagram=datagram)
    except SipParseError:
        return
    _assert_round_trip(msg)
    # The lazily parsed views may fail, but only with parse errors.
    for view in ("vias", "call_id", "cseq", "from_", "to", "content_type"):
        try:
            getattr(msg, view)
        except SipParseError:
            pass


STREAM_SEEDS = [parse_message(s).to_bytes() for s in SEEDS]


def _chunks(data: bytes, rng: random.Random) -> list[bytes]:
    # Chunk sizes come from one drawn seed: drawing each cut separately costs more
    # generation time than the framing under test.
    out, pos = [], 0
    while pos < len(data):
        size = rng.choice((1, 1, 2, 3, 7, 50, 400, 5000))
        out.append(data[pos : pos + size])
        pos += size
    return out


def _framed(framer: StreamFramer, chunks: list[bytes]) -> list[object]:
    out: list[object] = []
    for chunk in chunks:
        framer.feed(chunk)
        while (item := framer.next_message()) is not NEED_DATA:
            out.append(item)
    return out


@FUZZ
@given(
    st.lists(st.sampled_from([*STREAM_SEEDS, b"\r\n\r\n"]), min_size=1, max_size=4),
    st.integers(0, 2**32 - 1),
)
def test_framer_recovers_exactly_the_messages_sent(items: list[bytes], seed: int) -> None:
    out = _framed(StreamFramer(), _chunks(b"".join(items), random.Random(seed)))
    assert out == [KEEPALIVE_PING if i == b"\r\n\r\n" else i for i in items]


@FUZZ
@given(st.binary(max_size=600), st.sampled_from(STREAM_SEEDS), st.integers(0, 2**32 - 1))
def test_framer_on_arbitrary_bytes_only_raises_framing_errors(
    noise: bytes, message: bytes, seed: int
) -> None:
    rng = random.Random(seed)
    cut = rng.randrange(len(noise) + 1)
    data = noise[:cut] + message + noise[cut:] if rng.random() < 0.5 else noise
    try:
        out = _framed(StreamFramer(max_size=4096), _chunks(data, rng))
    except FramingError:
        return
    for item in out:
        if isinstance(item, bytes):
            assert len(item) <= 4096
            try:
                parse_message(item, datagram=False)
            except SipParseError:
                pass
