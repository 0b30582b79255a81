"""The 402 built from a shortfall (gateway.proxy.payment_required): whole seconds as the
balance shows them, a breakdown that adds up, and a detail that never calls a non-zero amount
zero."""

from __future__ import annotations

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
