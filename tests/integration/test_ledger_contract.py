"""The ledger contract, run unchanged against the in-memory store, SQLite and PostgreSQL so the
stores cannot drift.

Every test creates its accounts through the `new_account` fixture, which afterwards audits the
invariant Σ buckets.remaining − debt == Σ ledger deltas (and no negative bucket) on each of them.
Amounts are ledger units (ms of AI time); times are UTC epoch ms.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from policies.compiled import Plan
from storage.clock import now_ms
from storage.engine.buckets import EventType, Source
from storage.ports import (
    Admission,
    CallRecord,
    IdempotencyConflict,
    ResolvedKey,
    Shortfall,
    UnknownAccount,
)
from tests.integration.stores import Ledger
from tests.support import ManualClock

NewAccount = Callable[[Plan], Awaitable[str]]

MIN = 60_000
DAY_MS = 86_400_000


def plan(key: str = "it", daily: int = 0, cap: int | None = None, welcome: int = 0) -> Plan:
    return Plan(key=key, daily_bonus=daily, monthly_bonus_cap=cap, welcome_bonus=welcome,
                included=0, rollover_cap=0)


PLAIN = plan()


def call(account_id: str, request_id: str, estimated: int = 0) -> CallRecord:
    return CallRecord(request_id=request_id, account_id=account_id, operation="it.op",
                      model="m-1", upstream_status=200, duration_ms=1234, input_tokens=10,
                      output_tokens=20, estimated=estimated)


async def usage_row(ledger: Ledger, request_id: str) -> dict[str, Any]:
    row = await ledger.usage_row(request_id)
    assert row is not None, request_id
    return row


# ---- accounts and keys -----------------------------------------------------------------------


async def test_create_account_with_welcome_bonus(ledger: Ledger, new_account: NewAccount,
                                                 probe: Any) -> None:
    acct = await new_account(plan(key="free", welcome=30 * MIN))

    assert await ledger.account_exists(acct)
    snap = await ledger.balance(acct)
    assert snap.plan_key == "free"
    assert [(b.source, b.amount, b.remaining, b.expires_at_ms) for b in snap.buckets] == [
        ("welcome", 30 * MIN, 30 * MIN, None)]
    assert snap.available == 30 * MIN and snap.held == 0 and snap.debt == 0
    entries = await probe.entries(acct)
    assert [(e["event_type"], e["delta"], e["idempotency_key"]) for e in entries] == [
        ("welcome_bonus", 30 * MIN, "welcome_bonus")]

    no_bonus = await new_account(PLAIN)
    assert (await ledger.balance(no_bonus)).buckets == []
    assert await probe.entries(no_bonus) == []

    assert not await ledger.account_exists("acct_nope")
    with pytest.raises(UnknownAccount):
        await ledger.admit("acct_nope", 1, "it.op", 10, PLAIN)
    with pytest.raises(UnknownAccount):
        await ledger.balance("acct_nope")


async def test_api_key_create_resolve_revoke_stored_hashed(ledger: Ledger,
                                                           new_account: NewAccount) -> None:
    acct = await new_account(plan(key="pro"))
    key_id, key = await ledger.create_api_key(acct)
    other_id, other_key = await ledger.create_api_key(acct)
    assert key != other_key and key_id != other_id

    assert await ledger.resolve_key(key) == ResolvedKey(acct, "pro", key_id)
    assert await ledger.resolve_key(other_key) == ResolvedKey(acct, "pro", other_id)
    assert await ledger.resolve_key(key + "x") is None

    stored = await ledger.api_key_rows()
    assert len(stored) == 2
    for row in stored:
        for value in row.values():  # the plaintext appears in no column of any row
            assert key not in str(value) and other_key not in str(value)
    assert {r["key_hash"] for r in stored} == {
        hashlib.sha256(k.encode()).hexdigest() for k in (key, other_key)}

    assert await ledger.revoke_api_key(key_id) is True
    assert await ledger.resolve_key(key) is None
    assert await ledger.resolve_key(other_key) == ResolvedKey(acct, "pro", other_id)  # only it
    assert await ledger.revoke_api_key(key_id) is False  # already revoked
    assert await ledger.revoke_api_key("key_nope") is False

    with pytest.raises(UnknownAccount):
        await ledger.create_api_key("acct_nope")


# ---- grants ----------------------------------------------------------------------------------


async def test_grant_is_idempotent_by_key(ledger: Ledger, new_account: NewAccount,
                                          probe: Any) -> None:
    acct = await new_account(PLAIN)
    first = await ledger.grant(acct, Source.PACKAGE, 10 * MIN, "stripe:evt_1", None, "package")
    assert not first.replayed and first.bucket_id is not None and first.amount == 10 * MIN

    again = await ledger.grant(acct, Source.PACKAGE, 10 * MIN, "stripe:evt_1", None, "package")
    assert again.replayed
    assert (again.entry_id, again.bucket_id, again.amount) == (
        first.entry_id, first.bucket_id, first.amount)  # the original result
    # the key reused for another grant is refused and changes nothing (never "replayed")
    for amount, source, reason in ((99 * MIN, Source.PACKAGE, "package"),
                                   (10 * MIN, Source.GIFT, "package"),
                                   (10 * MIN, Source.PACKAGE, "another reason")):
        with pytest.raises(IdempotencyConflict):
            await ledger.grant(acct, source, amount, "stripe:evt_1", None, reason)

    snap = await ledger.balance(acct)
    assert [b.remaining for b in snap.buckets] == [10 * MIN]
    assert [(e["event_type"], e["delta"]) for e in await probe.entries(acct)] == [
        ("package_credit", 10 * MIN)]


async def test_an_adjustment_key_replays_its_own_request_and_refuses_any_other(
    ledger: Ledger, new_account: NewAccount, probe: Any
) -> None:
    acct = await new_account(PLAIN)
    up = await ledger.grant(acct, Source.GIFT, 5_000, "admin:adj-up", None, "goodwill", None,
                            EventType.ADJUSTMENT)
    down = await ledger.adjust_down(acct, 8_000, "admin:adj-down", "clawback")
    assert (down.amount, down.metadata, down.replayed) == (5_000, {"unrecovered": 3_000}, False)

    again = await ledger.adjust_down(acct, 8_000, "admin:adj-down", "clawback")
    assert (again.amount, again.metadata, again.replayed) == (5_000, {"unrecovered": 3_000}, True)
    again_up = await ledger.grant(acct, Source.GIFT, 5_000, "admin:adj-up", None, "goodwill",
                                  None, EventType.ADJUSTMENT)
    assert again_up.replayed and again_up.bucket_id == up.bucket_id

    await ledger.grant(acct, Source.GIFT, 9_000, "g-later", None, "gift")
    for call in (lambda: ledger.adjust_down(acct, 7_000, "admin:adj-down", "clawback"),
                 lambda: ledger.adjust_down(acct, 8_000, "admin:adj-down", "other reason"),
                 lambda: ledger.adjust_down(acct, 5_000, "admin:adj-up", "goodwill"),
                 lambda: ledger.grant(acct, Source.GIFT, 5_000, "admin:adj-up", None,
                                      "goodwill"),  # a gift credit, not an adjustment
                 lambda: ledger.grant(acct, Source.GIFT, 5_000, "admin:adj-down", None,
                                      "clawback", None, EventType.ADJUSTMENT)):
        with pytest.raises(IdempotencyConflict):
            await call()
    assert (await ledger.balance(acct)).spendable == 9_000  # nothing of those applied


async def test_a_take_back_that_found_nothing_still_spends_its_key(
    ledger: Ledger, new_account: NewAccount
) -> None:
    acct = await new_account(PLAIN)
    nothing = await ledger.adjust_down(acct, 4_000, "admin:empty", "clawback")
    assert (nothing.amount, nothing.metadata) == (0, {"unrecovered": 4_000})
    await ledger.grant(acct, Source.GIFT, 10_000, "g", None, "gift")
    retried = await ledger.adjust_down(acct, 4_000, "admin:empty", "clawback")
    assert retried.replayed and (retried.amount, retried.metadata) == (0, {"unrecovered": 4_000})
    assert (await ledger.balance(acct)).spendable == 10_000

    with pytest.raises(ValueError):
        await ledger.grant(acct, Source.GIFT, 0, "zero", None, "nothing")
    with pytest.raises(UnknownAccount):
        await ledger.grant("acct_nope", Source.GIFT, 1, "k", None, "x")


# ---- admission -------------------------------------------------------------------------------


async def test_admit_places_hold_and_reduces_available(ledger: Ledger,
                                                       new_account: NewAccount) -> None:
    acct = await new_account(PLAIN)
    await ledger.grant(acct, Source.GIFT, 10_000, "g1", None, "gift")

    first = await ledger.admit(acct, 4_000, "it.op", 60, PLAIN)
    assert isinstance(first, Admission)
    assert first.amount == 4_000 and first.available_after == 6_000
    second = await ledger.admit(acct, 6_000, "it.op", 60, PLAIN)
    assert isinstance(second, Admission) and second.available_after == 0
    assert first.hold_id != second.hold_id

    snap = await ledger.balance(acct)
    assert snap.held == 10_000 and snap.spendable == 10_000 and snap.available == 0
    assert (await ledger.totals(acct))["holds"] == 2

    await ledger.release(first.hold_id)
    snap = await ledger.balance(acct)
    assert snap.held == 6_000 and snap.available == 4_000


async def test_admit_beyond_available_reports_shortfall_split(ledger: Ledger,
                                                              new_account: NewAccount) -> None:
    daily = plan(daily=10_000, cap=None)
    acct = await new_account(daily)
    await ledger.grant(acct, Source.GIFT, 5_000, "g1", None, "gift")

    refused = await ledger.admit(acct, 20_000, "it.op", 60, daily)
    assert refused == Shortfall(required=20_000, available=15_000, daily=10_000, paid=5_000)
    assert (await ledger.balance(acct)).held == 0  # a refusal places no hold

    # debt is subtracted from what is available
    acct2 = await new_account(PLAIN)
    await ledger.grant(acct2, Source.GIFT, 1_000, "g1", None, "gift")
    await ledger.settle(None, call(acct2, "req_od"), 3_000, "overdraft")  # debt 2 000
    assert await ledger.admit(acct2, 1, "it.op", 60, PLAIN) == Shortfall(
        required=1, available=0, daily=0, paid=0)
    await ledger.grant(acct2, Source.GIFT, 5_000, "g2", None, "gift")  # nets the debt: 3 000
    assert await ledger.admit(acct2, 4_000, "it.op", 60, PLAIN) == Shortfall(
        required=4_000, available=3_000, daily=0, paid=3_000)


async def test_shortfall_split_attributes_holds_in_burn_order(ledger: Ledger,
                                                              new_account: NewAccount) -> None:
    daily = plan(daily=10_000, cap=None)
    acct = await new_account(daily)
    await ledger.grant(acct, Source.GIFT, 5_000, "g1", None, "gift")
    held = await ledger.admit(acct, 12_000, "it.op", 60, daily)
    assert isinstance(held, Admission) and held.available_after == 3_000
    # the 12 000 hold burns daily 10 000 then gift 2 000: what is left is 3 000 of paid (gift)
    assert await ledger.admit(acct, 4_000, "it.op", 60, daily) == Shortfall(
        required=4_000, available=3_000, daily=0, paid=3_000)


async def test_expired_holds_stop_counting(ledger: Ledger, new_account: NewAccount,
                                           clock: ManualClock) -> None:
    # A hold's row expires one lease after it was placed; nobody renewing it is what a crashed
    # gateway looks like. The test clock sits on that instant instead of sleeping past it.
    ledger.clock = clock
    lease_ms = int(ledger.lease_s * 1000)
    acct = await new_account(PLAIN)
    await ledger.grant(acct, Source.GIFT, 10_000, "g1", None, "gift")
    lapsing = await ledger.admit(acct, 10_000, "it.op", 60, PLAIN)
    assert isinstance(lapsing, Admission)
    clock.advance(lease_ms - 1)
    assert isinstance(await ledger.admit(acct, 1, "it.op", 60, PLAIN), Shortfall)

    clock.advance(1)  # the lease ends now: the hold no longer counts
    snap = await ledger.balance(acct)
    assert snap.held == 0 and snap.available == 10_000
    again = await ledger.admit(acct, 10_000, "it.op", 60, PLAIN)
    assert isinstance(again, Admission) and again.available_after == 0
    # an expired hold cannot be extended back to life
    assert await ledger.extend_hold(acct, lapsing.hold_id, 10_000, 60) is False
    # settling the lapsed hold still charges the call (at most what is left)
    done = await ledger.settle(lapsing.hold_id, call(acct, "req_late"), 4_000, "clamp")
    assert done.charged == 4_000 and (await ledger.balance(acct)).held == 10_000


# ---- settlement ------------------------------------------------------------------------------


async def test_settle_debits_in_burn_order(ledger: Ledger, new_account: NewAccount,
                                           probe: Any) -> None:
    daily = plan(daily=15 * MIN, cap=None)
    acct = await new_account(daily)
    now = now_ms()
    soon = now + 10 * DAY_MS
    gift = await ledger.grant(acct, Source.GIFT, 100_000, "gift", None, "gift")
    late = await ledger.grant(acct, Source.PACKAGE, 50_000, "pkg90", now + 90 * DAY_MS, "pkg")
    small = await ledger.grant(acct, Source.PACKAGE, 20_000, "pkg10", soon, "pkg")
    big = await ledger.grant(acct, Source.SUBSCRIPTION, 30_000, "sub10", soon, "sub")

    charge = 15 * MIN + 20_000 + 30_000 + 10_000
    adm = await ledger.admit(acct, charge, "it.op", 60, daily)  # lazily grants today's daily
    assert isinstance(adm, Admission)
    daily_id = next(b.id for b in (await ledger.balance(acct)).buckets if b.source == "daily")

    done = await ledger.settle(adm.hold_id, call(acct, "req_burn", charge), charge, "clamp")
    assert (done.charged, done.unbilled, done.replayed) == (charge, 0, False)

    allocs = await probe.allocations(acct, "call:req_burn")
    # daily first; then earliest expiry (tie → smallest remaining); never-expiring gift last
    assert allocs == [(daily_id, "daily", 15 * MIN), (small.bucket_id, "package", 20_000),
                      (big.bucket_id, "subscription", 30_000), (late.bucket_id, "package", 10_000)]
    assert sum(a for _, _, a in allocs) == charge

    snap = await ledger.balance(acct)
    assert [(b.id, b.remaining) for b in snap.buckets] == [
        (late.bucket_id, 40_000), (gift.bucket_id, 100_000)]
    assert snap.held == 0 and done.remaining == snap.available == 140_000
    row = await usage_row(ledger, "req_burn")
    assert (row["charged"], row["unbilled"], row["estimated"]) == (charge, 0, charge)


async def test_settle_is_idempotent_by_request_id(ledger: Ledger, new_account: NewAccount,
                                                  probe: Any) -> None:
    acct = await new_account(PLAIN)
    await ledger.grant(acct, Source.GIFT, 10_000, "g1", None, "gift")
    adm = await ledger.admit(acct, 5_000, "it.op", 60, PLAIN)
    assert isinstance(adm, Admission)

    first = await ledger.settle(adm.hold_id, call(acct, "req_once"), 4_000, "clamp")
    assert (first.charged, first.replayed, first.remaining) == (4_000, False, 6_000)
    before = await ledger.totals(acct)

    again = await ledger.settle(adm.hold_id, call(acct, "req_once"), 4_000, "clamp")
    assert again.replayed and again.charged == 0
    also = await ledger.settle(None, call(acct, "req_once"), 9_000, "overdraft")
    assert also.replayed

    assert await ledger.totals(acct) == before
    assert (await ledger.balance(acct)).available == 6_000
    assert await probe.usage_count("req_once") == 1
    assert [e["delta"] for e in await probe.entries(acct)] == [10_000, -4_000]


async def test_settle_with_nothing_debited_is_idempotent(ledger: Ledger,
                                                         new_account: NewAccount,
                                                         probe: Any) -> None:
    acct = await new_account(PLAIN)
    first = await ledger.settle(None, call(acct, "req_zero"), 0, "clamp")
    assert (first.charged, first.replayed) == (0, False)
    again = await ledger.settle(None, call(acct, "req_zero"), 0, "clamp")
    assert again.replayed
    assert await probe.usage_count("req_zero") == 1


async def test_clamp_shortfall_records_unbilled(ledger: Ledger, new_account: NewAccount,
                                                probe: Any) -> None:
    acct = await new_account(PLAIN)
    gift = await ledger.grant(acct, Source.GIFT, 1_000, "g1", None, "gift")
    adm = await ledger.admit(acct, 1_000, "it.op", 60, PLAIN)
    assert isinstance(adm, Admission)

    done = await ledger.settle(adm.hold_id, call(acct, "req_clamp", 1_000), 3_000, "clamp")
    assert (done.charged, done.unbilled, done.remaining) == (1_000, 2_000, 0)

    row = await usage_row(ledger, "req_clamp")
    assert (row["charged"], row["unbilled"]) == (1_000, 2_000)
    assert await probe.allocations(acct, "call:req_clamp") == [(gift.bucket_id, "gift", 1_000)]
    entry = (await probe.entries(acct))[-1]
    assert entry["delta"] == -1_000
    assert json.loads(entry["metadata_json"])["shortfall"] == 2_000
    assert [b["remaining"] for b in await probe.buckets(acct)] == [0]
    t = await ledger.totals(acct)
    assert t["debt"] == 0 and t["remaining"] == 0


async def test_overdraft_becomes_debt_netted_by_next_grant(ledger: Ledger,
                                                           new_account: NewAccount,
                                                           probe: Any) -> None:
    acct = await new_account(PLAIN)
    await ledger.grant(acct, Source.GIFT, 1_000, "g1", None, "gift")
    adm = await ledger.admit(acct, 1_000, "it.op", 60, PLAIN)
    assert isinstance(adm, Admission)

    done = await ledger.settle(adm.hold_id, call(acct, "req_od"), 3_000, "overdraft")
    assert (done.charged, done.unbilled, done.remaining) == (3_000, 0, -2_000)
    snap = await ledger.balance(acct)
    assert snap.debt == 2_000 and snap.available == -2_000
    assert (await probe.entries(acct))[-1]["delta"] == -3_000
    row = await usage_row(ledger, "req_od")
    assert (row["charged"], row["unbilled"]) == (3_000, 0)
    await probe.assert_invariant(acct)

    partial = await ledger.grant(acct, Source.GIFT, 500, "g2", None, "gift")  # less than the debt
    assert partial.metadata == {"debt_netted": 500}
    assert (await ledger.balance(acct)).debt == 1_500
    await probe.assert_invariant(acct)

    pkg = await ledger.grant(acct, Source.PACKAGE, 5_000, "g3", None, "package")
    assert pkg.metadata == {"debt_netted": 1_500}
    bucket = next(b for b in await probe.buckets(acct) if b["id"] == pkg.bucket_id)
    assert (bucket["amount"], bucket["remaining"]) == (5_000, 5_000 - 1_500)
    snap = await ledger.balance(acct)
    assert snap.debt == 0 and snap.available == 3_500


async def test_expired_bucket_is_never_debited(ledger: Ledger, new_account: NewAccount,
                                               probe: Any, clock: ManualClock) -> None:
    ledger.clock = clock
    acct = await new_account(PLAIN)
    gift = await ledger.grant(acct, Source.GIFT, 1_000, "g1", None, "gift")
    doomed = await ledger.grant(acct, Source.PACKAGE, 5_000, "p1", clock() + 60_000, "package")
    clock.advance(59_999)
    assert (await ledger.balance(acct)).spendable == 6_000

    clock.advance(1)  # no sweep runs: only the clock moved, onto the expiry instant
    snap = await ledger.balance(acct)
    assert [b.id for b in snap.buckets] == [gift.bucket_id] and snap.available == 1_000
    assert await ledger.admit(acct, 2_000, "it.op", 60, PLAIN) == Shortfall(
        required=2_000, available=1_000, daily=0, paid=1_000)

    done = await ledger.settle(None, call(acct, "req_exp"), 3_000, "clamp")
    assert (done.charged, done.unbilled) == (1_000, 2_000)
    assert await probe.allocations(acct, "call:req_exp") == [(gift.bucket_id, "gift", 1_000)]
    expired = next(b for b in await probe.buckets(acct) if b["id"] == doomed.bucket_id)
    assert expired["remaining"] == 5_000

    done = await ledger.settle(None, call(acct, "req_exp2"), 500, "overdraft")
    assert done.charged == 500 and (await ledger.balance(acct)).debt == 500
    expired = next(b for b in await probe.buckets(acct) if b["id"] == doomed.bucket_id)
    assert expired["remaining"] == 5_000


# ---- daily bonus -----------------------------------------------------------------------------


def _other_days_same_month(now: datetime, count: int) -> list[datetime]:
    """`count` other UTC days of `now`'s month, later ones preferred (at 12:00 UTC)."""
    noon = datetime(now.year, now.month, now.day, 12, tzinfo=UTC)
    candidates = [noon + timedelta(days=d) for d in (1, 2, 3, -1, -2, -3)]
    return [d for d in candidates if d.month == now.month][:count]


async def test_daily_bonus_lazy_once_per_day_and_monthly_cap(ledger: Ledger,
                                                             new_account: NewAccount,
                                                             probe: Any,
                                                             open_ledger: Any) -> None:
    capped = plan(daily=15 * MIN, cap=20 * MIN)
    acct = await new_account(capped)
    assert (await ledger.balance(acct)).buckets == []  # lazily: nothing before first use

    first = await ledger.admit(acct, 1_000, "it.op", 60, capped)
    assert isinstance(first, Admission) and first.available_after == 15 * MIN - 1_000
    snap = await ledger.balance(acct)
    assert [(b.source, b.amount) for b in snap.buckets] == [("daily", 15 * MIN)]
    tomorrow = datetime.fromtimestamp(snap.now_ms / 1000, UTC).date() + timedelta(days=1)
    expected_expiry = int(datetime(tomorrow.year, tomorrow.month, tomorrow.day,
                                   tzinfo=UTC).timestamp() * 1000)
    assert snap.buckets[0].expires_at_ms == expected_expiry  # end of the UTC day

    # once a day: more admits, and a fresh ledger object (no per-process cache), grant nothing
    assert isinstance(await ledger.admit(acct, 1_000, "it.op", 60, capped), Admission)
    fresh = open_ledger()
    assert isinstance(await fresh.admit(acct, 1_000, "it.op", 60, capped), Admission)
    daily_entries = [e for e in await probe.entries(acct) if e["event_type"] == "daily_bonus"]
    assert [e["delta"] for e in daily_entries] == [15 * MIN]

    # another day of the same month: the cap (20 min) leaves only 5 min
    day2, day3 = _other_days_same_month(datetime.now(UTC), 2)
    day2_ms = int(day2.timestamp() * 1000)
    assert await ledger.ensure_daily_bonus(acct, capped, day2_ms) is True
    assert await ledger.ensure_daily_bonus(acct, capped, day2_ms + 1_000) is True
    day3_ms = int(day3.timestamp() * 1000)
    assert await ledger.ensure_daily_bonus(acct, capped, day3_ms) is True

    daily_entries = [e for e in await probe.entries(acct) if e["event_type"] == "daily_bonus"]
    assert [e["delta"] for e in daily_entries] == [15 * MIN, 5 * MIN]
    assert daily_entries[1]["created_at_ms"] == day2_ms
    assert (await ledger.balance(acct)).daily_granted_this_month == 20 * MIN


# ---- holds -----------------------------------------------------------------------------------


async def test_extend_hold_within_balance_only(ledger: Ledger,
                                               new_account: NewAccount) -> None:
    acct = await new_account(PLAIN)
    await ledger.grant(acct, Source.GIFT, 10_000, "g1", None, "gift")
    adm = await ledger.admit(acct, 4_000, "it.op", 60, PLAIN)
    assert isinstance(adm, Admission)

    assert await ledger.extend_hold(acct, adm.hold_id, 8_000, 60) is True
    snap = await ledger.balance(acct)
    assert snap.held == 8_000 and snap.available == 2_000

    assert await ledger.extend_hold(acct, adm.hold_id, 10_001, 60) is False
    assert (await ledger.balance(acct)).held == 8_000  # unchanged on refusal
    assert await ledger.extend_hold(acct, adm.hold_id, 10_000, 60) is True  # exactly all of it
    assert (await ledger.balance(acct)).available == 0
    assert await ledger.extend_hold(acct, adm.hold_id, 5_000, 60) is True  # never shrinks
    assert (await ledger.balance(acct)).held == 10_000
    assert await ledger.extend_hold(acct, "hold_nope", 1, 60) is False

    done = await ledger.settle(adm.hold_id, call(acct, "req_ext"), 9_000, "clamp")
    assert done.charged == 9_000 and done.remaining == 1_000
    assert (await ledger.totals(acct))["holds"] == 0
