"""The admin HTTP app in-process, over a fake AdminSource: auth, JSON shapes, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from softswitch.admin.sources import (
    CallStats,
    CallSummary,
    CdrQuery,
    ConferenceSummary,
    MediaStats,
    MetricsSnapshot,
)
from softswitch.admin.web import build_app
from softswitch.config import Extension, Tenant
from softswitch.services.location import Binding
from softswitch.sip.flow import Flow

TOKEN = "fake-admin-token-0123456789"
NOW = 1_800_000_000.0


class FakeSource:
    def __init__(self) -> None:
        self._tenants = (
            Tenant("acme.example", "Acme", (Extension("201", "pw-201-xxxx", "Alice"),)),
            Tenant("nord.example", "Nord", ()),
        )
        self._bindings = [
            Binding(
                tenant="acme.example",
                user="201",
                contact="sip:201@192.0.2.10:5062",
                expires_at=NOW + 120,
                call_id="c1",
                cseq=2,
                flow=Flow("udp", "192.0.2.10", 5062),
                user_agent="<script>alert(1)</script>",
                registered_at=NOW - 10,
            )
        ]
        self._calls = [
            CallSummary(
                "call-1", "acme.example", "201", "202", "answered", NOW - 65, NOW - 61.5, "PCMU"
            )
        ]
        self.hung_up: list[str] = []
        self.cdr_queries: list[CdrQuery] = []
        self.is_stopping = False

    def tenants(self) -> Sequence[Tenant]:
        return self._tenants

    def registrations(self) -> Sequence[Binding]:
        return self._bindings

    def calls(self) -> Sequence[CallSummary]:
        return self._calls

    def hangup(self, call_id: str) -> bool:
        if call_id in {c.id for c in self._calls}:
            self.hung_up.append(call_id)
            return True
        return False

    def conferences(self) -> Sequence[ConferenceSummary]:
        return (ConferenceSummary("acme.example", "800", ("201", "202"), NOW - 30),)

    def cdrs(self, query: CdrQuery) -> Sequence[Mapping[str, Any]]:
        self.cdr_queries.append(query)
        return [{"id": "cdr-1", "tenant": "acme.example", "duration": 12.5}]

    def metrics(self) -> MetricsSnapshot:
        return MetricsSnapshot(
            registrations={"acme.example": 1, "nord.example": 0},
            sip_received=10,
            sip_sent=9,
            sip_requests={"REGISTER": 4, "OPTIONS": 6},
            sip_parse_errors=1,
            transactions=2,
            banned_sources=0,
            dropped_banned=0,
            active_calls={"acme.example": 1, "nord.example": 0},
            calls=CallStats(attempts=5, outcomes={"answered": 3, "busy": 1}),
            auth_failures=2,
            bans=1,
            sip_retransmissions=7,
            media=MediaStats(1000, 990, 4, 2, rtp_packets_lost=3),
        )

    def stopping(self) -> bool:
        return self.is_stopping

    def wall(self) -> float:
        return NOW


@pytest.fixture
def source() -> FakeSource:
    return FakeSource()


@pytest.fixture
async def client(source: FakeSource) -> AsyncIterator[TestClient]:
    token = {"value": TOKEN}
    app = build_app(source, lambda: token["value"])
    async with TestClient(TestServer(app)) as c:
        c.token = token  # type: ignore[attr-defined]
        yield c


AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("path", ["/api/status", "/api/registrations", "/api/live", "/metrics"])
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token-0123456789"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN}x"},
    ],
)
async def test_refused_without_the_token(client: TestClient, path: str, headers: dict) -> None:
    response = await client.get(path, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "error" in await response.json()


async def test_hangup_needs_the_token_too(client: TestClient, source: FakeSource) -> None:
    response = await client.post("/api/calls/call-1/hangup")
    assert response.status == 401
    assert source.hung_up == []


async def test_token_change_takes_effect_at_once(client: TestClient) -> None:
    client.token["value"] = "rotated-token-0123456789"  # type: ignore[attr-defined]
    assert (await client.get("/api/status", headers=AUTH)).status == 401
    rotated = {"Authorization": "Bearer rotated-token-0123456789"}
    assert (await client.get("/api/status", headers=rotated)).status == 200


async def test_status_and_tenants(client: TestClient, source: FakeSource) -> None:
    status = await (await client.get("/api/status", headers=AUTH)).json()
    assert status == {"state": "running", "tenants": 2, "registrations": 1, "active_calls": 1}
    source.is_stopping = True
    status = await (await client.get("/api/status", headers=AUTH)).json()
    assert status["state"] == "stopping"
    tenants = (await (await client.get("/api/tenants", headers=AUTH)).json())["tenants"]
    assert tenants[0] == {
        "domain": "acme.example",
        "name": "Acme",
        "extensions": 1,
        "registrations": 1,
        "active_calls": 1,
    }
    assert tenants[1]["registrations"] == 0


async def test_registrations_filtered_by_tenant(client: TestClient) -> None:
    rows = (await (await client.get("/api/registrations", headers=AUTH)).json())["registrations"]
    assert rows[0]["user"] == "201" and rows[0]["name"] == "Alice"
    assert rows[0]["source"] == "udp:192.0.2.10:5062" and rows[0]["expires_in"] == 120
    nord = await client.get("/api/registrations?tenant=NORD.example", headers=AUTH)
    assert (await nord.json())["registrations"] == []
    unknown = await client.get("/api/registrations?tenant=nope.example", headers=AUTH)
    assert unknown.status == 404


async def test_calls_and_hangup(client: TestClient, source: FakeSource) -> None:
    calls = (await (await client.get("/api/calls", headers=AUTH)).json())["calls"]
    assert calls == [
        {
            "id": "call-1",
            "tenant": "acme.example",
            "caller": "201",
            "callee": "202",
            "state": "answered",
            "started_at": NOW - 65,
            "answered_at": NOW - 61.5,
            "duration": 61.5,
            "codec": "PCMU",
        }
    ]
    assert (await client.post("/api/calls/nope/hangup", headers=AUTH)).status == 404
    response = await client.post("/api/calls/call-1/hangup", headers=AUTH)
    assert response.status == 200 and await response.json() == {"hung_up": "call-1"}
    assert source.hung_up == ["call-1"]


async def test_conferences(client: TestClient) -> None:
    rooms = (await (await client.get("/api/conferences", headers=AUTH)).json())["conferences"]
    assert rooms == [
        {
            "tenant": "acme.example",
            "room": "800",
            "participants": ["201", "202"],
            "started_at": NOW - 30,
        }
    ]


async def test_cdr_queries(client: TestClient, source: FakeSource) -> None:
    url = f"/api/cdrs?tenant=acme.example&since={NOW - 3600:.0f}&until={NOW:.0f}&limit=5"
    body = await (await client.get(url, headers=AUTH)).json()
    assert body == {"cdrs": [{"id": "cdr-1", "tenant": "acme.example", "duration": 12.5}]}
    assert source.cdr_queries == [CdrQuery("acme.example", NOW - 3600, NOW, 5)]
    for bad in ("limit=0", "limit=100000", "limit=x", "since=yesterday", "since=10&until=5"):
        response = await client.get(f"/api/cdrs?{bad}", headers=AUTH)
        assert response.status == 400, bad
        assert "error" in await response.json()


async def test_live_groups_by_tenant(client: TestClient) -> None:
    live = await (await client.get("/api/live", headers=AUTH)).json()
    assert live["now"] == NOW and live["state"] == "running"
    acme, nord = live["tenants"]
    assert [p["user"] for p in acme["phones"]] == ["201"]
    assert [c["id"] for c in acme["calls"]] == ["call-1"]
    assert [r["room"] for r in acme["conferences"]] == ["800"]
    assert nord["phones"] == [] and nord["calls"] == []


async def test_metrics_parse_and_show_everything(client: TestClient) -> None:
    response = await client.get("/metrics", headers=AUTH)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(await response.text())
        for s in family.samples
    }
    expected = {
        ("softswitch_registrations", (("tenant", "acme.example"),)): 1,
        ("softswitch_registrations", (("tenant", "nord.example"),)): 0,
        ("softswitch_active_calls", (("tenant", "acme.example"),)): 1,
        ("softswitch_call_attempts_total", ()): 5,
        ("softswitch_call_outcomes_total", (("outcome", "busy"),)): 1,
        ("softswitch_sip_messages_received_total", ()): 10,
        ("softswitch_sip_messages_sent_total", ()): 9,
        ("softswitch_sip_requests_received_total", (("method", "REGISTER"),)): 4,
        ("softswitch_sip_retransmissions_total", ()): 7,
        ("softswitch_auth_failures_total", ()): 2,
        ("softswitch_bans_total", ()): 1,
        ("softswitch_rtp_packets_received_total", ()): 1000,
        ("softswitch_rtp_packets_lost_total", ()): 3,
        ("softswitch_rtp_packets_dropped_total", ()): 4,
        ("softswitch_engine_late_ticks_total", ()): 2,
    }
    for key, value in expected.items():
        assert samples.get(key) == value, key
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)


async def test_dashboard_files_need_no_token(client: TestClient) -> None:
    page = await client.get("/")
    assert page.status == 200 and page.content_type == "text/html"
    assert "Content-Security-Policy" in page.headers
    html = await page.text()
    assert "dashboard.js" in html and "dashboard.css" in html
    for path, kind in (("/dashboard.js", "text/javascript"), ("/dashboard.css", "text/css")):
        response = await client.get(path)
        assert response.status == 200 and response.content_type == kind
    # The page renders with textContent only: data from phones is never HTML.
    script = await (await client.get("/dashboard.js")).text()
    assert "innerHTML" not in script
