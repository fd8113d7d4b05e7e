"""StreamFramer: Content-Length framing, keep-alives, limits, linear work."""

from __future__ import annotations

import time

import pytest

from softswitch.sip.framing import (
    KEEPALIVE_PING,
    KEEPALIVE_PONG,
    NEED_DATA,
    FramingError,
    StreamFramer,
)
from softswitch.sip.message import make_error_response, parse_message


def _msg(n: int, body: bytes = b"") -> bytes:
    return (
        f"OPTIONS sip:{n}@example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/TCP client.example.com;branch=z9hG4bK{n}\r\n"
        "From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n"
        f"Call-ID: {n}@x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def _drain(framer: StreamFramer) -> list[object]:
    out: list[object] = []
    while (item := framer.next_message()) is not NEED_DATA:
        out.append(item)
    return out


def test_byte_at_a_time() -> None:
    data = _msg(1, b"hello") + _msg(2)
    framer = StreamFramer()
    out: list[object] = []
    for i in range(len(data)):
        framer.feed(data[i : i + 1])
        out += _drain(framer)
    assert out == [_msg(1, b"hello"), _msg(2)]
    assert framer.buffered == 0


def test_several_messages_in_one_chunk_and_pipelined_body() -> None:
    # The body holds a blank line and something that looks like a start line.
    tricky = b"v=0\r\n\r\nINVITE sip:x SIP/2.0\r\n"
    data = _msg(1, tricky) + _msg(2) + _msg(3, b"x")
    framer = StreamFramer()
    framer.feed(data)
    assert _drain(framer) == [_msg(1, tricky), _msg(2), _msg(3, b"x")]
    assert parse_message(_msg(1, tricky), datagram=False).body == tricky


def test_keepalives_between_messages() -> None:
    framer = StreamFramer()
    framer.feed(b"\r\n\r\n" + _msg(1) + b"\r\n\r\n\r\n\r\n" + _msg(2) + b"\r\n")
    assert _drain(framer) == [KEEPALIVE_PING, _msg(1), KEEPALIVE_PING, KEEPALIVE_PING, _msg(2)]
    # A lone CRLF might be half a ping: a server waits.
    assert framer.buffered == 2
    framer.feed(b"\r\n")
    assert _drain(framer) == [KEEPALIVE_PING]


def test_ping_split_across_reads_is_one_ping() -> None:
    framer = StreamFramer()
    out: list[object] = []
    for byte in b"\r\n\r\n":
        framer.feed(bytes([byte]))
        out += _drain(framer)
    assert out == [KEEPALIVE_PING]


def test_client_side_reports_pongs_at_once() -> None:
    framer = StreamFramer(client=True)
    framer.feed(b"\r\n")
    assert _drain(framer) == [KEEPALIVE_PONG]
    framer.feed(b"\r\n" + _msg(1))
    assert _drain(framer) == [KEEPALIVE_PONG, _msg(1)]


def test_single_crlf_before_a_message_is_a_pong() -> None:
    framer = StreamFramer()
    framer.feed(b"\r\n" + _msg(1))
    assert _drain(framer) == [KEEPALIVE_PONG, _msg(1)]


def test_missing_content_length_is_a_framing_error_with_a_routable_400() -> None:
    framer = StreamFramer()
    framer.feed(_msg(1).replace(b"Content-Length: 0\r\n", b""))
    with pytest.raises(FramingError) as info:
        framer.next_message()
    assert info.value.status == 400 and "Content-Length" in info.value.reason
    response = make_error_response(info.value)
    assert response is not None and response.status == 400
    # The stream is dead: every later call raises again.
    framer.feed(_msg(2))
    with pytest.raises(FramingError):
        framer.next_message()


@pytest.mark.parametrize("value", [b"-1", b"five", b"1 2"])
def test_bad_content_length(value: bytes) -> None:
    framer = StreamFramer()
    framer.feed(_msg(1).replace(b"Content-Length: 0", b"Content-Length: " + value))
    with pytest.raises(FramingError) as info:
        framer.next_message()
    assert info.value.status == 400


def test_conflicting_content_lengths() -> None:
    framer = StreamFramer()
    framer.feed(_msg(1).replace(b"Content-Length: 0", b"Content-Length: 0\r\nl: 4"))
    with pytest.raises(FramingError, match="Conflicting"):
        framer.next_message()


def test_oversize_content_length() -> None:
    framer = StreamFramer(max_size=1000)
    framer.feed(_msg(1).replace(b"Content-Length: 0", b"Content-Length: 5000"))
    with pytest.raises(FramingError) as info:
        framer.next_message()
    assert info.value.status == 513


def test_oversize_header_section() -> None:
    framer = StreamFramer(max_size=1000)
    framer.feed(b"OPTIONS sip:x SIP/2.0\r\nX-Junk: " + b"a" * 2000)
    with pytest.raises(FramingError) as info:
        framer.next_message()
    assert info.value.status == 513


def test_stray_cr_between_messages() -> None:
    framer = StreamFramer()
    framer.feed(b"\rX")
    with pytest.raises(FramingError):
        framer.next_message()


def test_bare_lf_header_end_is_tolerated() -> None:
    framer = StreamFramer()
    framer.feed(b"OPTIONS sip:x SIP/2.0\nContent-Length: 2\n\nhi")
    assert _drain(framer) == [b"OPTIONS sip:x SIP/2.0\nContent-Length: 2\n\nhi"]


def test_trickled_bytes_cost_linear_time() -> None:
    # A 60 kB header section fed one byte at a time must not be rescanned each time.
    def run(n: int) -> float:
        framer = StreamFramer(max_size=200_000)
        chunk = b"OPTIONS sip:x SIP/2.0\r\n" + b"X-Pad: " + b"a" * n
        t0 = time.perf_counter()
        for i in range(len(chunk)):
            framer.feed(chunk[i : i + 1])
            framer.next_message()
        return time.perf_counter() - t0

    small, large = run(15_000), run(60_000)
    assert large < small * 8  # quadratic work would be about 16x


def test_many_small_messages_in_one_buffer_are_linear() -> None:
    data = _msg(1) * 3000
    framer = StreamFramer(max_size=len(data))
    framer.feed(data)
    t0 = time.perf_counter()
    assert len(_drain(framer)) == 3000
    assert time.perf_counter() - t0 < 2.0
