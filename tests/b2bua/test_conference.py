"""Conference calls through the real SipServer routing on a manual clock, with a fake
rooms controller that records what the signalling side asked of it."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from softswitch.b2bua.call import CallState
from softswitch.b2bua.conference import (
    FIRST_DIGIT_TIMEOUT,
    NEXT_DIGIT_TIMEOUT,
    ConferenceCall,
    Phase,
)
from softswitch.config import build_config
from softswitch.media.conference import LegRef, PlaybackDone, RoomRef
from softswitch.media.controller import DtmfReceived, LegMedia, MediaTimeout
from softswitch.media.tones import prompt_path
from softswitch.sip.message import Request, Response
from tests.b2bua.harness import ACME, BETA, LOCAL, FakeMedia, Phone, Switch, place_call

LOBBY = f"{ACME}/lobby"
ROOM = f"{ACME}/conference/800"
OPEN_ROOM = f"{ACME}/conference/801"


@dataclass
class FakeRooms(FakeMedia):
    """FakeMedia plus the rooms interface."""

    rooms: dict[str, bool] = field(default_factory=dict)  # room id -> mixes
    members: dict[tuple[str, str], str] = field(default_factory=dict)
    joined_media: dict[tuple[str, str], LegMedia] = field(default_factory=dict)
    muted: set[tuple[str, str]] = field(default_factory=set)
    plays: dict[int, tuple[Any, Any]] = field(default_factory=dict)  # id -> (target, audio)
    stopped: list[int] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    records: dict[int, tuple[Any, Path]] = field(default_factory=dict)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def create_room(self, room_id: str, *, mix: bool = True) -> None:
        self.rooms.setdefault(room_id, mix)

    def destroy_room(self, room_id: str) -> None:
        self.rooms.pop(room_id, None)
        self.destroyed.append(room_id)
        for key, rid in list(self.members.items()):
            if rid == room_id:
                del self.members[key]

    def join(
        self, room_id: str, session_id: str, leg: str, media: LegMedia, *, muted: bool = False
    ) -> None:
        assert room_id in self.rooms, f"join of {room_id} before create_room"
        assert (session_id, leg) in self.allocated
        self.members[(session_id, leg)] = room_id
        self.joined_media[(session_id, leg)] = media

    def leave(self, session_id: str, leg: str) -> None:
        self.members.pop((session_id, leg), None)

    def mute(self, session_id: str, leg: str, on: bool) -> None:
        (self.muted.add if on else self.muted.discard)((session_id, leg))

    def play(self, target: Any, audio: Any, *, loop: bool = False) -> int:
        if isinstance(target, LegRef):
            assert (target.session_id, target.leg) in self.members, "play to a leg in no room"
        pid = next(self.ids)
        self.plays[pid] = (target, audio)
        return pid

    def stop_play(self, play_id: int) -> None:
        self.stopped.append(play_id)

    def record(self, target: Any, path: str | Path) -> int:
        rid = next(self.ids)
        self.records[rid] = (target, Path(path))
        return rid

    def stop_record(self, record_id: int) -> None:
        pass

    def send_dtmf(self, session_id: str, leg: str, digits: str, *, duration_ms: int = 100) -> None:
        pass

    def list_rooms(self) -> list:
        return []

    def release(self, session_id: str) -> None:
        super().release(session_id)
        for key in [k for k in self.members if k[0] == session_id]:
            del self.members[key]

    # -- what the tests look at --------------------------------------------------------

    def room_of(self, call_id: str) -> str | None:
        return self.members.get((call_id, "a"))

    def last_play_to(self, call_id: str) -> tuple[int, Any]:
        for pid in sorted(self.plays, reverse=True):
            target, audio = self.plays[pid]
            if target == LegRef(call_id, "a"):
                return pid, audio
        raise AssertionError(f"nothing played to {call_id}")

    def room_plays(self, room_id: str) -> list[int]:
        return [pid for pid, (t, _a) in self.plays.items() if t == RoomRef(room_id)]


CONFERENCES = [
    {"number": "800", "name": "Weekly", "pin": "1234", "moderator_pin": "99999"},
    {"number": "801", "name": "Open room", "max_participants": 2},
]


def conf_switch(
    conferences: list[dict] | None = None,
    tmp_path: Path | None = None,
    calls: dict | None = None,
) -> Switch:
    sw = Switch()
    rooms = FakeRooms()
    sw.fake_media = rooms
    sw.media = rooms
    sw.call_manager.media = rooms
    rooms.set_event_handler(sw._on_media_event)
    raw = {
        "listen": [LOCAL, "tcp:127.0.0.1:5060"],
        "state_dir": str(tmp_path or "/nonexistent/state"),
        "sip": {"t1": 0.5, "digest_algorithms": ["MD5"]},
        "security": {"ban_failures": 1000},
        "calls": calls or {},
        "tenants": [
            {
                "domain": ACME,
                "extensions": [
                    {"user": u, "password": f"secret{u}"} for u in ("201", "202", "203")
                ],
                "conferences": CONFERENCES if conferences is None else conferences,
            },
            {"domain": BETA, "extensions": [{"user": "300", "password": "betasecret300"}]},
        ],
    }
    sw.reload(build_config(raw, Path("/nonexistent/softswitch.toml")))
    return sw


@dataclass
class Caller:
    sw: Switch
    phone: Phone
    out: Any
    call: ConferenceCall

    @property
    def rooms(self) -> FakeRooms:
        return self.sw.fake_media  # type: ignore[return-value]

    @property
    def id(self) -> str:
        return self.call.id

    def dtmf(self, digits: str) -> None:
        for d in digits:
            self.rooms.fire(DtmfReceived(self.id, "a", d, 100))

    def bye(self) -> Response:
        self.out.in_dialog("BYE")
        ok = self.phone.one(200)
        assert isinstance(ok, Response)
        return ok

    def finish_prompts(self) -> None:
        """The media side reports every prompt to this caller as played out."""
        for _ in range(10):
            try:
                pid, _audio = self.rooms.last_play_to(self.id)
            except AssertionError:
                return
            if pid in self.rooms.stopped or pid in getattr(self, "_done", set()):
                return
            self.__dict__.setdefault("_done", set()).add(pid)
            self.rooms.fire(PlaybackDone(pid))


def dial(sw: Switch, user: str, number: str = "800", *, codecs_sdp: bytes | None = None) -> Caller:
    phone = Phone(sw, user, f"secret{user}")
    out = place_call(phone, number, body=codecs_sdp)
    ok = phone.one(200)
    assert isinstance(ok, Response)
    out.to_tag = ok.to.tag
    out.ack(ok)
    phone.take()
    calls = [
        c
        for c in sw.call_manager.calls.values()
        if isinstance(c, ConferenceCall) and c.caller == user and c.state is CallState.ANSWERED
    ]
    assert calls, f"no conference call for {user}"
    return Caller(sw, phone, out, calls[-1])


def test_config_validates_conferences_by_key_path() -> None:
    from softswitch.errors import ConfigError

    raw = {
        "tenants": [
            {
                "domain": ACME,
                "extensions": [{"user": "201", "password": "secret201"}],
                "conferences": [
                    {"number": "201"},
                    {"number": "800", "pin": 1234},
                    {"number": "800", "pin": "12a4"},
                    {"number": "801", "moderator_pin": "55"},
                    {"number": "802", "pin": "55", "moderator_pin": "55"},
                    {"number": "803", "max_participants": 1, "colour": "blue"},
                    {"name": "no number"},
                ],
            }
        ]
    }
    with pytest.raises(ConfigError) as info:
        build_config(raw, Path("/x/s.toml"))
    text = str(info.value)
    for expected in (
        "tenants[0].conferences[0].number: '201' is already an extension",
        "tenants[0].conferences[1].pin: must be a string of digits",
        "tenants[0].conferences[2].number: '800' is already a conference",
        "tenants[0].conferences[2].pin: must be 1 to 16 digits",
        "tenants[0].conferences[3].moderator_pin: needs a pin as well",
        "tenants[0].conferences[4].moderator_pin: must differ from pin",
        "tenants[0].conferences[5].max_participants: must be between 2",
        "tenants[0].conferences[5].colour: unknown key",
        "tenants[0].conferences[6].number: is required",
    ):
        assert expected in text, f"missing {expected!r} in:\n{text}"
    good = build_config(
        {"tenants": [{"domain": ACME, "conferences": [{"number": "800", "pin": "0042"}]}]},
        Path("/x/s.toml"),
    )
    conf = good.tenants[0].conference("800")
    assert conf is not None and conf.pin == "0042" and conf.max_participants == 20
    assert not conf.record


def test_lobby_pin_join_and_bye_with_cdr() -> None:
    sw = conf_switch()
    alice = dial(sw, "201")
    rooms = alice.rooms
    assert rooms.rooms[LOBBY] is False  # the lobby does not mix
    assert rooms.room_of(alice.id) == LOBBY
    _pid, audio = rooms.last_play_to(alice.id)
    assert audio == prompt_path("enter_pin")
    assert alice.call.phase is Phase.LOBBY

    alice.dtmf("1234#")
    assert rooms.room_of(alice.id) == ROOM
    assert rooms.rooms[ROOM] is True
    assert alice.call.phase is Phase.JOINED and not alice.call.moderator
    assert len(rooms.room_plays(ROOM)) == 1  # the join tone

    bruno = dial(sw, "202")
    bruno.dtmf("1234")  # the PIN length ends the entry without '#'
    assert rooms.room_of(bruno.id) == ROOM
    assert len(rooms.room_plays(ROOM)) == 2
    snap = sw.call_manager.conferences.snapshot()
    (room,) = snap["rooms"]
    assert room["number"] == "800" and [p["caller"] for p in room["participants"]] == [
        "201",
        "202",
    ]

    alice.bye()
    assert rooms.room_of(alice.id) is None
    assert len(rooms.room_plays(ROOM)) == 3  # the leave tone for Bruno
    assert alice.id in rooms.released
    (record,) = sw.cdrs_written
    assert (record.caller, record.callee, record.disposition) == ("201", "800", "answered")
    assert record.hangup_side == "caller"

    bruno.bye()
    assert ROOM in rooms.destroyed
    assert sw.call_manager.conferences.rooms == {}
    assert sw.call_manager.active_count() == 0


def test_wrong_pin_three_times_goodbye_then_bye() -> None:
    sw = conf_switch()
    alice = dial(sw, "201")
    rooms = alice.rooms
    for attempt in range(1, 4):
        alice.dtmf("1111#")
        assert alice.call.tries == attempt
        _pid, audio = rooms.last_play_to(alice.id)
        assert audio == prompt_path("wrong_pin")
        if attempt < 3:
            # "wrong PIN" then "enter PIN" again
            alice.finish_prompts()
            _pid, audio = rooms.last_play_to(alice.id)
            assert audio == prompt_path("enter_pin")
    assert rooms.room_of(alice.id) == LOBBY
    assert not alice.phone.take("BYE")
    alice.finish_prompts()  # "wrong PIN", then the goodbye tone
    alice.finish_prompts()
    bye = alice.phone.one("BYE")
    assert isinstance(bye, Request)
    (record,) = sw.cdrs_written
    assert record.disposition == "answered" and record.hangup_cause == "rejected"
    assert record.hangup_side == "switch"
    assert ROOM not in rooms.rooms


def test_pin_timeout_counts_as_a_try_and_a_pause_ends_the_digits() -> None:
    sw = conf_switch()
    alice = dial(sw, "201")
    sw.advance(FIRST_DIGIT_TIMEOUT + 0.1)
    assert alice.call.tries == 1
    alice.dtmf("9")
    sw.advance(NEXT_DIGIT_TIMEOUT - 1)
    alice.dtmf("9")
    assert alice.call.tries == 1  # digits keep the entry open
    sw.advance(NEXT_DIGIT_TIMEOUT + 0.1)
    assert alice.call.tries == 2  # "99" after a pause is a wrong PIN
    alice.dtmf("9999")
    assert alice.call.phase is Phase.LOBBY  # "9999" could still become "99999"
    alice.dtmf("9")
    assert alice.call.phase is Phase.JOINED and alice.call.moderator


def test_a_prompt_whose_end_never_comes_does_not_hang_the_caller() -> None:
    sw = conf_switch()
    alice = dial(sw, "201")
    for _ in range(3):
        alice.dtmf("0000#")
    sw.advance(60)  # no PlaybackDone at all
    assert alice.phone.take("BYE")
    assert alice.call.state is CallState.ENDED


def test_star_six_toggles_mute_with_prompts() -> None:
    sw = conf_switch()
    alice = dial(sw, "201")
    alice.dtmf("1234#")
    rooms = alice.rooms
    alice.dtmf("*6")
    assert (alice.id, "a") in rooms.muted and alice.call.muted
    assert rooms.last_play_to(alice.id)[1] == prompt_path("muted")
    assert sw.call_manager.conferences.snapshot()["rooms"][0]["participants"][0]["muted"]
    alice.dtmf("*")
    sw.advance(5)
    alice.dtmf("6")  # too late after '*'
    assert alice.call.muted
    alice.dtmf("*6")
    assert (alice.id, "a") not in rooms.muted and not alice.call.muted
    assert rooms.last_play_to(alice.id)[1] == prompt_path("unmuted")


def test_open_room_needs_no_pin_and_a_full_room_sends_the_caller_away() -> None:
    sw = conf_switch()
    a = dial(sw, "201", "801")
    assert a.rooms.room_of(a.id) == OPEN_ROOM  # straight in, no prompt
    assert a.call.phase is Phase.JOINED
    b = dial(sw, "202", "801")
    assert b.rooms.room_of(b.id) == OPEN_ROOM
    c = dial(sw, "203", "801")
    assert c.rooms.room_of(c.id) == LOBBY
    assert c.call.phase is Phase.LEAVING
    c.finish_prompts()
    assert c.phone.one("BYE")
    record = sw.cdrs_written[-1]
    assert (record.caller, record.hangup_cause) == ("203", "user_busy")
    assert a.rooms.room_of(a.id) == OPEN_ROOM and a.call.state is CallState.ANSWERED


def test_last_moderator_leaving_ends_the_room() -> None:
    sw = conf_switch()
    mod = dial(sw, "201")
    mod.dtmf("99999")
    assert mod.call.moderator
    guest = dial(sw, "202")
    guest.dtmf("1234#")
    plays_before = len(mod.rooms.room_plays(ROOM))
    mod.bye()
    assert len(mod.rooms.room_plays(ROOM)) == plays_before  # no leave tone: the room ends
    assert guest.call.phase is Phase.LEAVING
    guest.finish_prompts()
    assert guest.phone.one("BYE")
    assert ROOM in guest.rooms.destroyed


def test_hold_updates_the_room_leg_and_media_timeout_ends_the_call() -> None:
    sw = conf_switch()
    alice = dial(sw, "201")
    alice.dtmf("1234#")
    from tests.b2bua.harness import offer_sdp

    alice.out.in_dialog("INVITE", body=offer_sdp(alice.phone.rtp_port, direction="sendonly"))
    ok = alice.phone.one(200)
    assert isinstance(ok, Response)
    alice.out.ack(ok)
    media = alice.rooms.connected[alice.id]["a"]
    assert media.direction.value == "sendonly"
    alice.rooms.fire(MediaTimeout(alice.id, "a"))
    assert alice.phone.take("BYE")
    assert sw.cdrs_written[-1].hangup_cause == "media_timeout"


def test_opus_offer_is_answered_with_opus() -> None:
    sw = conf_switch()
    sdp = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        b"m=audio 41000 RTP/AVP 96 101\r\na=rtpmap:96 opus/48000/2\r\n"
        b"a=fmtp:96 useinbandfec=1\r\na=rtpmap:101 telephone-event/48000\r\n"
        b"a=fmtp:101 0-15\r\na=sendrecv\r\n"
    )
    alice = dial(sw, "201", codecs_sdp=sdp)
    joined = alice.rooms.joined_media[(alice.id, "a")]
    assert joined.codec.name == "opus" and joined.codec.payload_type == 96
    assert joined.telephone_event is not None and joined.telephone_event.payload_type == 101


def test_max_call_length_ends_conference_calls() -> None:
    sw = conf_switch(calls={"max_call_seconds": 60})
    alice = dial(sw, "201", "801")
    sw.advance(61)
    assert alice.phone.take("BYE")
    assert sw.cdrs_written[-1].hangup_cause == "max_duration"


def test_another_tenant_cannot_dial_the_conference() -> None:
    sw = conf_switch()
    phone = Phone(sw, "300", "betasecret300", domain=BETA)
    place_call(phone, "sip:800@acme.example")
    assert 404 in phone.statuses() or 403 in phone.statuses()


def test_no_rooms_in_the_media_controller_is_503() -> None:
    sw = conf_switch()
    plain = FakeMedia()
    sw.call_manager.media = plain
    phone = Phone(sw, "201", "secret201")
    place_call(phone, "800")
    assert 503 in phone.statuses()
    assert sw.cdrs_written[-1].disposition == "failed"


def test_recording_goes_under_state_dir(tmp_path: Path) -> None:
    sw = conf_switch([{"number": "805", "record": True}], tmp_path)
    alice = dial(sw, "201", "805")
    ((target, path),) = alice.rooms.records.values()
    assert target == RoomRef(f"{ACME}/conference/805")
    assert path.parent == tmp_path / "recordings" / ACME and path.suffix == ".wav"
    assert sw.call_manager.conferences.snapshot()["rooms"][0]["recording"] == str(path)


def test_conferences_cli_reads_the_snapshot_of_a_running_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json
    import os

    from softswitch.cli import main

    config = tmp_path / "softswitch.toml"
    config.write_text(
        'state_dir = "state"\n[[tenants]]\ndomain = "acme.example"\nname = "Acme"\n'
        '  [[tenants.extensions]]\n  user = "201"\n  password = "secret201"\n'
        '  [[tenants.conferences]]\n  number = "800"\n  name = "Weekly"\n  pin = "1234"\n'
        '  [[tenants.conferences]]\n  number = "801"\n'
    )
    sw = conf_switch(tmp_path=tmp_path)
    alice = dial(sw, "201")
    alice.dtmf("99999")
    bruno = dial(sw, "202")  # still entering the PIN
    assert bruno.call.phase is Phase.LOBBY
    snapshot = sw.call_manager.conferences.snapshot()
    snapshot["pid"] = os.getpid()
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "conferences.json").write_text(json.dumps(snapshot))

    assert main(["conferences", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "800 Weekly [PIN]: 1/20 in the room, 1 entering the PIN" in out
    assert "801 [open]: 0/20 in the room" in out
    assert "moderator" in out and "PCMU" in out

    snapshot["pid"] = 2**22 + 12345  # a daemon that is gone
    (tmp_path / "state" / "conferences.json").write_text(json.dumps(snapshot))
    assert main(["conferences", "--config", str(config), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["rooms"] == []


def test_admin_runtime_lists_rooms() -> None:
    from softswitch.admin.sources import NoCdrs
    from softswitch.app import CallOutcomes, Runtime

    sw = conf_switch()
    alice = dial(sw, "201")
    alice.dtmf("99999")
    bruno = dial(sw, "202")
    bruno.dtmf("1234")
    bruno.dtmf("*6")
    runtime = Runtime(sw, sw.clock, sw.calls, NoCdrs(), CallOutcomes())  # type: ignore[arg-type]
    (room,) = runtime.conferences()
    assert room.tenant == ACME and room.room == "800 Weekly"
    assert room.participants == ("201 (moderator)", "202 (muted)")
