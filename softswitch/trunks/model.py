"""The validated trunk settings: frozen values built by `softswitch.trunks.config`.

Kept apart from the loader so that `softswitch.config` can name these types at import
time while the loader imports `softswitch.config`'s helpers (no import cycle).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from softswitch.trunks.numbering import NumberClass, NumberingPlan

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

TENANT_KEYS = frozenset({"numbers", "dialplan", "outbound", "trunks"})
"""The keys of a ``[[tenants]]`` table that belong to trunking."""


@dataclass(frozen=True, slots=True)
class ExtensionTarget:
    """Ring an extension of the DID's tenant. Ring groups, IVRs and conferences become
    further members of `Destination`."""

    user: str

    def __str__(self) -> str:
        return self.user


Destination = ExtensionTarget


@dataclass(frozen=True, slots=True)
class Did:
    """A public number of a tenant and where calls to it go."""

    number: str  # E.164
    tenant: str  # domain
    destination: Destination
    # Extensions that present this number on outbound calls.
    caller_id_for: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Trunk:
    name: str
    host: str  # carrier domain or IP; Request-URI domain unless from_domain says otherwise
    port: int = 5060
    transport: str = "udp"
    username: str = ""
    password: str = field(default="", repr=False)
    auth_username: str = ""  # digest user name when the carrier wants one unlike `username`
    register: bool = False
    register_expires: int = 600
    from_user: str = ""
    from_domain: str = ""
    codecs: tuple[str, ...] = ("PCMA", "PCMU")
    max_concurrent_calls: int | None = None
    outbound_proxy: tuple[str, int] | None = None
    tenants: tuple[str, ...] = ()  # domains, or ("*",)
    inbound_addresses: tuple[IPNetwork, ...] = ()
    did_from: str = "ruri"  # "ruri" | "to"
    country: str = ""  # how the carrier writes numbers ("" = E.164 only)
    number_format: str = "e164"  # how we write called numbers: e164 | national | international
    send_pai: bool = True
    setup_timeout: float = 10.0

    @property
    def domain(self) -> str:
        """The domain of our identity at the carrier (From, To of REGISTER, AOR)."""
        return self.from_domain or self.host

    @property
    def digest_user(self) -> str:
        return self.auth_username or self.username

    @property
    def next_hop(self) -> tuple[str, int]:
        """Where requests for this trunk are sent (the driver resolves a host name)."""
        return self.outbound_proxy or (self.host, self.port)

    def allows_tenant(self, domain: str) -> bool:
        return "*" in self.tenants or domain.lower() in self.tenants


@dataclass(frozen=True, slots=True)
class ExtensionPolicy:
    """Per-extension outbound settings; None means "the tenant's default"."""

    external: bool = True
    max_concurrent_external: int | None = None
    max_calls_per_hour: int | None = None
    privacy: bool = False
    caller_id: str | None = None  # a DID of the tenant


DEFAULT_ALLOW = frozenset(
    {NumberClass.NATIONAL, NumberClass.MOBILE, NumberClass.TOLLFREE, NumberClass.EMERGENCY}
)


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    allow: frozenset[NumberClass] = DEFAULT_ALLOW
    international: bool = False
    international_prefixes: tuple[str, ...] = ()  # E.164 prefixes; empty = everywhere
    premium: bool = False
    blocked_prefixes: tuple[str, ...] = ()  # E.164 prefixes refused whatever the class
    max_concurrent_external: int | None = None
    max_calls_per_hour: int | None = None
    extension_max_concurrent_external: int | None = None
    extension_max_calls_per_hour: int | None = None
    caller_id: str | None = None  # the tenant's main number
    extensions: dict[str, ExtensionPolicy] = field(default_factory=dict)

    def extension(self, user: str) -> ExtensionPolicy:
        return self.extensions.get(user) or _DEFAULT_EXTENSION

    def extension_caps(self, user: str) -> tuple[int | None, int | None]:
        """(concurrent, per hour) for ``user``, falling back to the tenant-wide defaults."""
        ext = self.extension(user)
        concurrent = ext.max_concurrent_external
        hourly = ext.max_calls_per_hour
        return (
            self.extension_max_concurrent_external if concurrent is None else concurrent,
            self.extension_max_calls_per_hour if hourly is None else hourly,
        )


_DEFAULT_EXTENSION = ExtensionPolicy()


@dataclass(frozen=True, slots=True)
class TenantTrunking:
    """Everything trunk-related about one tenant."""

    domain: str
    plan: NumberingPlan | None = None
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)
    trunks: tuple[str, ...] = ()  # names, in order of preference
    numbers: tuple[Did, ...] = ()
    privacy_prefixes: tuple[str, ...] = ("#31#", "*67")


@dataclass(frozen=True, slots=True)
class TrunkSettings:
    trunks: tuple[Trunk, ...] = ()
    tenants: tuple[TenantTrunking, ...] = ()
    _by_name: dict[str, Trunk] = field(default_factory=dict, compare=False, repr=False)
    _by_domain: dict[str, TenantTrunking] = field(default_factory=dict, compare=False, repr=False)
    _by_number: dict[str, Did] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({t.name: t for t in self.trunks})
        self._by_domain.update({t.domain: t for t in self.tenants})
        self._by_number.update({d.number: d for t in self.tenants for d in t.numbers})

    def trunk(self, name: str) -> Trunk | None:
        return self._by_name.get(name)

    def tenant(self, domain: str) -> TenantTrunking | None:
        return self._by_domain.get(domain.lower())

    def did(self, number: str) -> Did | None:
        return self._by_number.get(number)

    @property
    def dids(self) -> Mapping[str, Did]:
        """Every DID of every tenant by E.164 number (read-only by convention)."""
        return self._by_number

    def trunks_for(self, domain: str) -> list[Trunk]:
        """The trunks ``domain`` may use, in its order of preference."""
        tenant = self.tenant(domain)
        if tenant is None:
            return []
        out = []
        for name in tenant.trunks:
            trunk = self._by_name.get(name)
            if trunk is not None and trunk.allows_tenant(tenant.domain):
                out.append(trunk)
        return out
