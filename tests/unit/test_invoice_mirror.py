"""Stripe invoice objects read into the mirror across API versions (gateway.invoicing.mirror):
tax before and after 2025-03, the subscription's place, what each line credits."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import pytest

from gateway.invoicing.mirror import subscription_units, to_mirror
from policies.compiled import load_policy
from tests.support import TEST_POLICY

POLICY = load_policy([TEST_POLICY], {})
S = cast(Any, SimpleNamespace(policy=POLICY))
PRO_UNITS = 1200 * 60_000


def old_shape(**over: Any) -> dict[str, Any]:
    """An invoice of API 2024-06: `subscription` and `tax` at the top, line `type`."""
    doc = {"id": "in_old", "status": "uncollectible", "currency": "eur", "number": "A-1",
           "created": 1_700_000_000, "subscription": "sub_1", "customer": "cus_1",
           "billing_reason": "subscription_cycle", "subtotal": 2900, "tax": 551, "total": 3451,
           "total_discount_amounts": [{"amount": 100, "discount": "di_1"}],
           "starting_balance": 0, "ending_balance": 0, "amount_due": 3451, "amount_paid": 0,
           "attempt_count": 4, "period_start": 1_697_000_000, "period_end": 1_700_000_000,
           "status_transitions": {"finalized_at": 1_700_000_100,
                                  "marked_uncollectible_at": 1_700_900_000},
           "lines": {"data": [
               {"type": "subscription", "amount": 2900, "quantity": 1,
                "description": "1 × Pro", "price": {"lookup_key": "pro"},
                "period": {"start": 1_700_000_000, "end": 1_702_592_000}},
               {"type": "invoiceitem", "amount": 0, "quantity": 1, "description": "note"}]}}
    doc.update(over)
    return doc


def test_old_api_shape_uncollectible_is_past_due_and_lines_say_what_they_credit() -> None:
    inv = to_mirror(S, old_shape(), "acct_1", 1_700_900_001_000)
    assert (inv.status, inv.stripe_status, inv.currency, inv.tax_cents,
            inv.discount_cents, inv.subscription_id) == ("past_due", "uncollectible", "EUR", 551,
                                                         100, "sub_1")
    assert [(x.kind, x.credited) for x in inv.lines] == [("subscription", PRO_UNITS),
                                                         ("other", 0)]
    # the lines' period, not the invoice's (which is the previous period for subscriptions)
    assert (inv.period_start_ms, inv.period_end_ms) == (1_700_000_000_000, 1_702_592_000_000)
    assert inv.version == (2, 1_700_900_000_000, 4, 1_700_900_001_000)
    assert subscription_units(S, old_shape()) == PRO_UNITS


def test_a_proration_invoice_credits_nothing_by_itself() -> None:
    proration = old_shape(billing_reason="subscription_update", status="paid")
    assert [x.credited for x in to_mirror(S, proration, "a", 0).lines] == [0, 0]
    assert subscription_units(S, proration) is None


def test_credit_balance_used_is_credits_applied() -> None:
    inv = to_mirror(S, old_shape(starting_balance=-700, ending_balance=0), "a", 0)
    assert inv.credits_applied_cents == 700
    owed = to_mirror(S, old_shape(starting_balance=300, ending_balance=0), "a", 0)
    assert owed.credits_applied_cents == 0


def test_what_is_not_an_invoice_is_refused() -> None:
    with pytest.raises(ValueError):
        to_mirror(S, {"id": "in_x"}, "a", 0)
    with pytest.raises(ValueError):
        to_mirror(S, old_shape(status="deleted"), "a", 0)
