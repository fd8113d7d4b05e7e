"""Where each extension can be reached: the location service's data model and API.

The registrar writes bindings and the router reads them; neither knows how they are
stored (Kamailio's usrloc API idea). Expiry is wall-clock time because bindings outlive
a restart of the daemon.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from softswitch.sip.flow import Flow


@dataclass(frozen=True, slots=True)
class Binding:
    tenant: str
    user: str
    contact: str  # the Contact URI as the phone sent it
    expires_at: float  # wall-clock seconds
    call_id: str
    cseq: int
    flow: Flow
    q: float | None = None
    path: tuple[str, ...] = ()
    user_agent: str = ""
    instance: str = ""
    reg_id: int | None = None
    registered_at: float = 0.0

    def is_valid(self, now: float) -> bool:
        return self.expires_at > now

    def expires_in(self, now: float) -> int:
        return max(0, int(round(self.expires_at - now)))


class LocationStore(Protocol):
    def lookup(self, tenant: str, user: str, now: float) -> list[Binding]:
        """Live bindings of an address-of-record, most recently registered first."""

    def save(self, tenant: str, user: str, updates: list[Binding], removals: list[str]) -> None:
        """Apply one REGISTER's changes atomically: upsert ``updates`` (keyed by contact)
        and delete the bindings whose contact is in ``removals``."""

    def remove_all(self, tenant: str, user: str) -> None: ...

    def purge_expired(self, now: float) -> int:
        """Forget bindings that expired; returns how many."""

    def all_bindings(self, now: float) -> list[Binding]: ...

    def close(self) -> None: ...
