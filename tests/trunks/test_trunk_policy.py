"""OutboundGuard: destination policy, caps, sliding hour window, emergency exemption."""

from __future__ import annotations

from softswitch.trunks.numbering import E164, Emergency, Invalid, NumberClass, normalise
from softswitch.trunks.policy import Denial, OutboundGuard, Permit
from tests.trunks.trunk_fixtures import BASE, load

NATIONAL = E164("+390612345678")


def guard_for(text: str = BASE) -> OutboundGuard:
    settings, errors = load(text)
    assert errors == []
    return OutboundGuard(settings)


def test_national_call_permitted_and_counted() -> None:
    guard = guard_for()
    permit = guard.start_call("ACME.example", "201", NATIONAL, 0.0)
    assert isinstance(permit, Permit)
    assert permit.number_class is NumberClass.NATIONAL and permit.counted
    assert guard.active("acme.example") == 1 and guard.active("acme.example", "201") == 1
    guard.end_call(permit)
    guard.end_call(permit)  # idempotent
    assert guard.active("acme.example") == 0 and guard.tracked_keys == 1  # the hour window


def test_unauthenticated_and_unknown_tenant_are_security_events() -> None:
    guard = guard_for()
    denial = guard.start_call("acme.example", "201", NATIONAL, 0.0, authenticated=False)
    assert denial == Denial(
        403, "caller is not an authenticated extension", True, "unauthenticated"
    )
    denial = guard.start_call("nobody.example", "201", NATIONAL, 0.0)
    assert denial.status == 403 and denial.security_event


def test_invalid_number_is_484_not_a_security_event() -> None:
    denial = guard_for().start_call("acme.example", "201", Invalid("02", "too short"), 0.0)
    assert (denial.status, denial.security_event) == (484, False)


def test_blocked_classes_are_403_security_events() -> None:
    guard = guard_for()
    plan = guard._settings.tenant("acme.example").plan
    for dialled, code in (
        ("899 123 456", "blocked_destination"),  # premium
        ("0044 20 7946 0000", "blocked_destination"),  # international
        ("848 123 456", "blocked_destination"),  # shared cost not in allow
        ("187", "blocked_destination"),  # special
    ):
        denial = guard.start_call("acme.example", "201", normalise(dialled, plan), 0.0)
        assert isinstance(denial, Denial), dialled
        assert (denial.status, denial.security_event, denial.code) == (403, True, code)
    assert guard.active("acme.example") == 0


def test_emergency_always_allowed_never_counted() -> None:
    guard = guard_for()
    # Fill every cap first; extension 203 may not call out at all.
    permits = [guard.start_call("acme.example", "201", NATIONAL, 0.0) for _ in range(2)]
    permits.append(guard.start_call("acme.example", "202", NATIONAL, 0.0))
    assert all(isinstance(p, Permit) for p in permits)
    assert guard.start_call("acme.example", "201", NATIONAL, 0.0).status == 503
    for user in ("201", "202", "203"):
        permit = guard.start_call("acme.example", user, Emergency("112", "IT"), 0.0)
        assert isinstance(permit, Permit) and permit.emergency and not permit.counted
    assert guard.active("acme.example") == 3
    guard.end_call(permit)
    assert guard.active("acme.example") == 3


def test_extension_not_external() -> None:
    denial = guard_for().start_call("acme.example", "203", NATIONAL, 0.0)
    assert (denial.status, denial.code, denial.security_event) == (
        403,
        "extension_not_external",
        True,
    )


def test_concurrent_caps_tenant_and_extension() -> None:
    guard = guard_for()
    a = guard.start_call("acme.example", "201", NATIONAL, 0.0)
    b = guard.start_call("acme.example", "201", NATIONAL, 0.0)
    denial = guard.start_call("acme.example", "201", NATIONAL, 0.0)
    assert (denial.status, denial.code, denial.security_event) == (
        503,
        "extension_concurrent_cap",
        False,
    )
    c = guard.start_call("acme.example", "202", NATIONAL, 0.0)
    assert isinstance(c, Permit)
    denial = guard.start_call("acme.example", "202", NATIONAL, 0.0)
    assert denial.code == "tenant_concurrent_cap"
    guard.end_call(a)
    assert isinstance(guard.start_call("acme.example", "202", NATIONAL, 0.0), Permit)
    del b


def test_hourly_cap_is_a_sliding_window() -> None:
    guard = guard_for()
    now = 0.0
    for _ in range(10):
        permit = guard.start_call("acme.example", "201", NATIONAL, now)
        assert isinstance(permit, Permit)
        guard.end_call(permit)
        now += 60.0
    denial = guard.start_call("acme.example", "202", NATIONAL, now)
    assert (denial.status, denial.code, denial.security_event) == (403, "tenant_hourly_cap", True)
    assert guard.calls_in_window("acme.example", None, now) == 10
    # The first call leaves the window one hour after it started.
    assert guard.start_call("acme.example", "202", NATIONAL, 3599.0).code == "tenant_hourly_cap"
    assert isinstance(guard.start_call("acme.example", "202", NATIONAL, 3600.0), Permit)


def test_extension_hourly_cap_and_memory_bound() -> None:
    text = BASE.replace(
        "extension_max_concurrent_external = 2\n",
        "extension_max_concurrent_external = 2\nextension_max_calls_per_hour = 3\n",
    ).replace("max_calls_per_hour = 10\n", "")
    guard = guard_for(text)
    for i in range(3):
        guard.end_call(guard.start_call("acme.example", "201", NATIONAL, float(i)))
    denial = guard.start_call("acme.example", "201", NATIONAL, 10.0)
    assert denial.code == "extension_hourly_cap"
    assert isinstance(guard.start_call("acme.example", "202", NATIONAL, 10.0), Permit)
    assert max(len(w) for w in guard._recent.values()) <= 3
    # After two quiet hours the windows empty and their keys go away.
    guard.calls_in_window("acme.example", "201", 8000.0)
    guard.calls_in_window("acme.example", "202", 8000.0)
    assert ("acme.example", "201") not in guard._recent


def test_international_and_premium_permissions() -> None:
    text = BASE.replace(
        "max_calls_per_hour = 10\n",
        'max_calls_per_hour = 10\ninternational = true\ninternational_prefixes = ["+44", "+41"]\n'
        'blocked_prefixes = ["+4470"]\n',
    )
    guard = guard_for(text)
    plan = guard._settings.tenant("acme.example").plan

    def decide(dialled: str):
        return guard.start_call("acme.example", "201", normalise(dialled, plan), 0.0)

    permit = decide("0044 20 7946 0000")
    assert isinstance(permit, Permit) and permit.number_class is NumberClass.INTERNATIONAL
    guard.end_call(permit)
    assert decide("0033 1 23 45 67 89").reason.endswith("is not in international_prefixes")
    assert decide("0044 909 879 0000").reason.startswith("premium-rate call")
    assert decide("0044 70 1234 5678").code == "blocked_destination"
    assert decide("899 123 456").reason.startswith("premium-rate call")


def test_reload_keeps_counts() -> None:
    guard = guard_for()
    permit = guard.start_call("acme.example", "201", NATIONAL, 0.0)
    settings, _ = load(BASE.replace("max_concurrent_external = 3", "max_concurrent_external = 1"))
    guard.update(settings)
    assert guard.start_call("acme.example", "202", NATIONAL, 0.0).code == "tenant_concurrent_cap"
    guard.end_call(permit)
    assert isinstance(guard.start_call("acme.example", "202", NATIONAL, 0.0), Permit)
