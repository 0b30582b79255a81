"""Group commit of a hot account's settlements on PostgreSQL (storage/sql/account_batches.py):
the settlements arriving while one is in flight go in one statement, and each call's outcome
(Settlement, event seq, balance.updated data) is the one it would have had alone, in arrival
order — fresh, replayed, short under clamp and under overdraft mixed, no money created or lost;
a batch that fails because of one call is retried one by one, so only that call fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from policies.compiled import Plan
from storage.engine.buckets import Source
from storage.engine.burn_down import ShortfallRule
from storage.ports import AccountEvent, Admission, CallRecord, Settlement
from storage.sql.ledger import SqlLedger

PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)
GRANTED = 10_000


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
def ledger_kind(request: pytest.FixtureRequest) -> str:
    """PostgreSQL only: SQLite has its own group commit (storage/sql/sqlite_writer.py)."""
    return str(request.param)


NewAccount = Callable[[Plan], Awaitable[str]]

# (request id suffix, charge, shortfall rule, settles a hold placed before): in this order the
# balance runs out, so the last calls are short under clamp (unbilled) and overdraft (debt).
CALLS: list[tuple[str, int, ShortfallRule, bool]] = [
    ("a", 700, "clamp", True), ("b", 1_500, "clamp", False), ("a", 700, "clamp", True),
    ("c", 300, "overdraft", False), ("d", 2_000, "clamp", True), ("pre", 900, "clamp", False),
    ("e", 1_200, "overdraft", False), ("b", 1_500, "clamp", False), ("f", 2_500, "clamp", False),
    ("g", 3_000, "clamp", False), ("h", 800, "overdraft", True), ("i", 1_000, "overdraft", False),
    ("j", 0, "clamp", False), ("k", 400, "clamp", False),
]


def _record(account_id: str, request_id: str) -> CallRecord:
    return CallRecord(request_id=request_id, account_id=account_id, operation="it.batch",
                      model="m1", upstream_status=200, duration_ms=120, input_tokens=10,
                      output_tokens=20, estimated=500)


async def _prepare(ledger: SqlLedger, new_account: NewAccount) -> tuple[str, dict[str, str]]:
    """A funded account with a hold for each hold-settling call and one call ('pre') already
    settled; returns the account and the hold id of each request id suffix."""
    acct = await new_account(PLAN)
    await ledger.grant(acct, Source.GIFT, GRANTED, "fund", None, "batch funds")
    holds: dict[str, str] = {}
    for suffix, charge, _, with_hold in CALLS:
        if with_hold and suffix not in holds:
            admitted = await ledger.admit(acct, charge, "it.batch", 120, PLAN,
                                          request_id=f"{acct[-12:]}_{suffix}")
            assert isinstance(admitted, Admission)
            holds[suffix] = admitted.hold_id
    await ledger.settle(None, _record(acct, f"{acct[-12:]}_pre"), 900, "clamp")
    return acct, holds


def _settle(ledger: SqlLedger, acct: str, holds: dict[str, str],
            call: tuple[str, int, ShortfallRule, bool]) -> Awaitable[Settlement]:
    suffix, charge, rule, with_hold = call
    return ledger.settle(holds[suffix] if with_hold else None,
                         _record(acct, f"{acct[-12:]}_{suffix}"), charge, rule)


def _events(events: list[AccountEvent], acct: str) -> list[tuple[str, Any]]:
    """The account's balance.updated data in order, then its alerts (type, data) in order.
    (An alert fires after its settlement commits, so after a whole batch: its seq differs.)"""
    mine = [e for e in events if e.account_id == acct]
    return ([("balance.updated", e.data) for e in mine if e.type == "balance.updated"]
            + [(e.type, e.data) for e in mine if e.type != "balance.updated"])


async def test_a_batch_of_settlements_ends_as_the_same_calls_one_by_one(
    ledger: SqlLedger, new_account: NewAccount,
) -> None:
    assert ledger.settle_batches is not None
    events: list[AccountEvent] = []
    ledger.on_commit = events.extend
    alone, alone_holds = await _prepare(ledger, new_account)
    batched, batched_holds = await _prepare(ledger, new_account)
    events.clear()  # from here on: the settlements' events only
    expected = [await _settle(ledger, alone, alone_holds, call) for call in CALLS]
    assert ledger.settle_batches.batches == 0
    got = await asyncio.gather(*(_settle(ledger, batched, batched_holds, call)
                                 for call in CALLS))
    assert ledger.settle_batches.batches == 1  # the first alone, all the others in one batch
    assert ledger.settle_batches.batched == len(CALLS) - 1
    assert list(got) == expected
    assert _events(events, batched) == _events(events, alone)
    updates = [e for e in events if e.account_id == batched and e.type == "balance.updated"]
    assert len(updates) == len(CALLS) - 3  # one per settlement not replayed
    seqs = [e.seq for e in updates]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # committed in arrival order
    assert any(e.type == "balance.depleted" for e in events if e.account_id == batched)
    # the mix really was mixed: replays, a clamp shortfall and an overdraft one
    assert sum(s.replayed for s in got) == 3
    assert any(s.unbilled > 0 for s in got)
    charged = sum(s.charged for s in got) + 900
    left = [[b["remaining"] for b in await ledger.bucket_rows(a)] for a in (alone, batched)]
    assert left[0] == left[1]
    for acct in (alone, batched):
        remaining = sum(int(b["remaining"]) for b in await ledger.bucket_rows(acct))
        debt = int((await ledger.account_row(acct))["debt"])
        assert debt > 0  # the overdraft calls went past the balance
        assert remaining - debt + charged == GRANTED  # no money created or lost
        totals = await ledger.totals(acct)
        assert totals["holds"] == 0


async def test_a_batch_failed_by_one_call_is_retried_one_by_one(
    ledger: SqlLedger, new_account: NewAccount,
) -> None:
    assert ledger.settle_batches is not None
    acct = await new_account(PLAN)
    await ledger.grant(acct, Source.GIFT, GRANTED, "fund", None, "batch funds")
    rid = acct[-8:]
    # The first runs alone; the next three wait for it and form a batch, which the last one's
    # request id (too long for a usage record id) fails: retried one by one.
    ids = (rid + "_a", rid + "_b", rid + "_c", rid + "_" + "x" * 60)
    results = await asyncio.gather(*(
        ledger.settle(None, _record(acct, request_id), 1_000, "clamp") for request_id in ids),
        return_exceptions=True)
    assert list(results[:3]) == [
        Settlement(charged=1_000, unbilled=0, remaining=GRANTED - 1_000 * n, replayed=False)
        for n in (1, 2, 3)]
    assert isinstance(results[3], asyncpg.PostgresError)
    assert ledger.settle_batches.batches == 0
    remaining = sum(int(b["remaining"]) for b in await ledger.bucket_rows(acct))
    assert remaining == GRANTED - 3_000  # the failed batch wrote nothing; each retry once
