"""The admin HTTP server: JSON API under ``/api/``, ``/metrics``, and the dashboard.

Every ``/api/`` route and ``/metrics`` need ``Authorization: Bearer <token>``. The
dashboard's own files (HTML, JS, CSS) carry no data and are served without it: the page
takes the token from the URL fragment (``/#token=...``), which browsers never send to the
server, and uses it for its API calls.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

from aiohttp import web

from softswitch.admin.metrics import CONTENT_TYPE_LATEST, build_registry, render
from softswitch.admin.sources import AdminSource, CallView, CdrQuery, ConferenceSummary
from softswitch.config_service import AdminSettings
from softswitch.logs import get_logger
from softswitch.services.location import Binding

log = get_logger("softswitch.admin")
security_log = get_logger("softswitch.security")

MAX_CDR_LIMIT = 1000
STATIC_FILES = {
    "/": ("index.html", "text/html"),
    "/dashboard.js": ("dashboard.js", "text/javascript"),
    "/dashboard.css": ("dashboard.css", "text/css"),
}

SOURCE_KEY = web.AppKey("source", AdminSource)
TOKEN_KEY = web.AppKey("token", Callable[[], str])

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json(data: Any, status: int = 200) -> web.Response:
    # Live data: a proxy or the browser must never serve a stale copy.
    return web.Response(
        text=json.dumps(data, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _authorized(header: str, token: str) -> bool:
    scheme, _, credentials = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    # Constant time: the token must not leak one character at a time.
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith("/api/") or request.path == "/metrics":
        token = request.app[TOKEN_KEY]()
        if not _authorized(request.headers.get("Authorization", ""), token):
            security_log.warning(
                "admin_auth_failed",
                source=request.remote,
                path=request.path,
                given="Authorization" in request.headers,
            )
            response = _error(401, "missing or wrong bearer token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="softswitch admin"'
            return response
    return await handler(request)


# -- JSON shapes -----------------------------------------------------------------------


def registration_json(b: Binding, names: Mapping[tuple[str, str], str], now: float) -> dict:
    return {
        "tenant": b.tenant,
        "user": b.user,
        "name": names.get((b.tenant, b.user), ""),
        "contact": b.contact,
        "source": str(b.flow),
        "transport": b.flow.transport,
        "user_agent": b.user_agent,
        "expires_in": b.expires_in(now),
        "registered_at": b.registered_at,
    }


def call_json(c: CallView, now: float) -> dict:
    since = c.answered_at if c.answered_at is not None else c.started_at
    return {
        "id": c.id,
        "tenant": c.tenant,
        "caller": c.caller,
        "callee": c.callee,
        "state": c.state,
        "started_at": c.started_at,
        "answered_at": c.answered_at,
        "duration": max(0.0, round(now - since, 1)),
        "codec": c.codec,
    }


def conference_json(c: ConferenceSummary) -> dict:
    return {
        "tenant": c.tenant,
        "room": c.room,
        "participants": list(c.participants),
        "started_at": c.started_at,
    }


# -- handlers ----------------------------------------------------------------------------


def _source(request: web.Request) -> AdminSource:
    return request.app[SOURCE_KEY]


def _tenant_filter(request: web.Request) -> tuple[str | None, web.Response | None]:
    tenant = request.query.get("tenant")
    if tenant is None:
        return None, None
    tenant = tenant.lower()
    if tenant not in {t.domain for t in _source(request).tenants()}:
        return None, _error(404, f"unknown tenant {tenant!r}")
    return tenant, None


def _names(source: AdminSource) -> dict[tuple[str, str], str]:
    return {(t.domain, e.user): e.name for t in source.tenants() for e in t.extensions}


async def status(request: web.Request) -> web.Response:
    source = _source(request)
    return _json(
        {
            "state": "stopping" if source.stopping() else "running",
            "tenants": len(source.tenants()),
            "registrations": len(source.registrations()),
            "active_calls": len(source.calls()),
        }
    )


async def tenants(request: web.Request) -> web.Response:
    source = _source(request)
    regs: dict[str, int] = {}
    for b in source.registrations():
        regs[b.tenant] = regs.get(b.tenant, 0) + 1
    calls: dict[str, int] = {}
    for c in source.calls():
        calls[c.tenant] = calls.get(c.tenant, 0) + 1
    return _json(
        {
            "tenants": [
                {
                    "domain": t.domain,
                    "name": t.name,
                    "extensions": len(t.extensions),
                    "registrations": regs.get(t.domain, 0),
                    "active_calls": calls.get(t.domain, 0),
                }
                for t in source.tenants()
            ]
        }
    )


async def registrations(request: web.Request) -> web.Response:
    tenant, refusal = _tenant_filter(request)
    if refusal is not None:
        return refusal
    source = _source(request)
    names, now = _names(source), source.wall()
    rows = [
        registration_json(b, names, now)
        for b in source.registrations()
        if tenant is None or b.tenant == tenant
    ]
    return _json({"registrations": rows})


async def calls(request: web.Request) -> web.Response:
    tenant, refusal = _tenant_filter(request)
    if refusal is not None:
        return refusal
    source = _source(request)
    now = source.wall()
    rows = [call_json(c, now) for c in source.calls() if tenant is None or c.tenant == tenant]
    return _json({"calls": rows})


async def hangup(request: web.Request) -> web.Response:
    call_id = request.match_info["call_id"]
    if not _source(request).hangup(call_id):
        return _error(404, "no such call in progress")
    log.info("admin_hangup", call=call_id, source=request.remote)
    return _json({"hung_up": call_id})


async def conferences(request: web.Request) -> web.Response:
    tenant, refusal = _tenant_filter(request)
    if refusal is not None:
        return refusal
    rows = [
        conference_json(c)
        for c in _source(request).conferences()
        if tenant is None or c.tenant == tenant
    ]
    return _json({"conferences": rows})


def parse_cdr_query(query: Mapping[str, str], tenant: str | None) -> CdrQuery:
    """``since``/``until`` are epoch seconds; ``limit`` at most MAX_CDR_LIMIT."""
    values: dict[str, float | None] = {}
    for key in ("since", "until"):
        text = query.get(key)
        try:
            values[key] = float(text) if text is not None else None
        except ValueError:
            raise ValueError(f"{key} must be a number of seconds since the epoch") from None
    try:
        limit = int(query.get("limit", "100"))
    except ValueError:
        raise ValueError("limit must be an integer") from None
    if not 1 <= limit <= MAX_CDR_LIMIT:
        raise ValueError(f"limit must be between 1 and {MAX_CDR_LIMIT}")
    since, until = values["since"], values["until"]
    if since is not None and until is not None and until < since:
        raise ValueError("until must not be before since")
    return CdrQuery(tenant=tenant, since=since, until=until, limit=limit)


async def cdrs(request: web.Request) -> web.Response:
    tenant, refusal = _tenant_filter(request)
    if refusal is not None:
        return refusal
    try:
        query = parse_cdr_query(request.query, tenant)
    except ValueError as exc:
        return _error(400, str(exc))
    return _json({"cdrs": [dict(r) for r in _source(request).cdrs(query)]})


async def live(request: web.Request) -> web.Response:
    """Everything the dashboard shows, per tenant, in one answer."""
    source = _source(request)
    now = source.wall()
    names = _names(source)
    by_tenant: dict[str, dict[str, Any]] = {}
    for t in source.tenants():
        by_tenant[t.domain] = {
            "domain": t.domain,
            "name": t.name,
            "extensions": len(t.extensions),
            "phones": [],
            "calls": [],
            "conferences": [],
        }

    def slot(domain: str) -> dict[str, Any]:
        # A tenant removed by a reload may still have calls; they show until they end.
        entry = by_tenant.get(domain)
        if entry is None:
            entry = by_tenant[domain] = {
                "domain": domain,
                "name": f"{domain} (removed)",
                "extensions": 0,
                "phones": [],
                "calls": [],
                "conferences": [],
            }
        return entry

    for b in source.registrations():
        slot(b.tenant)["phones"].append(registration_json(b, names, now))
    for c in source.calls():
        slot(c.tenant)["calls"].append(call_json(c, now))
    for conf in source.conferences():
        slot(conf.tenant)["conferences"].append(conference_json(conf))
    return _json(
        {
            "now": now,
            "state": "stopping" if source.stopping() else "running",
            "tenants": list(by_tenant.values()),
        }
    )


def _static_handler(filename: str, content_type: str) -> Handler:
    body = resources.files("softswitch.admin").joinpath("static", filename).read_bytes()

    async def handler(request: web.Request) -> web.Response:
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers={
                "Cache-Control": "no-cache",
                # The page loads only its own files and talks only to this server.
                "Content-Security-Policy": (
                    "default-src 'none'; script-src 'self'; style-src 'self'; "
                    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; "
                    "frame-ancestors 'none'"
                ),
                "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer",
            },
        )

    return handler


def build_app(source: AdminSource, token: Callable[[], str]) -> web.Application:
    """The aiohttp application. ``token`` is called per request, so a reload that changes
    the token takes effect at once."""
    app = web.Application(middlewares=[_auth])
    app[SOURCE_KEY] = source
    app[TOKEN_KEY] = token
    registry = build_registry(source.metrics)

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=render(registry), headers={"Cache-Control": "no-store"})
        # CONTENT_TYPE_LATEST carries its own charset parameter.
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app.router.add_get("/api/status", status)
    app.router.add_get("/api/tenants", tenants)
    app.router.add_get("/api/registrations", registrations)
    app.router.add_get("/api/calls", calls)
    app.router.add_post("/api/calls/{call_id}/hangup", hangup)
    app.router.add_get("/api/conferences", conferences)
    app.router.add_get("/api/cdrs", cdrs)
    app.router.add_get("/api/live", live)
    app.router.add_get("/metrics", metrics)
    for path, (filename, content_type) in STATIC_FILES.items():
        app.router.add_get(path, _static_handler(filename, content_type))
    return app


class AdminServer:
    """Runs ``build_app`` on the configured address; the token follows reloads."""

    def __init__(self, settings: AdminSettings, source: AdminSource) -> None:
        self.settings = settings
        self._runner = web.AppRunner(
            build_app(source, lambda: self.settings.token), access_log=None
        )
        self._site: web.TCPSite | None = None

    @property
    def port(self) -> int:
        """The bound port (differs from the settings when they ask for port 0)."""
        if self._site is not None and self._runner.addresses:
            return int(self._runner.addresses[0][1])
        return self.settings.port

    async def start(self) -> None:
        await self._runner.setup()
        # A short shutdown: dashboards keep connections open, and stopping must not wait
        # for them.
        self._site = web.TCPSite(
            self._runner,
            self.settings.host,
            self.settings.port,
            reuse_address=True,
            shutdown_timeout=1.0,
        )
        try:
            await self._site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        log.info("admin_listening", address=f"http://{self.settings.listen}/")
        if not ipaddress.ip_address(self.settings.host).is_loopback:
            # Plain HTTP: the token crosses the network in clear text.
            security_log.warning("admin_not_on_localhost", address=self.settings.listen)

    def reconfigure(self, settings: AdminSettings) -> list[str]:
        """Take new settings; returns warnings for what needs a restart."""
        warnings: list[str] = []
        if (settings.host, settings.port) != (self.settings.host, self.settings.port):
            warnings.append("admin listen address changes only on restart")
        if not settings.enabled:
            warnings.append("admin API is disabled only on restart")
        # Keep serving with a token even if the new config disables the API.
        if settings.token:
            self.settings = settings
        return warnings

    async def close(self) -> None:
        await self._runner.cleanup()
