"""Toll-fraud guard: who may call which number out of a trunk, and how often. Pure.

Decisions, and why:

* Only authenticated extensions of a known tenant get past; anything else is a security
  event (an unauthenticated INVITE to an external number is how open relays are found).
* Emergency numbers are always allowed: not subject to the destination policy, to
  ``external = false``, to caps, or to the per-hour window, and they are not counted
  against them either, so a long emergency call never blocks the next one. They still
  get a Permit so the caller can track them like any call.
* Destination classes come from `softswitch.trunks.numbering`. International calls need
  ``international = true`` (and a matching ``international_prefixes`` entry when that is
  set); premium-rate numbers, at home or abroad, need ``premium = true`` as well.
* Concurrent-call caps answer 503 (try later, a normal busy office); the per-hour caps
  answer 403 and are a security event, because a burst of external calls is what a
  hijacked phone looks like.
* The hour is a sliding window of the start times of permitted calls, kept in a deque
  bounded by the cap itself, so memory never exceeds one entry per allowed call per
  configured tenant or extension; keys disappear when they empty.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from softswitch.trunks.model import TrunkSettings
from softswitch.trunks.numbering import (
    E164,
    Emergency,
    Invalid,
    Normalised,
    NumberClass,
    classify,
    is_international,
)

__all__ = ["Denial", "OutboundGuard", "Permit"]

WINDOW = 3600.0


@dataclass(frozen=True, slots=True)
class Permit:
    id: int
    tenant: str
    extension: str
    number: E164 | Emergency
    number_class: NumberClass
    counted: bool  # False for emergency calls: they never count against a cap

    @property
    def emergency(self) -> bool:
        return self.number_class is NumberClass.EMERGENCY


@dataclass(frozen=True, slots=True)
class Denial:
    status: int  # 403, 484 or 503
    reason: str  # for the logs and the Reason phrase; names no other tenant's data
    security_event: bool
    code: str  # stable, machine-readable: "blocked_destination", "tenant_hourly_cap" ...


class OutboundGuard:
    def __init__(self, settings: TrunkSettings, *, window: float = WINDOW) -> None:
        self._settings = settings
        self._window = window
        self._ids = itertools.count(1)
        self._live: dict[int, Permit] = {}
        self._active: dict[tuple[str, ...], int] = {}
        self._recent: dict[tuple[str, ...], deque[float]] = {}

    def update(self, settings: TrunkSettings) -> None:
        """Take a reloaded config; calls in progress keep counting."""
        self._settings = settings

    def start_call(
        self,
        tenant: str,
        extension: str,
        number: Normalised,
        now: float,
        *,
        authenticated: bool = True,
    ) -> Permit | Denial:
        """Decide on an external call and, if allowed, count it until `end_call`."""
        tenant = tenant.lower()
        if not authenticated:
            return Denial(403, "caller is not an authenticated extension", True, "unauthenticated")
        trunking = self._settings.tenant(tenant)
        if trunking is None or trunking.plan is None:
            return Denial(403, "tenant has no external calling", True, "no_external_calling")
        if isinstance(number, Invalid):
            return Denial(484, f"invalid number: {number.reason}", False, "invalid_number")
        if isinstance(number, Emergency):
            return self._permit(tenant, extension, number, NumberClass.EMERGENCY, counted=False)
        policy = trunking.outbound
        ext = policy.extension(extension)
        if not ext.external:
            return Denial(403, "extension may not call out", True, "extension_not_external")
        text = number.number
        if any(text.startswith(p) for p in policy.blocked_prefixes):
            return Denial(403, f"{text} is in a blocked range", True, "blocked_destination")
        cls = classify(number, trunking.plan)
        if is_international(number, trunking.plan):
            if not policy.international:
                return Denial(
                    403, f"international call to {text} not enabled", True, "blocked_destination"
                )
            if policy.international_prefixes and not any(
                text.startswith(p) for p in policy.international_prefixes
            ):
                return Denial(
                    403, f"{text} is not in international_prefixes", True, "blocked_destination"
                )
            if cls is NumberClass.PREMIUM and not policy.premium:
                return Denial(
                    403, f"premium-rate call to {text} not enabled", True, "blocked_destination"
                )
        elif cls is NumberClass.PREMIUM:
            if not policy.premium:
                return Denial(
                    403, f"premium-rate call to {text} not enabled", True, "blocked_destination"
                )
        elif cls not in policy.allow:
            return Denial(
                403, f"{cls.value} call to {text} not enabled", True, "blocked_destination"
            )

        tenant_key = (tenant,)
        ext_key = (tenant, extension)
        ext_concurrent, ext_hourly = policy.extension_caps(extension)
        if _full(self._active.get(tenant_key, 0), policy.max_concurrent_external):
            return Denial(503, "tenant has too many external calls", False, "tenant_concurrent_cap")
        if _full(self._active.get(ext_key, 0), ext_concurrent):
            return Denial(
                503, "extension has too many external calls", False, "extension_concurrent_cap"
            )
        if self._hour_full(tenant_key, policy.max_calls_per_hour, now):
            return Denial(403, "tenant reached its calls per hour", True, "tenant_hourly_cap")
        if self._hour_full(ext_key, ext_hourly, now):
            return Denial(403, "extension reached its calls per hour", True, "extension_hourly_cap")
        for key, cap in ((tenant_key, policy.max_calls_per_hour), (ext_key, ext_hourly)):
            if cap is not None:
                window = self._recent.get(key)
                if window is None or window.maxlen != cap:
                    window = deque(window or (), maxlen=cap)
                    self._recent[key] = window
                window.append(now)
        return self._permit(tenant, extension, number, cls, counted=True)

    def end_call(self, permit: Permit) -> None:
        """The call is over (answered and hung up, failed or cancelled). Idempotent."""
        if self._live.pop(permit.id, None) is None or not permit.counted:
            return
        for key in ((permit.tenant,), (permit.tenant, permit.extension)):
            left = self._active.get(key, 0) - 1
            if left > 0:
                self._active[key] = left
            else:
                self._active.pop(key, None)

    def active(self, tenant: str, extension: str | None = None) -> int:
        """Counted external calls in progress for a tenant, or one of its extensions."""
        key = (tenant.lower(),) if extension is None else (tenant.lower(), extension)
        return self._active.get(key, 0)

    def calls_in_window(self, tenant: str, extension: str | None, now: float) -> int:
        """Permitted calls in the last hour (only tracked where a cap is set)."""
        key = (tenant.lower(),) if extension is None else (tenant.lower(), extension)
        self._prune(key, now)
        return len(self._recent.get(key, ()))

    @property
    def tracked_keys(self) -> int:
        return len(self._active) + len(self._recent)

    # -- internals --

    def _permit(
        self,
        tenant: str,
        extension: str,
        number: E164 | Emergency,
        cls: NumberClass,
        *,
        counted: bool,
    ) -> Permit:
        permit = Permit(next(self._ids), tenant, extension, number, cls, counted)
        self._live[permit.id] = permit
        if counted:
            for key in ((tenant,), (tenant, extension)):
                self._active[key] = self._active.get(key, 0) + 1
        return permit

    def _prune(self, key: tuple[str, ...], now: float) -> None:
        window = self._recent.get(key)
        if window is None:
            return
        horizon = now - self._window
        while window and window[0] <= horizon:
            window.popleft()
        if not window:
            del self._recent[key]

    def _hour_full(self, key: tuple[str, ...], cap: int | None, now: float) -> bool:
        self._prune(key, now)
        if cap is None:
            return False
        return len(self._recent.get(key, ())) >= cap


def _full(count: int, cap: int | None) -> bool:
    return cap is not None and count >= cap
