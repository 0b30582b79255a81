"""The 402 built from a shortfall (gateway.proxy.payment_required): whole seconds as the
balance shows them, a breakdown that adds up, and a detail that never calls a non-zero amount
zero."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.payment_required import insufficient_ai_time
from policies.schema import CatalogSpec
from storage.ports import Shortfall

CATALOG = CatalogSpec.model_validate({
    "version": "2025-09-01",
    "packages": [{"key": "mini", "name": "Mini", "minutes": 60, "prices": {"USD": 500}}]})


def _problem(shortfall: Shortfall) -> dict:
    error = insufficient_ai_time(shortfall, operation_id="req_test1234", catalog=CATALOG,
                                 plan_key="payg", resume_token="rt_x",
                                 resume_expires_at_ms=1_803_000_000_079)
    return error.body("http://gw/problems/")


def test_a_sub_second_balance_is_never_said_to_be_zero():
    doc = _problem(Shortfall(required=1_500, available=951, daily=0, paid=951))
    assert doc["detail"] == "This request needs about 2 s; less than 1 s is available."
    assert doc["balance_seconds"] == 0  # rounded down, as the balance's totals (seeds)


def test_whole_seconds_and_nothing_read_as_they_are():
    assert _problem(Shortfall(30_000, 12_400, 0, 12_400))["detail"] == (
        "This request needs about 30 s; 12 s are available.")
    assert _problem(Shortfall(30_000, 1_000, 0, 1_000))["detail"] == (
        "This request needs about 30 s; 1 s is available.")
    assert _problem(Shortfall(30_000, 0, 0, 0))["detail"] == (
        "This request needs about 30 s; 0 s are available.")


def test_the_breakdown_adds_up_to_the_balance_and_times_are_whole_seconds():
    doc = _problem(Shortfall(required=10_000, available=3_100, daily=1_500, paid=1_600))
    assert doc["balance_seconds"] == 3
    assert doc["breakdown_seconds"] == {"bonus_daily": 1, "paid": 2}
    assert doc["resume_expires_at"] == "2027-02-19T01:20:00Z"


def _sellable(key: str, minutes: int, **extra: str) -> dict:
    return {"key": key, "name": key.title(), "minutes": minutes, "prices": {"USD": 100}, **extra}


SHOP = CatalogSpec.model_validate({
    "version": "2025-10-01",
    "packages": [_sellable("max", 1200), _sellable("mini", 60), _sellable("standard", 300)],
    "subscriptions": [_sellable("starter", 300, plan="starter"),
                      _sellable("pro", 1200, plan="pro")]})
MINUTE_MS = 60_000


def _suggestions(deficit_ms: int, plan_key: str = "payg", catalog: CatalogSpec = SHOP) -> list:
    error = insufficient_ai_time(Shortfall(deficit_ms, 0, 0, 0), operation_id="req_t",
                                 catalog=catalog, plan_key=plan_key, resume_token="rt_x",
                                 resume_expires_at_ms=0)
    return error.body("http://gw/problems/")["suggestions"]


def test_the_402_carries_every_field_of_the_contract():
    error = insufficient_ai_time(Shortfall(30_000, 12_000, 0, 12_000), operation_id="req_op1",
                                 catalog=SHOP, plan_key="starter", resume_token="rt_abc",
                                 resume_expires_at_ms=1_756_731_600_000)
    doc = error.body("https://gw.example/problems/")
    assert doc == {
        "type": "https://gw.example/problems/insufficient-ai-time",
        "title": "Insufficient AI time",
        "status": 402,
        "detail": "This request needs about 30 s; 12 s are available.",
        "error": "INSUFFICIENT_AI_TIME",
        "http_status": 402,
        "balance_seconds": 12,
        "required_seconds": 30,
        "breakdown_seconds": {"bonus_daily": 0, "paid": 12},
        "suggestions": [{"type": "package", "key": "mini", "minutes": 60},
                        {"type": "upgrade", "plan": "pro"}],
        "catalog_version": "2025-10-01",
        "resume_token": "rt_abc",
        "resume_expires_at": "2025-09-01T13:00:00Z",
        "limit_source": "account",
    }
    assert error.operation_id == "req_op1"  # the renderer's `instance` (urn:op:<id>)


def test_required_seconds_round_up_and_balance_seconds_round_down():
    for required_ms, available_ms, seconds in [
        (1, 0, (1, 0)), (1_000, 999, (1, 0)), (1_001, 1_000, (2, 1)), (30_000, 12_999, (30, 12)),
    ]:
        doc = _problem(Shortfall(required_ms, available_ms, 0, available_ms))
        assert (doc["required_seconds"], doc["balance_seconds"]) == seconds


def test_a_negative_balance_reads_as_nothing_available():
    doc = _problem(Shortfall(required=5_000, available=-2_500, daily=0, paid=-2_500))
    assert doc["balance_seconds"] == 0
    assert doc["breakdown_seconds"] == {"bonus_daily": 0, "paid": 0}
    assert doc["detail"] == "This request needs about 5 s; 0 s are available."


def test_a_debt_in_paid_time_never_makes_the_breakdown_negative():
    doc = _problem(Shortfall(required=10_000, available=1_500, daily=2_900, paid=-1_400))
    assert doc["balance_seconds"] == 1
    assert doc["breakdown_seconds"] == {"bonus_daily": 1, "paid": 0}


def test_the_smallest_package_that_covers_the_deficit_is_suggested():
    assert _suggestions(MINUTE_MS)[0] == {"type": "package", "key": "mini", "minutes": 60}
    assert _suggestions(60 * MINUTE_MS)[0]["key"] == "mini"
    assert _suggestions(60 * MINUTE_MS + 1)[0]["key"] == "standard"  # whole minutes, rounded up
    assert _suggestions(301 * MINUTE_MS)[0]["key"] == "max"


def test_the_largest_package_is_suggested_when_none_covers_the_deficit():
    assert _suggestions(5_000 * MINUTE_MS)[0] == {"type": "package", "key": "max", "minutes": 1200}


def test_the_deficit_is_what_is_missing_not_what_is_required():
    error = insufficient_ai_time(Shortfall(100 * MINUTE_MS, 50 * MINUTE_MS, 0, 50 * MINUTE_MS),
                                 operation_id="req_t", catalog=SHOP, plan_key="payg",
                                 resume_token="rt_x", resume_expires_at_ms=0)
    assert error.body("http://gw/problems/")["suggestions"][0]["key"] == "mini"


def test_a_catalog_without_packages_suggests_only_an_upgrade():
    catalog = SHOP.model_copy(update={"packages": []})
    assert _suggestions(MINUTE_MS, "starter", catalog) == [{"type": "upgrade", "plan": "pro"}]


def test_an_account_on_the_top_plan_is_offered_no_upgrade():
    assert [s["type"] for s in _suggestions(MINUTE_MS, "pro")] == ["package"]


def test_an_account_without_a_subscription_is_offered_one():
    one_plan = SHOP.model_copy(update={"subscriptions": SHOP.subscriptions[1:]})
    assert _suggestions(MINUTE_MS, "payg", one_plan)[1:] == [{"type": "upgrade", "plan": "pro"}]


@settings(max_examples=300, deadline=None)
@given(available=st.integers(-10**7, 10**9), missing=st.integers(1, 10**9),
       daily=st.integers(0, 10**9))
def test_the_numbers_of_any_402_are_whole_seconds_that_add_up(available, missing, daily):
    required = max(0, available) + missing  # a call always needs something
    doc = _problem(Shortfall(required, available, daily, available - daily))
    balance, needed = doc["balance_seconds"], doc["required_seconds"]
    assert balance * 1000 <= max(0, available) < (balance + 1) * 1000  # rounded down
    assert (needed - 1) * 1000 < required <= needed * 1000  # rounded up
    breakdown = doc["breakdown_seconds"]
    assert breakdown["bonus_daily"] >= 0 and breakdown["paid"] >= 0
    assert breakdown["bonus_daily"] + breakdown["paid"] == balance
    assert (" 0 s " in doc["detail"]) == (available <= 0)
