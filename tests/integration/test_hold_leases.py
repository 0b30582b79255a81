"""Hold leases (the ledgers as shipped), on every store: a hold expires one lease
after it was last renewed, the owning process renews its in-flight holds until the route's ttl,
and a process that stops renewing (crashed) strands nothing (SPEC §3)."""

from __future__ import annotations

from typing import Any

import pytest

from policies.compiled import Plan
from storage.engine.buckets import Source
from storage.ports import Admission, CallRecord
from tests.integration.stores import Ledger
from tests.support import ManualClock

PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)
LEASE_S = 1.0  # the ledger runs on the test's clock: the instants below are exact, not raced


@pytest.fixture
def leased(open_ledger: Any, clock: ManualClock) -> Ledger:
    """A ledger on the store under test, with a 1 s lease on the test's clock."""
    ledger: Ledger = open_ledger(lease_s=LEASE_S, clock=clock)
    return ledger


async def _audit(lg: Ledger, acct: str) -> None:
    t = await lg.totals(acct)
    assert t["remaining"] - t["debt"] == t["deltas"], t


async def test_renewed_until_ttl_then_lapses(leased: Ledger, clock: ManualClock) -> None:
    acct = await leased.create_account(PLAN)
    await leased.grant(acct, Source.GIFT, 10_000, "g1", None, "gift")
    long_call = await leased.admit(acct, 3_000, "it.op", 5.0, PLAN)
    short_call = await leased.admit(acct, 2_000, "it.op", 0.3, PLAN)
    assert isinstance(long_call, Admission) and isinstance(short_call, Admission)

    clock.advance(500)  # past the short call's ttl, within the first lease
    assert await leased.renew_leases() == 1  # only the long call is still renewed
    clock.advance(500)  # the first lease ends: the unrenewed hold lapsed
    snap = await leased.balance(acct)
    assert snap.held == 3_000 and snap.available == 7_000

    done = await leased.settle(long_call.hold_id,
                               CallRecord(request_id="req_long", account_id=acct,
                                          operation="it.op", model=None, upstream_status=200,
                                          duration_ms=800), 2_500, "clamp")
    assert done.charged == 2_500 and done.remaining == 7_500
    assert await leased.renew_leases() == 0
    await _audit(leased, acct)


async def test_lapsed_hold_is_not_resurrected_by_renewal(open_ledger: Any,
                                                         clock: ManualClock) -> None:
    leased = open_ledger(lease_s=0.3, clock=clock)
    acct = await leased.create_account(PLAN)
    await leased.grant(acct, Source.GIFT, 10_000, "g1", None, "gift")
    first = await leased.admit(acct, 10_000, "it.op", 60, PLAN)
    assert isinstance(first, Admission)

    # no renewal for longer than a lease (store blip, blocked event loop): the hold lapsed
    clock.advance(300)
    second = await leased.admit(acct, 10_000, "it.op", 60, PLAN)
    assert isinstance(second, Admission)  # the lapsed hold's balance went to another call

    await leased.renew_leases()
    snap = await leased.balance(acct)
    assert snap.held == 10_000 and snap.available == 0, snap
