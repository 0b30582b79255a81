"""A mirrored invoice converges on Stripe's latest state whatever order its events arrive in,
each delivered any number of times (storage.engine.invoices; the in-memory adapter)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.compiled import Plan
from storage.engine.invoices import seed_status, supersedes, version_of
from storage.memory.billing_records import MemoryBillingRecords
from storage.memory.ledger import MemoryLedger
from storage.ports import MirroredInvoice

T0 = 1_790_000_000_000


def state(stripe_status: str, transitions: dict[str, int], attempts: int, event_ms: int,
          paid: int = 0) -> MirroredInvoice:
    return MirroredInvoice(
        invoice_id="in_1", account_id="", number="INV-1", status=seed_status(stripe_status),
        stripe_status=stripe_status, currency="USD", subtotal_cents=2900, tax_cents=0,
        discount_cents=0, total_cents=2900, credits_applied_cents=0,
        amount_due_cents=2900, amount_paid_cents=paid, created_at_ms=T0,
        version=version_of(stripe_status, transitions, attempts, event_ms))


# One invoice's life as Stripe sends it: finalized, a failed attempt, marked uncollectible,
# then paid — each event with the object as it was then.
LIFE = [
    state("open", {"finalized_at": T0}, 0, T0 + 1),
    state("open", {"finalized_at": T0}, 1, T0 + 2),
    state("uncollectible", {"finalized_at": T0, "marked_uncollectible_at": T0 + 3}, 1, T0 + 3),
    state("paid", {"finalized_at": T0, "marked_uncollectible_at": T0 + 3, "paid_at": T0 + 4},
          2, T0 + 4, paid=2900),
]


def test_uncollectible_is_past_due_in_the_seed_union() -> None:
    assert [seed_status(s) for s in ("draft", "open", "paid", "void", "uncollectible")] == [
        "draft", "open", "paid", "void", "past_due"]
    with pytest.raises(ValueError):
        seed_status("deleted")


def test_an_identical_state_is_not_newer() -> None:
    assert supersedes(LIFE[0].version, None)
    assert not supersedes(LIFE[0].version, LIFE[0].version)
    assert supersedes(LIFE[1].version, LIFE[0].version)  # a failed attempt counts


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(range(len(LIFE))), min_size=1, max_size=12))
def test_any_delivery_order_with_duplicates_converges_on_the_latest_state(
        order: list[int]) -> None:
    async def run() -> MirroredInvoice | None:
        ledger = MemoryLedger()
        account = await ledger.create_account(Plan("p", 0, None, 0, 0, 0))
        records = MemoryBillingRecords(ledger)
        outcomes = [await records.mirror_invoice(replace(LIFE[i], account_id=account))
                    for i in order]
        assert outcomes[0] == "created"
        assert all(o in ("updated", "stale") for o in outcomes[1:])
        return await records.invoice(account, "in_1")

    stored = asyncio.run(run())
    latest = LIFE[max(order)]
    assert stored is not None
    assert (stored.status, stored.version, stored.amount_paid_cents) == (
        latest.status, latest.version, latest.amount_paid_cents)
