"""The configuration file: TOML in, frozen dataclasses out, every fault named.

An operator edits this file by hand, so validation collects every problem at once and
names each by file, key path and (where the TOML reader tells us) line, rather than
stopping at the first.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from softswitch.config_service import AdminSettings, ServiceSettings, build_admin, build_service
from softswitch.errors import ConfigError
from softswitch.sip.quirks import DEFAULT_MD5_ONLY_USER_AGENTS
from softswitch.sip.timers import TimerConfig
from softswitch.trunks.model import TENANT_KEYS, TrunkSettings

LISTEN_RE = re.compile(
    r"^(?P<transport>udp|tcp):(?:\[(?P<v6>[^\]]+)\]|(?P<v4>[^:\[\]]+)):(?P<port>\d+)$"
)
DOMAIN_RE = re.compile(
    r"^(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
USER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-+]{0,63}$")
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class ListenAddress:
    transport: str  # "udp" | "tcp"
    host: str  # without brackets
    port: int

    @property
    def family_v6(self) -> bool:
        return ":" in self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if self.family_v6 else self.host
        return f"{self.transport}:{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Extension:
    user: str
    password: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Conference:
    """A conference bridge of a tenant (``[[tenants.conferences]]``). An empty ``pin``
    makes an open room; ``moderator_pin`` marks who may hold the room open."""

    number: str
    name: str = ""
    pin: str = ""
    moderator_pin: str = ""
    max_participants: int = 20
    record: bool = False


@dataclass(frozen=True, slots=True)
class Tenant:
    domain: str
    name: str
    extensions: tuple[Extension, ...] = ()
    conferences: tuple[Conference, ...] = ()
    _by_user: dict[str, Extension] = field(default_factory=dict, compare=False, repr=False)
    _by_conference: dict[str, Conference] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_user.update({ext.user: ext for ext in self.extensions})
        self._by_conference.update({conf.number: conf for conf in self.conferences})

    def extension(self, user: str) -> Extension | None:
        return self._by_user.get(user)

    def conference(self, number: str) -> Conference | None:
        return self._by_conference.get(number)


@dataclass(frozen=True, slots=True)
class SipSettings:
    timers: TimerConfig = field(default_factory=TimerConfig)
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 10
    nonce_lifetime: float = 300.0
    tcp_idle_timeout: float = 600.0
    server_header: str = "softswitch"
    md5_only_user_agents: tuple[str, ...] = DEFAULT_MD5_ONLY_USER_AGENTS
    digest_algorithms: tuple[str, ...] = ("SHA-256", "MD5")


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    ban_failures: int = 10
    ban_window: float = 60.0
    ban_time: float = 600.0


@dataclass(frozen=True, slots=True)
class CallSettings:
    ring_timeout: float = 30.0
    """Seconds a call may ring before the caller gets 480 and every branch is cancelled."""
    max_call_seconds: float = 14400.0
    """Answered calls are cut (BYE on both legs) after this long."""
    session_expires: int = 1800
    """RFC 4028 session interval we ask for; a dead phone's call ends within it."""
    min_se: int = 90
    """The shortest session interval we accept (RFC 4028: at least 90)."""
    rtp_port_min: int = 20000
    rtp_port_max: int = 29999
    """RTP ports (even, RTCP on the odd one above) the media engine binds."""
    media_timeout: float = 30.0
    """A call whose phone sends no RTP for this long (and is not on hold) is ended."""
    media_address: str = ""
    """IP put in SDP and bound for RTP; empty: the host of the first listen address."""


@dataclass(frozen=True, slots=True)
class Config:
    path: Path
    listen: tuple[ListenAddress, ...]
    state_dir: Path
    log_level: str = "info"
    log_format: str = "auto"  # auto | json | console
    sip: SipSettings = field(default_factory=SipSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    tenants: tuple[Tenant, ...] = ()
    calls: CallSettings = field(default_factory=CallSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    media: MediaSettings = field(default_factory=lambda: MediaSettings())
    trunking: TrunkSettings = field(default_factory=TrunkSettings)
    _by_domain: dict[str, Tenant] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_domain.update({t.domain.lower(): t for t in self.tenants})

    def tenant(self, domain: str) -> Tenant | None:
        return self._by_domain.get(domain.lower())


class _Collector:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.errors: list[str] = []

    def error(self, key: str, what: str) -> None:
        self.errors.append(f"{self.path}: {key}: {what}")


def _get(
    c: _Collector,
    table: dict[str, Any],
    key: str,
    path: str,
    kind: type | tuple[type, ...],
    default: Any = None,
    required: bool = False,
) -> Any:
    if key not in table:
        if required:
            c.error(f"{path}{key}", "is required")
        return default
    value = table[key]
    # bool is an int in Python; a config that says `port = true` is still wrong.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        c.error(f"{path}{key}", f"must be {_kind_name(kind)}, not a boolean")
        return default
    if not isinstance(value, kind):
        c.error(f"{path}{key}", f"must be {_kind_name(kind)}, not {type(value).__name__}")
        return default
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {
        str: "a string",
        int: "an integer",
        float: "a number",
        list: "a list",
        dict: "a table",
        bool: "true or false",
    }
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _unknown_keys(c: _Collector, table: dict[str, Any], known: set[str], path: str) -> None:
    for key in table:
        if key not in known:
            c.error(f"{path}{key}", "unknown key (a typo?)")


def parse_listen(text: str) -> ListenAddress:
    m = LISTEN_RE.match(text)
    if not m:
        raise ValueError("must look like udp:HOST:PORT or tcp:[IPV6]:PORT")
    host = m.group("v6") or m.group("v4")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"{host!r} is not an IP address") from None
    port = int(m.group("port"))
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} is out of range")
    return ListenAddress(m.group("transport"), host, port)


def _positive(c: _Collector, key: str, value: float | None, *, allow_zero: bool = False) -> None:
    if value is None:
        return
    if value < 0 or (value == 0 and not allow_zero):
        c.error(key, "must be greater than zero")


def load_config(path: str | Path) -> Config:
    """Read and validate a config file. Raises ConfigError listing every fault."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: is not UTF-8 text") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already says "(at line N, column M)".
        raise ConfigError(f"{path}: TOML syntax error: {exc}") from None
    return build_config(raw, path)


def build_config(raw: dict[str, Any], path: Path) -> Config:
    c = _Collector(path)
    _unknown_keys(
        c,
        raw,
        {
            "listen",
            "state_dir",
            "log_level",
            "log_format",
            "sip",
            "security",
            "calls",
            "tenants",
        }
        | {"admin", "service", "media"}
        | {"trunks"},
        "",
    )

    listen: list[ListenAddress] = []
    listen_raw = _get(c, raw, "listen", "", list, default=["udp:127.0.0.1:5060"])
    for i, item in enumerate(listen_raw or []):
        if not isinstance(item, str):
            c.error(f"listen[{i}]", 'must be a string such as "udp:127.0.0.1:5060"')
            continue
        try:
            listen.append(parse_listen(item))
        except ValueError as exc:
            c.error(f"listen[{i}]", f"{item!r} {exc}")
    if listen_raw is not None and not listen_raw:
        c.error("listen", "must name at least one address")
    if len(set(listen)) != len(listen):
        c.error("listen", "names the same address twice")

    state_text = _get(c, raw, "state_dir", "", str, default="var")
    state_dir = Path(state_text or "var")
    if not state_dir.is_absolute():
        state_dir = path.resolve().parent / state_dir

    log_level = _get(c, raw, "log_level", "", str, default="info")
    if log_level not in LOG_LEVELS:
        c.error("log_level", f"must be one of {', '.join(LOG_LEVELS)}, not {log_level!r}")
        log_level = "info"
    log_format = _get(c, raw, "log_format", "", str, default="auto")
    if log_format not in ("auto", "json", "console"):
        c.error("log_format", f"must be auto, json or console, not {log_format!r}")
        log_format = "auto"

    sip = _build_sip(c, _get(c, raw, "sip", "", dict, default={}) or {})
    security = _build_security(c, _get(c, raw, "security", "", dict, default={}) or {})
    calls = _build_calls(c, _get(c, raw, "calls", "", dict, default={}) or {})

    tenants: list[Tenant] = []
    seen_domains: set[str] = set()
    for i, traw in enumerate(_get(c, raw, "tenants", "", list, default=[]) or []):
        key = f"tenants[{i}]."
        if not isinstance(traw, dict):
            c.error(f"tenants[{i}]", "must be a table ([[tenants]])")
            continue
        _unknown_keys(c, traw, {"domain", "name", "extensions", "conferences", *TENANT_KEYS}, key)
        domain = _get(c, traw, "domain", key, str, required=True)
        if domain is not None:
            if not DOMAIN_RE.match(domain):
                c.error(f"{key}domain", f"{domain!r} is not a valid domain name")
            elif domain.lower() in seen_domains:
                c.error(f"{key}domain", f"{domain!r} is already used by another tenant")
            seen_domains.add(domain.lower())
        name = _get(c, traw, "name", key, str, default=domain or "")
        extensions: list[Extension] = []
        seen_users: set[str] = set()
        for j, eraw in enumerate(_get(c, traw, "extensions", key, list, default=[]) or []):
            ekey = f"{key}extensions[{j}]."
            if not isinstance(eraw, dict):
                c.error(f"{key}extensions[{j}]", "must be a table ([[tenants.extensions]])")
                continue
            _unknown_keys(c, eraw, {"user", "password", "name"}, ekey)
            user = _get(c, eraw, "user", ekey, str, required=True)
            password = _get(c, eraw, "password", ekey, str, required=True)
            ename = _get(c, eraw, "name", ekey, str, default="")
            if user is not None:
                if not USER_RE.match(user):
                    c.error(f"{ekey}user", f"{user!r} is not a valid SIP user name")
                elif user in seen_users:
                    c.error(f"{ekey}user", f"{user!r} is already an extension of this tenant")
                seen_users.add(user)
            if password is not None and len(password) < 8:
                c.error(f"{ekey}password", "must be at least 8 characters")
            if user and password:
                extensions.append(Extension(user, password, ename or ""))
        conferences = _build_conferences(c, traw, key, seen_users)
        if domain:
            tenants.append(Tenant(domain.lower(), name or domain, tuple(extensions), conferences))

    admin = build_admin(raw.get("admin"), path.resolve().parent, c)
    service = build_service(raw.get("service"), c)
    media = _build_media(c, _get(c, raw, "media", "", dict, default={}) or {})
    # Imported here: the trunk loader uses this module's helpers.
    from softswitch.trunks.config import load_trunks

    trunking = load_trunks(raw, c)

    if c.errors:
        raise ConfigError("\n".join(c.errors))
    return Config(
        path=path,
        listen=tuple(listen),
        state_dir=state_dir,
        log_level=log_level,
        log_format=log_format,
        sip=sip,
        security=security,
        tenants=tuple(tenants),
        calls=calls,
        admin=admin,
        service=service,
        media=media,
        trunking=trunking,
    )


def _build_sip(c: _Collector, t: dict[str, Any]) -> SipSettings:
    p = "sip."
    known = {
        "t1",
        "t2",
        "t4",
        "min_expires",
        "max_expires",
        "default_expires",
        "md5_only_user_agents",
        "digest_algorithms",
        "max_contacts",
        "nonce_lifetime",
        "tcp_idle_timeout",
        "server_header",
    }
    _unknown_keys(c, t, known, p)
    d = SipSettings()
    t1 = _get(c, t, "t1", p, (int, float), default=d.timers.t1)
    t2 = _get(c, t, "t2", p, (int, float), default=d.timers.t2)
    t4 = _get(c, t, "t4", p, (int, float), default=d.timers.t4)
    for key, value in (("t1", t1), ("t2", t2), ("t4", t4)):
        _positive(c, p + key, value)
    if t1 and t2 and t1 > t2:
        c.error(p + "t2", "must not be smaller than t1")
    min_e = _get(c, t, "min_expires", p, int, default=d.min_expires)
    max_e = _get(c, t, "max_expires", p, int, default=d.max_expires)
    def_e = _get(c, t, "default_expires", p, int, default=d.default_expires)
    for key, value in (("min_expires", min_e), ("max_expires", max_e), ("default_expires", def_e)):
        _positive(c, p + key, value)
    if min_e and max_e and min_e > max_e:
        c.error(p + "max_expires", "must not be smaller than min_expires")
    max_contacts = _get(c, t, "max_contacts", p, int, default=d.max_contacts)
    _positive(c, p + "max_contacts", max_contacts)
    nonce = _get(c, t, "nonce_lifetime", p, (int, float), default=d.nonce_lifetime)
    _positive(c, p + "nonce_lifetime", nonce)
    idle = _get(c, t, "tcp_idle_timeout", p, (int, float), default=d.tcp_idle_timeout)
    _positive(c, p + "tcp_idle_timeout", idle)
    server = _get(c, t, "server_header", p, str, default=d.server_header)
    md5_only = _get(c, t, "md5_only_user_agents", p, list, default=list(d.md5_only_user_agents))
    algorithms = _get(c, t, "digest_algorithms", p, list, default=list(d.digest_algorithms))
    if algorithms is not None:
        bad = [a for a in algorithms if a not in ("SHA-256", "MD5")]
        if bad or not algorithms or len(set(algorithms)) != len(algorithms):
            c.error(
                p + "digest_algorithms",
                'must list "SHA-256" and/or "MD5" (each once), in order of preference',
            )
            algorithms = list(d.digest_algorithms)
    if md5_only is not None and not all(isinstance(x, str) and x for x in md5_only):
        c.error(p + "md5_only_user_agents", "must be a list of non-empty strings")
        md5_only = list(d.md5_only_user_agents)
    return SipSettings(
        timers=TimerConfig(t1=float(t1 or 0.5), t2=float(t2 or 4.0), t4=float(t4 or 5.0)),
        min_expires=min_e or d.min_expires,
        max_expires=max_e or d.max_expires,
        default_expires=def_e or d.default_expires,
        max_contacts=max_contacts or d.max_contacts,
        nonce_lifetime=float(nonce or d.nonce_lifetime),
        tcp_idle_timeout=float(idle or d.tcp_idle_timeout),
        server_header=server if server is not None else d.server_header,
        md5_only_user_agents=tuple(md5_only or ()),
        digest_algorithms=tuple(algorithms or d.digest_algorithms),
    )


def _build_security(c: _Collector, t: dict[str, Any]) -> SecuritySettings:
    p = "security."
    _unknown_keys(c, t, {"ban_failures", "ban_window", "ban_time"}, p)
    d = SecuritySettings()
    failures = _get(c, t, "ban_failures", p, int, default=d.ban_failures)
    window = _get(c, t, "ban_window", p, (int, float), default=d.ban_window)
    ban_time = _get(c, t, "ban_time", p, (int, float), default=d.ban_time)
    _positive(c, p + "ban_failures", failures)
    _positive(c, p + "ban_window", window)
    _positive(c, p + "ban_time", ban_time, allow_zero=True)
    return SecuritySettings(
        ban_failures=failures or d.ban_failures,
        ban_window=float(window or d.ban_window),
        ban_time=float(ban_time if ban_time is not None else d.ban_time),
    )


def _build_calls(c: _Collector, t: dict[str, Any]) -> CallSettings:
    p = "calls."
    known = {
        "ring_timeout",
        "max_call_seconds",
        "session_expires",
        "min_se",
        "rtp_port_min",
        "rtp_port_max",
        "media_timeout",
        "media_address",
    }
    _unknown_keys(c, t, known, p)
    d = CallSettings()
    ring = _get(c, t, "ring_timeout", p, (int, float), default=d.ring_timeout)
    _positive(c, p + "ring_timeout", ring)
    longest = _get(c, t, "max_call_seconds", p, (int, float), default=d.max_call_seconds)
    _positive(c, p + "max_call_seconds", longest)
    expires = _get(c, t, "session_expires", p, int, default=d.session_expires)
    min_se = _get(c, t, "min_se", p, int, default=d.min_se)
    if min_se is not None and min_se < 90:
        c.error(p + "min_se", "must be at least 90 (RFC 4028)")
        min_se = None
    if expires is not None and min_se is not None and expires < min_se:
        c.error(p + "session_expires", f"must not be smaller than min_se ({min_se})")
    low = _get(c, t, "rtp_port_min", p, int, default=d.rtp_port_min)
    high = _get(c, t, "rtp_port_max", p, int, default=d.rtp_port_max)
    for key, value in (("rtp_port_min", low), ("rtp_port_max", high)):
        if value is not None and not 1024 <= value <= 65535:
            c.error(p + key, "must be a port between 1024 and 65535")
    if low is not None and high is not None and high - low < 3:
        c.error(p + "rtp_port_max", "must leave room above rtp_port_min for two port pairs")
    media_timeout = _get(c, t, "media_timeout", p, (int, float), default=d.media_timeout)
    _positive(c, p + "media_timeout", media_timeout)
    address = _get(c, t, "media_address", p, str, default=d.media_address)
    if address:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            c.error(p + "media_address", f"{address!r} is not an IP address")
            address = ""
    return CallSettings(
        ring_timeout=float(ring or d.ring_timeout),
        max_call_seconds=float(longest or d.max_call_seconds),
        session_expires=expires or d.session_expires,
        min_se=min_se or d.min_se,
        rtp_port_min=low or d.rtp_port_min,
        rtp_port_max=high or d.rtp_port_max,
        media_timeout=float(media_timeout or d.media_timeout),
        media_address=address or "",
    )


@dataclass(frozen=True, slots=True)
class MediaSettings:
    """``[media]``: where the RTP engine runs. ``workers = 0`` keeps it in the signalling
    process (small sites, tests); N starts N worker processes, "auto" one per CPU."""

    workers: int | None = 0
    pin_workers: bool = False


def _build_media(c: _Collector, t: dict[str, Any]) -> MediaSettings:
    p = "media."
    _unknown_keys(c, t, {"workers", "pin_workers"}, p)
    workers = t.get("workers", 0)
    if workers == "auto":
        workers = None
    elif isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        c.error(p + "workers", f'must be 0, a number of processes or "auto", not {workers!r}')
        workers = 0
    pin = _get(c, t, "pin_workers", p, bool, default=False)
    return MediaSettings(workers=workers, pin_workers=bool(pin))


CONFERENCE_KEYS = frozenset(
    {"number", "name", "pin", "moderator_pin", "max_participants", "record"}
)
_PIN_RE = re.compile(r"^[0-9]{1,16}$")
_MAX_PARTICIPANTS = 200


def _build_conferences(
    c: _Collector, traw: dict[str, Any], key: str, extensions: set[str]
) -> tuple[Conference, ...]:
    """``[[tenants.conferences]]`` of one tenant. A number is dialled like an extension,
    so it must not be one, nor another room's."""
    out: list[Conference] = []
    seen: set[str] = set()
    for j, craw in enumerate(_get(c, traw, "conferences", key, list, default=[]) or []):
        ckey = f"{key}conferences[{j}]."
        if not isinstance(craw, dict):
            c.error(f"{key}conferences[{j}]", "must be a table ([[tenants.conferences]])")
            continue
        _unknown_keys(c, craw, set(CONFERENCE_KEYS), ckey)
        number = _get(c, craw, "number", ckey, str, required=True)
        name = _get(c, craw, "name", ckey, str, default="")
        ok = number is not None
        if number is not None:
            if not USER_RE.match(number):
                c.error(f"{ckey}number", f"{number!r} is not a valid number to dial")
                ok = False
            elif number in extensions:
                c.error(f"{ckey}number", f"{number!r} is already an extension of this tenant")
                ok = False
            elif number in seen:
                c.error(f"{ckey}number", f"{number!r} is already a conference of this tenant")
                ok = False
            seen.add(number)
        pins: dict[str, str] = {}
        for pin_key in ("pin", "moderator_pin"):
            if isinstance(craw.get(pin_key), int) and not isinstance(craw.get(pin_key), bool):
                # TOML would drop leading zeros of a bare number: insist on quotes.
                c.error(f"{ckey}{pin_key}", 'must be a string of digits, e.g. "0042"')
                ok = False
                continue
            value = _get(c, craw, pin_key, ckey, str, default="")
            if value is None:
                ok = False
            elif value and not _PIN_RE.match(value):
                c.error(f"{ckey}{pin_key}", "must be 1 to 16 digits (0-9)")
                ok = False
            else:
                pins[pin_key] = value or ""
        pin, moderator_pin = pins.get("pin", ""), pins.get("moderator_pin", "")
        if moderator_pin and not pin and "pin" in pins:
            # An open room never asks for a PIN, so a moderator could not give one.
            c.error(f"{ckey}moderator_pin", "needs a pin as well (an open room asks for none)")
            ok = False
        elif moderator_pin and moderator_pin == pin:
            c.error(f"{ckey}moderator_pin", "must differ from pin")
            ok = False
        most = _get(c, craw, "max_participants", ckey, int, default=20)
        if most is None:
            ok = False
        elif not 2 <= most <= _MAX_PARTICIPANTS:
            c.error(f"{ckey}max_participants", f"must be between 2 and {_MAX_PARTICIPANTS}")
            ok = False
        record = _get(c, craw, "record", ckey, bool, default=False)
        if ok and number is not None:
            out.append(Conference(number, name or "", pin, moderator_pin, most, bool(record)))
    return tuple(out)
