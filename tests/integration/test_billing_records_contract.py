"""The BillingRecords contract (storage.ports), unchanged on the in-memory store, SQLite and
PostgreSQL: mirrored invoices (versions, accounts, keyset pages), usage statements' groups,
the Stripe-keyed credits reconciliation reads, and stored reports."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace

import pytest

from policies.compiled import Plan
from storage.engine.buckets import Source
from storage.engine.invoices import version_of
from storage.ports import (
    CallRecord,
    InvoiceLine,
    MirroredInvoice,
    Purchase,
    StripeCredit,
    UnknownAccount,
    UsageLine,
)
from tests.integration.stores import Ledger, payments_of, records_of
from tests.integration.test_balance_alerts import webhooks_of

NewAccount = Callable[[Plan], Awaitable[str]]
PLAIN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
             rollover_cap=0)
T0 = 1_790_000_000_000
FAR = 2**53


def inv(account: str, invoice_id: str, status: str = "open", created: int = T0,
        event_ms: int = T0, attempts: int = 0) -> MirroredInvoice:
    paid = {"paid_at": created + 5} if status == "paid" else {}
    return MirroredInvoice(
        invoice_id=invoice_id, account_id=account, number=f"N-{invoice_id}",
        status={"uncollectible": "past_due"}.get(status, status), stripe_status=status,
        currency="USD", subtotal_cents=2900, tax_cents=100, discount_cents=0, total_cents=3000,
        credits_applied_cents=0, amount_due_cents=3000,
        amount_paid_cents=3000 if status == "paid" else 0, created_at_ms=created,
        version=version_of(status, {"finalized_at": created, **paid}, attempts, event_ms),
        lines=(InvoiceLine("Pro", 2900, 1, "subscription", 72_000_000, created, created + 10),),
        period_start_ms=created, period_end_ms=created + 10, description="Pro",
        finalized_at_ms=created, paid_at_ms=paid.get("paid_at"),
        invoice_pdf=None, subscription_id="sub_1", billing_reason="subscription_cycle")


async def test_a_newer_state_replaces_an_older_one_never_the_reverse(
        ledger: Ledger, new_account: NewAccount) -> None:
    records = records_of(ledger)
    account = await new_account(PLAIN)
    assert await records.mirror_invoice(inv(account, "in_a", "open")) == "created"
    assert await records.mirror_invoice(inv(account, "in_a", "open")) == "stale"
    assert await records.mirror_invoice(inv(account, "in_a", "paid", event_ms=T0 + 9)) == "updated"
    assert await records.mirror_invoice(inv(account, "in_a", "open", attempts=3)) == "stale"
    stored = await records.invoice(account, "in_a")
    assert stored == inv(account, "in_a", "paid", event_ms=T0 + 9)  # every field round-trips


async def test_an_invoice_is_only_its_own_accounts(ledger: Ledger,
                                                   new_account: NewAccount) -> None:
    records = records_of(ledger)
    mine, other = await new_account(PLAIN), await new_account(PLAIN)
    await records.mirror_invoice(inv(mine, "in_b"))
    assert await records.invoice(other, "in_b") is None
    assert await records.invoices(other, None, 10, None) == []
    # the same Stripe id sent for another account never moves or overwrites it
    assert await records.mirror_invoice(inv(other, "in_b", "paid")) == "stale"
    assert (await records.invoice(mine, "in_b")) is not None
    with pytest.raises(UnknownAccount):
        await records.mirror_invoice(inv("acct_nobody", "in_c"))


async def test_keyset_pages_newest_first_and_the_status_filter(
        ledger: Ledger, new_account: NewAccount) -> None:
    records = records_of(ledger)
    account = await new_account(PLAIN)
    made = [inv(account, f"in_{i}", "paid" if i % 2 else "open", created=T0 + (i // 2) * 1000)
            for i in range(7)]  # equal creation times: ties broken by id
    for x in made:
        await records.mirror_invoice(x)
    expected = sorted(made, key=lambda x: (x.created_at_ms, x.invoice_id), reverse=True)
    seen, before = [], None
    while True:
        page = await records.invoices(account, None, 3, before)
        if not page:
            break
        seen += page
        before = (page[-1].created_at_ms, page[-1].invoice_id)
    assert [x.invoice_id for x in seen] == [x.invoice_id for x in expected]
    paid = await records.invoices(account, "paid", 10, None)
    assert [x.invoice_id for x in paid] == [x.invoice_id for x in expected if x.status == "paid"]


def call(account: str, rid: str, op: str, model: str | None, tokens: int) -> CallRecord:
    return CallRecord(request_id=rid, account_id=account, operation=op, model=model,
                      upstream_status=200, duration_ms=10, input_tokens=tokens,
                      output_tokens=2 * tokens)


async def test_usage_breakdown_groups_by_operation_and_model(
        ledger: Ledger, new_account: NewAccount) -> None:
    records = records_of(ledger)
    account, other = await new_account(PLAIN), await new_account(PLAIN)
    await ledger.grant(account, Source.GIFT, 1_000_000, "it:g", None, "grant")
    for rid, op, model, tokens, charge in (("r1", "chat", "m-a", 10, 100),
                                           ("r2", "chat", "m-a", 5, 50),
                                           ("r3", "chat", "m-b", 1, 10),
                                           ("r4", "build", None, 0, 400)):
        await ledger.settle(None, call(account, rid, op, model, tokens), charge, "clamp")
    await ledger.settle(None, call(other, "r5", "chat", "m-a", 1), 5, "clamp")  # unbilled 5
    assert await records.usage_breakdown(account, 0, FAR) == [
        UsageLine(("build", None), 1, 0, 0, 400, 0),
        UsageLine(("chat", "m-a"), 2, 15, 30, 150, 0),
        UsageLine(("chat", "m-b"), 1, 1, 2, 10, 0)]
    assert await records.usage_breakdown(other, 0, FAR) == [
        UsageLine(("chat", "m-a"), 1, 1, 2, 0, 5)]
    assert await records.usage_breakdown(account, 0, 1) == []


async def test_stripe_credits_by_object_and_by_period(ledger: Ledger,
                                                      new_account: NewAccount) -> None:
    records, payments = records_of(ledger), payments_of(ledger)
    account = await new_account(PLAIN)
    for session in ("cs_1", "cs_2"):
        await payments.record_purchase(Purchase(session, account, "mini", 60, "USD", 500, None))
    assert (await payments.fulfil_checkout("evt_1", "checkout.session.completed", "cs_1", FAR,
                                           "pi_1"))[0] == "credited"
    await ledger.grant(account, Source.SUBSCRIPTION, 72_000_000, "stripe_invoice:in_1", FAR,
                       "subscription pro")
    await ledger.grant(account, Source.GIFT, 1000, "admin:not-stripe", None, "gift")
    assert await payments.credit_topup("evt_2", "payment_intent.succeeded", "pi_t", account,
                                       None, "mini", 60, "USD", 500, FAR) == "credited"
    by_object = await records.stripe_credits(0, 0, ["pi_1", "cs_2", "in_1", "pi_t", "in_x"])
    got = sorted((c.kind, c.object_id, c.key, c.amount, c.payment_intent_id, c.cents)
                 for c in by_object)
    assert got == [
        ("checkout", "cs_1", "stripe_checkout:cs_1", 3_600_000, "pi_1", 500),
        ("checkout", "cs_2", None, 0, None, 500),  # recorded, never credited
        ("invoice", "in_1", "stripe_invoice:in_1", 72_000_000, None, None),
        ("topup", "pi_t", "stripe_pi:pi_t", 3_600_000, "pi_t", 500)]
    assert all(isinstance(c, StripeCredit) and c.account_id == account for c in by_object)
    in_period = await records.stripe_credits(0, FAR, [])
    assert sorted(c.object_id for c in in_period) == ["cs_1", "in_1", "pi_t"]


async def test_reports_are_stored_and_listed_newest_first(ledger: Ledger) -> None:
    records = records_of(ledger)
    for i in range(3):
        await records.save_report(f"rcn_{i:013x}aa", 0, 10, i, i == 1, {"id": f"r{i}",
                                                                         "n": [i]})
    one = await records.report("rcn_0000000000001aa")
    assert one == {"id": "rcn_0000000000001aa", "from_ms": 0, "to_ms": 10, "created_at_ms": 1,
                   "applied": True, "document": {"id": "r1", "n": [1]}}
    assert await records.report("rcn_missing") is None
    listed = await records.reports(2, None)
    assert [r["created_at_ms"] for r in listed] == [2, 1]
    assert [r["created_at_ms"] for r in await records.reports(5, listed[-1]["id"])] == [0]


async def test_concurrent_deliveries_of_one_invoice_keep_the_newest(
        ledger: Ledger, new_account: NewAccount) -> None:
    records = records_of(ledger)
    account = await new_account(PLAIN)
    states = [replace(inv(account, "in_race", "open", attempts=i), number=f"v{i}")
              for i in range(6)] + [inv(account, "in_race", "paid", event_ms=T0 + 99)]
    outcomes = await asyncio.gather(*(records.mirror_invoice(x) for x in reversed(states)))
    assert outcomes.count("created") == 1
    stored = await records.invoice(account, "in_race")
    assert stored is not None and stored.stripe_status == "paid"


async def test_a_failed_invoice_payment_emits_payment_failed_once_per_stripe_event(
        ledger: Ledger, new_account: NewAccount) -> None:
    """`invoice.payment_failed` → the mirror, the event record and `payment.failed` (on the
    account's log and in the outbox of subscribed endpoints) in one transaction; the same Stripe
    event delivered again writes nothing."""
    records, hooks = records_of(ledger), webhooks_of(ledger)
    account = await new_account(PLAIN)
    endpoint = await hooks.create_endpoint("https://ops.example/pay", ["payment.failed"], None,
                                           "whsec_" + "A" * 32)
    failed = inv(account, "in_f", "open", attempts=1)
    for _ in range(2):
        outcome = await records.mirror_invoice_event(
            failed, "evt_f1", "invoice.payment_failed", "Your card was declined.", T0)
    assert outcome == "duplicate"
    assert await records.invoice(account, "in_f") == failed
    events = [e for e in await ledger.events_after(account, 0, 50)
              if e.type == "payment.failed"]
    assert [e.data for e in events] == [{"kind": "invoice", "reference": "in_f",
                                         "error": "Your card was declined."}]
    rows = await hooks.deliveries(endpoint["id"], 10)
    assert rows is not None and len(rows) == 1
    assert await payments_of(ledger).record_event("evt_f1", "x", "y", T0) is False
    # a second failed attempt is another Stripe event: another payment.failed
    assert await records.mirror_invoice_event(
        inv(account, "in_f", "open", attempts=2), "evt_f2", "invoice.payment_failed",
        "Insufficient funds.", T0 + 1) == "updated"
    assert len(await hooks.deliveries(endpoint["id"], 10) or []) == 2
    # other mirrored events emit nothing
    assert await records.mirror_invoice_event(
        inv(account, "in_g"), "evt_g", "invoice.finalized", None, T0) == "created"
    assert len([e for e in await ledger.events_after(account, 0, 50)
                if e.type == "payment.failed"]) == 2
    # the id of another account's invoice: recorded, but neither moved nor announced to it
    intruder = await new_account(PLAIN)
    assert await records.mirror_invoice_event(
        inv(intruder, "in_f", "open", attempts=3), "evt_f3", "invoice.payment_failed", "x",
        T0 + 2) == "stale"
    assert [e for e in await ledger.events_after(intruder, 0, 50)
            if e.type == "payment.failed"] == []
    assert len(await hooks.deliveries(endpoint["id"], 10) or []) == 2
    # an unknown account writes nothing, not even the event record
    with pytest.raises(UnknownAccount):
        await records.mirror_invoice_event(inv("acct_nope", "in_h"), "evt_h",
                                           "invoice.payment_failed", "x", T0)
    assert await payments_of(ledger).record_event("evt_h", "x", "y", T0) is True
