"""The account's Stripe customer, default card and credit purchases on every store (memory,
SQLite, PostgreSQL): one contract, through the Payments port (issue 11 items 1–2)."""

from __future__ import annotations

import asyncio

from policies.compiled import Plan
from storage.clock import now_ms
from storage.engine.buckets import Source
from storage.ports import Payments, PlanRules, Purchase
from tests.integration.stores import Ledger

PLAN = Plan(key="starter", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)
MIN = 60_000
DAY = 86_400_000


async def test_a_customer_is_linked_once_and_the_first_link_wins_under_concurrency(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    before = await payments.billing_profile(acct)
    assert (before.customer_id, before.default_payment_method_id) == (None, None)
    assert before.created_at_ms > 0
    linked = await asyncio.gather(*(payments.link_customer(acct, f"cus_{n}")
                                    for n in range(20)))
    assert len(set(linked)) == 1  # every racer learns the one winner
    assert (await payments.link_customer(acct, "cus_late")) == linked[0]
    assert (await payments.billing_profile(acct)).customer_id == linked[0]
    assert await payments.account_for_customer(linked[0]) == acct


async def test_the_default_card_is_set_and_cleared_only_by_its_own_detach(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    assert await payments.set_default_payment_method(acct, "pm_a")
    assert not await payments.set_default_payment_method(acct, None, only_if="pm_b")
    assert (await payments.billing_profile(acct)).default_payment_method_id == "pm_a"
    assert await payments.set_default_payment_method(acct, None, only_if="pm_a")
    assert (await payments.billing_profile(acct)).default_payment_method_id is None


async def test_auto_topup_without_a_card_of_its_own_claims_the_default_card(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    await payments.configure_topup(acct, True, 10 * MIN, "mini", "USD", None, None, now_ms())
    assert await payments.claim_topup(acct, now_ms()) is None  # no card anywhere
    assert await payments.due_topups(10, now_ms()) == []
    await payments.link_customer(acct, "cus_d")
    await payments.set_default_payment_method(acct, "pm_default")
    assert await payments.due_topups(10, now_ms()) == [acct]
    claim = await payments.claim_topup(acct, now_ms())
    assert claim is not None
    assert (claim.customer_id, claim.payment_method_id) == ("cus_d", "pm_default")
    # A card named in the settings wins over the default.
    other = await ledger.create_account(PLAN)
    await payments.link_customer(other, "cus_o")
    await payments.set_default_payment_method(other, "pm_default_o")
    await payments.configure_topup(other, True, 10 * MIN, "mini", "USD", "cus_own", "pm_own",
                                   now_ms())
    own = await payments.claim_topup(other, now_ms())
    assert own is not None and (own.customer_id, own.payment_method_id) == ("cus_own",
                                                                            "pm_own")


async def test_a_credit_purchase_credits_its_exact_units_and_a_refund_claws_them_back(
        ledger: Ledger, payments: Payments) -> None:
    acct = await ledger.create_account(PLAN)
    purchase = Purchase("cs_credit", acct, "credit", 0, "USD", 1234, None, 12_340_000)
    assert await payments.record_purchase(purchase, now_ms())
    assert not await payments.record_purchase(purchase, now_ms())
    outcome, grant, recorded = await payments.fulfil_checkout(
        "evt_c", "checkout.session.completed", "cs_credit", now_ms() + 90 * DAY, "pi_c",
        now_ms())
    assert outcome == "credited" and recorded == purchase
    assert grant is not None and grant.amount == 12_340_000
    snap = await ledger.balance(acct)
    assert [(b.source, b.remaining) for b in snap.buckets] == [(Source.PACKAGE.value,
                                                                 12_340_000)]
    assert await payments.refund("evt_r", "charge.refunded", "pi_c", "ch_c", 1234, 617,
                                 now_ms()) == "clawed_back"
    assert (await ledger.balance(acct)).spendable == 6_170_000  # half refunded, half taken
    t = await ledger.totals(acct)
    assert t["remaining"] - t["debt"] == t["deltas"]


async def test_a_subscription_event_naming_another_customer_keeps_the_first_link(
        ledger: Ledger, payments: Payments) -> None:
    rules = PlanRules(rollover_caps={"starter": 0}, rollover_ms=DAY, default_plan="starter")
    acct = await ledger.create_account(PLAN)
    assert await payments.link_customer(acct, "cus_first") == "cus_first"
    outcome = await payments.subscription_changed(
        "evt_relink", "customer.subscription.updated", now_ms(), acct, "active", "starter",
        None, None, rules, stripe_ids=("cus_second", "sub_1"))
    assert outcome == "applied"
    profile = await payments.billing_profile(acct)
    assert (profile.customer_id, profile.subscription_id) == ("cus_first", "sub_1")
    assert await payments.account_for_customer("cus_second") is None
    fresh = await ledger.create_account(PLAN)  # no link yet: the event's customer is linked
    await payments.subscription_changed(
        "evt_link", "customer.subscription.updated", now_ms(), fresh, "active", "starter",
        None, None, rules, stripe_ids=("cus_fresh", None))
    assert (await payments.billing_profile(fresh)).customer_id == "cus_fresh"
