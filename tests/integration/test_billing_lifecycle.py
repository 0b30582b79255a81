"""Subscriptions, period ends, refunds, auto top-up and the account event log, on the in-memory
store, SQLite and the real PostgreSQL (one contract: the `ledger` fixture runs each test on every
store; `payments` is the Payments adapter on the same store).

Every test ends with the ledger invariant Σ remaining − debt = Σ ledger deltas.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from policies.compiled import Plan
from storage.clock import now_ms
from storage.engine import topup
from storage.engine.buckets import Source
from storage.ports import (
    AccountEvent,
    Admission,
    CallRecord,
    Invoice,
    Payments,
    PlanRules,
    Purchase,
    SessionConflict,
)
from tests.integration.stores import Ledger

PLAN = Plan(key="starter", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)
RULES = PlanRules(rollover_caps={"starter": 150 * 60_000, "pro": 600 * 60_000,
                                               "free": 0},
                                rollover_ms=90 * 86_400_000, default_plan="free")
MIN = 60_000
DAY = 86_400_000


async def _invariant(ledger: Ledger, account_id: str) -> None:
    t = await ledger.totals(account_id)
    assert t["remaining"] - t["debt"] == t["deltas"], t


def _invoice(n: int, start_ms: int, end_ms: int, key: str = "starter",
             minutes: int = 300) -> Invoice:
    return Invoice(f"in_{n}", "sub_1", "cus_1", key, key, minutes * MIN, start_ms,
                                 end_ms)


async def _pay(payments: Payments, acct: str, n: int, start: int, end: int,
               created: int | None = None, **kw: Any) -> str:
    return await payments.invoice_paid(f"evt_in_{n}", "invoice.paid", created or start, acct,
                                       _invoice(n, start, end, **kw), RULES, now_ms())


async def _spend(ledger: Ledger, acct: str, amount: int, rid: str) -> None:
    hold = await ledger.admit(acct, amount, "chat", 60, PLAN)
    assert isinstance(hold, Admission)
    await ledger.settle(hold.hold_id, CallRecord(rid, acct, "chat", None, 200, 5), amount, "clamp")


async def test_invoice_paid_credits_the_period_once_and_sets_plan_and_status(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(Plan("free", 0, None, 0, 0, 0))
    now = now_ms()
    assert await _pay(payments, acct, 1, now - DAY, now + 29 * DAY) == "credited"
    assert await _pay(payments, acct, 1, now - DAY, now + 29 * DAY) == "duplicate"
    # A second event about the same invoice credits nothing either.
    second = await payments.invoice_paid("evt_other", "invoice.paid",
                                         now, acct, _invoice(1, now - DAY, now + 29 * DAY),
                                         RULES, now_ms())
    assert second == "duplicate"
    snap = await ledger.balance(acct)
    assert [(b.source, b.remaining, b.expires_at_ms) for b in snap.buckets] == [
        ("subscription", 300 * MIN, now + 29 * DAY)]
    row = await ledger.account_row(acct)
    assert (row["plan_key"], row["subscription_status"], row["stripe_customer_id"],
            row["stripe_subscription_id"]) == ("starter", "active", "cus_1", "sub_1")
    await _invariant(ledger, acct)


async def test_period_end_rolls_over_up_to_the_cap_and_discards_the_rest(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    now = now_ms()
    await _pay(payments, acct, 1, now - 30 * DAY, now - 1000)  # a period that just ended
    assert await payments.expired_accounts(100, now) == [acct]
    closed = await payments.close_expired(acct, RULES, now)
    assert closed == 1
    assert await payments.close_expired(acct, RULES, now) == 0
    live = (await ledger.balance(acct)).buckets
    assert [(b.source, b.remaining) for b in live] == [("rollover", 150 * MIN)]
    assert live[0].expires_at_ms == now - 1000 + 90 * DAY
    kinds = [(e["event_type"], e["delta"]) for e in await ledger.entry_rows(acct)]
    assert kinds[-3:] == [("rollover_discard", -150 * MIN), ("expiry", -150 * MIN),
                          ("rollover_created", 150 * MIN)]
    # The cap bounds the live rollover balance: the next period end rolls nothing over.
    await _pay(payments, acct, 2, now - 1000, now - 500, created=now - 900)
    await payments.close_expired(acct, RULES, now)
    assert [(b.source, b.remaining) for b in (await ledger.balance(acct)).buckets] == [
        ("rollover", 150 * MIN)]
    await _invariant(ledger, acct)


async def test_rollover_is_what_was_left_unused(ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    now = now_ms()
    await _pay(payments, acct, 1, now - 30 * DAY, now + 60_000)
    await _spend(ledger, acct, 250 * MIN, "req_used")
    await payments.close_expired(acct, RULES, now + 61_000)
    rows = await ledger.bucket_rows(acct)
    assert [(b["source"], b["remaining"]) for b in rows if b["remaining"]] == [
        ("rollover", 50 * MIN)]
    await _invariant(ledger, acct)


async def test_a_scheduled_downgrade_warns_then_discards_rollover_when_it_takes_effect(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    now = now_ms()
    await ledger.grant(acct, Source.ROLLOVER, 100 * MIN, "seed_rollover", now + 80 * DAY, "x")
    await _pay(payments, acct, 1, now - DAY, now + 29 * DAY, created=now - 10)
    outcome = await payments.subscription_changed(
        "evt_sched", "customer.subscription.updated",
        now, acct, "active", "starter", "starter", ("free", now + 29 * DAY), RULES, at_ms=now_ms())
    assert outcome == "applied"
    pending = [e for e in await ledger.entry_rows(acct)
               if e["event_type"] == "rollover_discard_pending"]
    assert len(pending) == 1 and pending[0]["delta"] == 0
    assert '"minutes_to_discard":100' in pending[0]["metadata_json"]
    snap = await ledger.balance(acct)
    assert (snap.pending_plan_key, snap.pending_effective_at_ms) == ("free", now + 29 * DAY)
    # An older event arriving late changes nothing.
    stale = await payments.subscription_changed(
        "evt_old", "customer.subscription.updated",
        now - 5, acct, "past_due", "starter", "starter", None, RULES, at_ms=now_ms())
    assert stale == "stale"
    # The downgrade takes effect (subscription deleted at period end): rollover is discarded.
    done = await payments.subscription_changed(
        "evt_del", "customer.subscription.deleted",
        now + 1, acct, "canceled", None, None, None, RULES, at_ms=now_ms())
    assert done == "applied"
    row = await ledger.account_row(acct)
    assert (row["plan_key"], row["subscription_status"], row["pending_plan_key"]) == (
        "free", "canceled", None)
    assert [b.source for b in (await ledger.balance(acct)).buckets] == ["subscription"]
    await _invariant(ledger, acct)


async def _checkout(payments: Payments, acct: str, session: str, pi: str,
                    event: str) -> str:
    await payments.record_purchase(Purchase(
        session, acct, "mini", 60, "USD", 500, "req_blocked1"), now_ms())
    outcome, _grant, _p = await payments.fulfil_checkout(
        event, "checkout.session.completed", session,
        now_ms() + 90 * DAY, pi, now_ms())
    return str(outcome)


async def test_a_refund_claws_back_what_remains_of_that_purchase(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 10 * MIN, "gift", None, "gift")
    assert await _checkout(payments, acct, "cs_1", "pi_1", "evt_c1") == "credited"
    await _spend(ledger, acct, 20 * MIN, "req_spent")  # package burns before the gift
    half = await payments.refund("evt_r1", "charge.refunded", "pi_1",
                                   "ch_1", 500, 250, now_ms())
    assert half == "clawed_back"  # 30 of 60 minutes refunded; 40 remain → take 30
    assert await payments.refund("evt_r1", "charge.refunded", "pi_1",
                                   "ch_1", 500, 250, now_ms()) == "duplicate"
    full = await payments.refund("evt_r2", "charge.refunded", "pi_1",
                                   "ch_1", 500, 500, now_ms())
    assert full == "clawed_back"  # the other 30 owed, only 10 remain: take 10, never below 0
    snap = await ledger.balance(acct)
    assert sorted((b.source, b.remaining) for b in snap.buckets) == [("gift", 10 * MIN)]
    await _invariant(ledger, acct)


async def test_a_refund_that_arrives_before_its_credit_is_applied_with_it(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    early = await payments.refund("evt_r0", "charge.refunded", "pi_9",
                                    "ch_9", 500, 500, now_ms())
    assert early == "pending"
    assert await _checkout(payments, acct, "cs_9", "pi_9", "evt_c9") == "credited"
    assert (await ledger.balance(acct)).buckets == []
    kinds = [e["event_type"] for e in await ledger.entry_rows(acct)]
    assert kinds == ["package_credit", "adjustment"]
    await _invariant(ledger, acct)


async def _configure(payments: Payments, acct: str, threshold_min: int = 10) -> None:
    await payments.configure_topup(acct, True, threshold_min * MIN, "mini",
                            "USD", "cus_1", "pm_1", now_ms())


async def test_auto_topup_claims_once_backs_off_and_credits_only_on_success(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 5 * MIN, "gift", None, "gift")
    await _configure(payments, acct)
    claims = await asyncio.gather(*(payments.claim_topup(acct, now_ms())
                                    for _ in range(6)))
    won = [c for c in claims if c is not None]
    assert len(won) == 1 and won[0].attempt_id == f"{acct}:1"
    assert (await ledger.balance(acct)).spendable == 5 * MIN  # nothing credited yet
    # Declined: cleared, and no new attempt during the backoff.
    assert await payments.topup_failed(acct, won[0].attempt_id, "declined",
                                   now_ms())
    assert await payments.claim_topup(acct, now_ms()) is None
    row = await payments.topup_settings(acct)
    assert row["failures"] == 1 and row["next_attempt_at_ms"] > now_ms() + 50_000
    # After the backoff: attempt 2, then its success credits the package once.
    later = now_ms() + topup.backoff_ms(1) + 1
    second = await payments.claim_topup(acct, later)
    assert second is not None and second.attempt_id == f"{acct}:2"
    for _ in range(2):
        await payments.credit_topup("evt_pi_ok", "payment_intent.succeeded",
                                "pi_auto", acct, second.attempt_id, "mini", 60, "USD", 500,
                                now_ms() + 90 * DAY, now_ms())
    assert (await ledger.balance(acct)).spendable == 65 * MIN
    row = await payments.topup_settings(acct)
    assert (row["pending_attempt"], row["failures"]) == (None, 0)
    kinds = [e["event_type"] for e in await ledger.entry_rows(acct)]
    assert kinds.count("auto_topup_triggered") == 2 and kinds.count("package_credit") == 1
    await _invariant(ledger, acct)


async def test_a_stale_pending_attempt_is_retried_with_the_same_idempotency_key(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    await _configure(payments, acct)
    first = await payments.claim_topup(acct, now_ms())
    assert first is not None
    assert await payments.claim_topup(acct, now_ms()) is None  # one pending
    later = now_ms() + topup.STALE_PENDING_MS + 1
    again = await payments.claim_topup(acct, later)
    assert again is not None and again.attempt_id == first.attempt_id


async def test_settlement_flags_a_top_up_below_the_threshold(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 15 * MIN, "gift", None, "gift")
    await _configure(payments, acct, threshold_min=10)
    hold = await ledger.admit(acct, 2 * MIN, "chat", 60, PLAN)
    assert isinstance(hold, Admission)
    above = await ledger.settle(hold.hold_id, CallRecord("req_a", acct, "chat", None, 200, 5),
                                2 * MIN, "clamp")
    assert not above.top_up
    hold = await ledger.admit(acct, 4 * MIN, "chat", 60, PLAN)
    assert isinstance(hold, Admission)
    below = await ledger.settle(hold.hold_id, CallRecord("req_b", acct, "chat", None, 200, 5),
                                4 * MIN, "clamp")
    assert below.top_up and below.remaining == 9 * MIN


async def test_the_event_log_numbers_events_per_account_and_replays_after_an_id(
        ledger: Ledger) -> None:
    acct = await ledger.create_account(PLAN)
    other = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 10 * MIN, "gift", None, "gift")
    await ledger.grant(other, Source.GIFT, MIN, "gift", None, "gift")
    await _spend(ledger, acct, 30_000, "req_ev")
    log = await ledger.events_after(acct, 0, 100)
    # The call's balance.updated took id 4 but is live only (not logged).
    assert [e.type for e in log] == ["bucket.created", "credit.applied", "balance.updated"]
    assert [e.seq for e in log] == [1, 2, 3]
    assert log[0].data["seconds"] == 600 and log[0].data["source"] == "gift"
    assert log[-1].data == {"total_seconds": 600, "paid_seconds": 600, "bonus_seconds": 0,
                            "available_seconds": 600, "reason": "gift_credit",
                            "ledger": {"total": 600_000, "paid": 600_000, "bonus": 0,
                                       "available": 600_000, "held": 0, "debt": 0}}
    after, current = await ledger.catch_up(acct, 2, 100)
    assert [e.seq for e in after] == [3] and current == 4
    assert await ledger.stream_position(acct) == (4, 1)
    assert await ledger.stream_position("acct_nope") is None
    pruned = await ledger.prune_events(now_ms() + 1)
    assert pruned == 3 + 3
    assert await ledger.stream_position(acct) == (4, 5)


async def test_settlement_hands_a_live_balance_event_to_the_fan_out(ledger: Ledger) -> None:
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 10 * MIN, "gift", None, "gift")
    published: list[AccountEvent] = []
    ledger.on_commit = published.extend
    await _spend(ledger, acct, 30_000, "req_live")
    assert [(e.type, e.seq) for e in published] == [("balance.updated", 4)]
    assert published[0].data == {"total_seconds": 570, "paid_seconds": 570, "bonus_seconds": 0,
                                 "available_seconds": 570, "reason": "consumption",
                                 "charged_ms": 30_000,
                                 "ledger": {"total": 570_000, "paid": 570_000, "bonus": 0,
                                            "available": 570_000, "held": 0, "debt": 0}}


async def test_checkout_fulfilment_announces_package_and_resume_ready(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    await _checkout(payments, acct, "cs_ann", "pi_ann", "evt_ann")
    log = await ledger.events_after(acct, 0, 100)
    by_type = {e.type: e.data for e in log}
    assert list(by_type) == ["bucket.created", "credit.applied", "package.fulfilled",
                             "resume.ready", "balance.updated"]
    assert by_type["resume.ready"] == {"operation_id": "req_blocked1",
                                       "instance": "urn:op:req_blocked1", "package_key": "mini"}
    assert "token" not in str(by_type)


async def test_expired_plain_buckets_leave_the_ledger_with_an_event(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    now = now_ms()
    await ledger.grant(acct, Source.PACKAGE, 5 * MIN, "pkg", now + 1000, "package")
    await payments.close_expired(acct, RULES, now + 2000)
    log = await ledger.events_after(acct, 0, 100)
    expired = [e.data for e in log if e.type == "bucket.expired"]
    assert len(expired) == 1 and expired[0]["seconds"] == 300
    assert [e["event_type"] for e in await ledger.entry_rows(acct)] == [
        "package_credit", "expiry"]
    await _invariant(ledger, acct)


async def test_a_checkout_session_recorded_twice_is_one_purchase_or_a_conflict(
    ledger: Ledger, payments: Payments,
) -> None:
    """Stripe may answer a repeated create with the session it already made: the same purchase
    is recorded once; the id reused for another purchase is refused, never a constraint error."""
    acct = await ledger.create_account(PLAN)
    other = await ledger.create_account(PLAN)
    mine = Purchase("cs_same", acct, "mini", 60, "USD", 500, None)
    assert await payments.record_purchase(mine, now_ms()) is True
    assert await payments.record_purchase(mine, now_ms()) is False
    for differs in (Purchase("cs_same", other, "mini", 60, "USD", 500, None),
                    Purchase("cs_same", acct, "max", 600, "USD", 6900, None),
                    Purchase("cs_same", acct, "mini", 60, "USD", 500, "req_x1234")):
        with pytest.raises(SessionConflict):
            await payments.record_purchase(differs, now_ms())
    outcome, _grant, _p = await payments.fulfil_checkout(
        "evt_same", "checkout.session.completed", "cs_same",
        now_ms() + 90 * DAY, "pi_same", now_ms())
    assert outcome == "credited"  # the one recorded purchase, for its account
    assert (await ledger.balance(acct)).spendable == 60 * MIN
    await _invariant(ledger, acct)


async def test_a_package_of_credits_grants_its_units_and_a_refund_claws_back_a_share(
        ledger: Ledger, payments: Payments) -> None:
    """Issue 10: a currency deployment's package (10.00 USD of credits = 10,000,000 micro-USD)
    credits its `units`, not minutes; a half refund takes back half of them."""
    acct = await ledger.create_account(PLAN)
    await payments.record_purchase(Purchase(
        "cs_usd", acct, "ten", 0, "USD", 1000, None, 10_000_000), now_ms())
    outcome, grant, _p = await payments.fulfil_checkout(
        "evt_usd", "checkout.session.completed", "cs_usd", now_ms() + 90 * DAY, "pi_usd",
        now_ms())
    assert outcome == "credited" and grant is not None and grant.amount == 10_000_000
    assert await payments.refund("evt_usd_r", "charge.refunded", "pi_usd", "ch_usd", 1000,
                                 500, now_ms()) == "clawed_back"
    assert (await ledger.balance(acct)).available == 5_000_000
    assert await payments.credit_topup(
        "evt_pi_tok", "payment_intent.succeeded", "pi_tok", acct, None, "ten", 0, "USD", 1000,
        now_ms() + 90 * DAY, now_ms(), units=2_500_000) == "credited"
    assert (await ledger.balance(acct)).available == 7_500_000
    await _invariant(ledger, acct)
