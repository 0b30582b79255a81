"""Usage records opened at admission (the ledger contract, on every store): a call has
its record from the moment its hold is placed (`in_flight`), settlement completes that same
record, and a call whose hold lapsed with its process is closed `interrupted` — charged nothing,
its estimate recorded as unbilled. The daily rollup counts every call exactly once.

The crashed process is a ledger that never renews nor settles; another ledger on the same
store (`open_ledger`) runs the lease sweep with an injected clock (`renew_leases(at_ms=…)`),
so nothing here waits for a lease to run out.
"""

from __future__ import annotations

from typing import Any

from policies.compiled import Plan
from storage.clock import now_ms
from storage.engine.buckets import Source
from storage.ports import Admission, CallRecord, Shortfall
from tests.integration.stores import Ledger

PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)
LEASE_MS = 30_000  # the ledgers' default lease
LAPSED = 2 * LEASE_MS + 1_000  # a sweep this long after admission finds the hold lapsed


def _record(account: str, request_id: str, estimated: int, outcome: str = "ok") -> CallRecord:
    return CallRecord(request_id=request_id, account_id=account, operation="it.op",
                      model="m-1", upstream_status=200, duration_ms=900, input_tokens=10,
                      output_tokens=20, estimated=estimated, streamed=True, outcome=outcome)


async def _rollup(ledger: Ledger, account: str) -> list[tuple[str, int, int]]:
    """(operation, calls, charged) of the account's daily rollup rows."""
    return await ledger.rollup_rows(account)


async def _funded(ledger: Ledger, units: int) -> str:
    account = await ledger.create_account(PLAN)
    await ledger.grant(account, Source.GIFT, units, "g1", None, "gift")
    return account


async def _records(ledger: Ledger, account: str) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in await ledger.usage(account, 100)}


async def _audit(ledger: Ledger, account: str) -> None:
    t = await ledger.totals(account)
    assert t["remaining"] - t["debt"] == t["deltas"], t


async def test_an_admitted_call_has_an_in_flight_record_at_once(ledger: Ledger) -> None:
    account = await _funded(ledger, 10_000)
    adm = await ledger.admit(account, 4_000, "it.op", 60, PLAN, request_id="req_a1",
                             model="m-1", streamed=True)
    assert isinstance(adm, Admission)
    (record,) = (await _records(ledger, account)).values()
    assert record["id"] == "req_a1" and record["outcome"] == "in_flight"
    assert (record["operation"], record["model"], record["streamed"]) == ("it.op", "m-1", True)
    assert (record["estimated"], record["charged"], record["unbilled"]) == (4_000, 0, 0)
    assert await _rollup(ledger, account) == []  # counted once it settles or is interrupted


async def test_a_refused_call_writes_no_record(ledger: Ledger) -> None:
    account = await _funded(ledger, 1_000)
    refused = await ledger.admit(account, 4_000, "it.op", 60, PLAN, request_id="req_402")
    assert isinstance(refused, Shortfall)
    assert await ledger.usage(account) == []


async def test_a_settled_call_has_exactly_one_record_counted_once(ledger: Ledger) -> None:
    account = await _funded(ledger, 10_000)
    adm = await ledger.admit(account, 4_000, "it.op", 60, PLAN, request_id="req_s1", model="m-1")
    assert isinstance(adm, Admission)
    done = await ledger.settle(adm.hold_id, _record(account, "req_s1", 4_000), 2_500, "clamp")
    assert done.charged == 2_500 and not done.replayed
    records = await _records(ledger, account)
    assert list(records) == ["req_s1"]
    r = records["req_s1"]
    assert (r["outcome"], r["charged"], r["unbilled"], r["estimated"]) == ("ok", 2_500, 0, 4_000)
    assert (r["input_tokens"], r["output_tokens"], r["upstream_status"]) == (10, 20, 200)
    assert await _rollup(ledger, account) == [("it.op", 1, 2_500)]
    again = await ledger.settle(adm.hold_id, _record(account, "req_s1", 4_000), 2_500, "clamp")
    assert again.replayed
    assert len(await ledger.usage(account)) == 1
    assert await _rollup(ledger, account) == [("it.op", 1, 2_500)]
    await _audit(ledger, account)


async def test_a_call_whose_hold_lapsed_is_closed_interrupted_with_its_estimate_unbilled(
    ledger: Ledger, open_ledger: Any,
) -> None:
    crashed, survivor = ledger, open_ledger()
    account = await _funded(survivor, 10_000)
    for request_id, amount, operation in (("req_i1", 4_000, "it.op"),
                                          ("req_i2", 1_000, "it.op"),
                                          ("req_i3", 2_000, "it.other")):
        adm = await crashed.admit(account, amount, operation, 60, PLAN,
                                  request_id=request_id, model="m-1")
        assert isinstance(adm, Admission)
    admitted_at = now_ms()
    await survivor.renew_leases(at_ms=admitted_at + LEASE_MS // 2)  # not lapsed yet
    assert {r["outcome"] for r in (await _records(survivor, account)).values()} == {
        "in_flight"}
    assert await survivor.usage_stats(0, admitted_at + LAPSED, "operation") == []

    await survivor.renew_leases(at_ms=admitted_at + LAPSED)
    records = await _records(survivor, account)
    r = records["req_i1"]
    assert (r["outcome"], r["charged"], r["unbilled"], r["estimated"]) == (
        "interrupted", 0, 4_000, 4_000)
    assert r["model"] == "m-1" and r["operation"] == "it.op"
    assert [(records[i]["outcome"], records[i]["unbilled"]) for i in ("req_i2", "req_i3")] \
        == [("interrupted", 1_000), ("interrupted", 2_000)]
    assert sorted(await _rollup(survivor, account)) == [("it.op", 2, 0), ("it.other", 1, 0)]
    stats = await survivor.usage_stats(0, admitted_at + 2 * LAPSED, "operation")
    assert [(s["key"], s["calls"], s["charged_ms"], s["unbilled_ms"]) for s in stats] == [
        ("it.op", 2, 0, 5_000), ("it.other", 1, 0, 2_000)]
    assert (await survivor.totals(account))["deltas"] == 10_000  # nothing was charged
    snap = await survivor.balance(account)
    assert snap.held == 0 and snap.available == 10_000

    # a second sweep (another process) closes nothing twice
    await survivor.renew_leases(at_ms=admitted_at + LAPSED + 1_000)
    assert sorted(await _rollup(survivor, account)) == [("it.op", 2, 0), ("it.other", 1, 0)]
    await _audit(survivor, account)


async def test_a_late_settlement_completes_an_interrupted_record_and_counts_it_once(
    ledger: Ledger, open_ledger: Any,
) -> None:
    """The owner was alive after all (a stalled loop, a store outage at settlement): its
    settlement charges the call and completes the record; the rollup still counts one call."""
    slow, survivor = ledger, open_ledger()
    account = await _funded(survivor, 10_000)
    adm = await slow.admit(account, 4_000, "it.op", 60, PLAN, request_id="req_l1")
    assert isinstance(adm, Admission)
    await survivor.renew_leases(at_ms=now_ms() + LAPSED)
    assert (await _records(survivor, account))["req_l1"]["outcome"] == "interrupted"

    done = await slow.settle(adm.hold_id, _record(account, "req_l1", 4_000), 3_000, "clamp")
    assert done.charged == 3_000 and not done.replayed
    records = await _records(survivor, account)
    assert list(records) == ["req_l1"]
    r = records["req_l1"]
    assert (r["outcome"], r["charged"], r["unbilled"]) == ("ok", 3_000, 0)
    assert await _rollup(survivor, account) == [("it.op", 1, 3_000)]
    assert (await slow.settle(adm.hold_id, _record(account, "req_l1", 4_000), 3_000,
                              "clamp")).replayed
    assert await _rollup(survivor, account) == [("it.op", 1, 3_000)]
    await _audit(survivor, account)


async def test_a_call_settled_without_admission_still_gets_one_record(ledger: Ledger) -> None:
    """Fail mode `allow` admits without the store; `gateway reconcile` settles the spooled call
    later, with no hold and no admission record."""
    account = await _funded(ledger, 10_000)
    done = await ledger.settle(None, _record(account, "req_u1", 1_000), 1_000, "clamp")
    assert done.charged == 1_000
    r = (await _records(ledger, account))["req_u1"]
    assert (r["outcome"], r["charged"]) == ("ok", 1_000)
    assert await _rollup(ledger, account) == [("it.op", 1, 1_000)]
    assert (await ledger.settle(None, _record(account, "req_u1", 1_000), 1_000,
                                "clamp")).replayed
    assert await _rollup(ledger, account) == [("it.op", 1, 1_000)]


async def test_a_released_hold_leaves_no_record(ledger: Ledger) -> None:
    """A hold dropped without a call (it never reached the upstream) leaves nothing behind."""
    account = await _funded(ledger, 10_000)
    adm = await ledger.admit(account, 4_000, "it.op", 60, PLAN, request_id="req_r1")
    assert isinstance(adm, Admission)
    await ledger.release(adm.hold_id)
    assert await ledger.usage(account) == []
    assert (await ledger.balance(account)).held == 0
