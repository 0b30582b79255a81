"""Migration 0016_one_rollup on SQLite and PostgreSQL: downgraded, the old rollups (usage_daily
per operation, cost_daily, the keys' spend_daily rows) hold what the pre-0016 settlement wrote
for the same calls; upgraded again, the one rollup rebuilt from them and the usage records
answers every read as before — usage and cost summaries, costs per day, a key's spend — and
gw_settle (PostgreSQL) writes the new rollup again."""

from __future__ import annotations

from typing import Any

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.engine import Connection

from policies.compiled import Plan
from storage import migrate
from storage.engine.buckets import Source
from storage.engine.budgets import Limits
from storage.ports import Admission, CallBudget, CallRecord, CostQuery, Shortfall
from storage.sql.ledger import SqlLedger
from tests.integration.conftest import run_in_thread
from tests.support import ManualClock

pytestmark = pytest.mark.parametrize(
    "ledger_url", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
    indirect=True)

PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)
DAY_MS = 86_400_000
START = 1_749_988_800_000  # 2025-06-15 12:00 UTC
DAY1 = START // DAY_MS * DAY_MS
DAY2 = DAY1 + DAY_MS


def _record(acct: str, rid: str, *, provider: str | None = "openai", key_id: str | None = None,
            end_user: str | None = None, cost: int | None = 90) -> CallRecord:
    return CallRecord(
        request_id=rid, account_id=acct, operation="chat", model="gpt-4o-mini",
        upstream_status=200, duration_ms=10, input_tokens=1000, output_tokens=500,
        provider=provider, key_id=key_id, end_user=end_user, total_cost=cost,
        prompt_cost=None if cost is None else cost // 3,
        completion_cost=None if cost is None else cost - cost // 3)


async def _history(ledger: SqlLedger, clock: ManualClock) -> tuple[str, str]:
    """Calls on two UTC days: priced and unpriced with a key, one for an end user, one without
    provider, one interrupted by the lease sweep on day 1 and settled on day 2."""
    acct = await ledger.create_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 1_000_000, "fund", None, "test funds")
    key_id, _ = await ledger.create_api_key(acct)
    budget = CallBudget(key_id=key_id)
    calls: list[tuple[str, CallRecord, int]] = [
        ("a1", _record(acct, "a1", key_id=key_id), 70),
        ("a2", _record(acct, "a2", key_id=key_id, cost=None), 30),
        ("a3", _record(acct, "a3", end_user="u1"), 20),
        ("a4", _record(acct, "a4", provider=None), 10),
    ]
    for rid, rec, charge in calls:
        got = await ledger.admit(acct, 100, "chat", 60, PLAN, request_id=rid, budget=budget)
        assert isinstance(got, Admission)
        await ledger.settle(got.hold_id, rec, charge, "clamp", budget)
    late = await ledger.admit(acct, 100, "chat", 60, PLAN, request_id="late",
                              model="gpt-4o-mini", budget=budget)
    assert isinstance(late, Admission)
    survivor = SqlLedger(ledger.runner.url)
    try:
        await survivor.renew_leases(at_ms=clock() + 61_000)  # day 1: interrupted, counted
    finally:
        await survivor.close()
    clock.advance(DAY_MS)
    await ledger.settle(late.hold_id, _record(acct, "late", key_id=key_id), 40, "clamp", budget)
    got = await ledger.admit(acct, 100, "chat", 60, PLAN, request_id="b1", budget=budget)
    assert isinstance(got, Admission)
    await ledger.settle(got.hold_id, _record(acct, "b1", key_id=key_id), 5, "clamp", budget)
    return acct, key_id


async def _reads(ledger: SqlLedger, acct: str, key_id: str) -> dict[str, Any]:
    window = CostQuery(acct, DAY1, DAY2 + DAY_MS)
    limited = CallBudget(key_id=key_id, key_limits=Limits(day=1_000, month=10_000))
    refused = await ledger.admit(acct, 10_000, "chat", 60, PLAN, request_id="probe",
                                 budget=limited)
    assert isinstance(refused, Shortfall) and refused.limit_source == "key"
    return {
        "usage": sorted(await ledger.usage_summary(acct, DAY1, DAY2 + DAY_MS)),
        "costs": await ledger.cost_summary(window),
        "everyone": await ledger.cost_summary(CostQuery(None, DAY1, DAY2 + DAY_MS)),
        "by_day": await ledger.cost_by_day(acct, DAY1, DAY2 + DAY_MS),
        "key_headroom": refused.available,
        "console": await ledger.runner.run(
            lambda c: c.execute(text(
                "SELECT day_ms, operation, SUM(calls), SUM(charged) FROM usage_daily"
                " GROUP BY day_ms, operation ORDER BY day_ms, operation")).all()),
    }


def _migrate(url: str, action: str, revision: str) -> None:
    def run() -> None:
        with migrate._ALEMBIC:
            getattr(command, action)(migrate.alembic_config(url), revision)

    run_in_thread(run)


def _old_rollups(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    def rows(sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in conn.execute(text(sql)).all()]

    return {
        "usage": rows("SELECT day_ms, operation, calls, charged FROM usage_daily"
                      " ORDER BY day_ms, operation"),
        "cost": rows("SELECT day_ms, provider, model, calls, unpriced, prompt_tokens,"
                     " completion_tokens, cost, charged FROM cost_daily ORDER BY day_ms"),
        "spend": rows("SELECT scope, day_ms, charged FROM spend_daily ORDER BY scope, day_ms"),
    }


async def test_history_survives_0016_down_and_up(ledger_url: str) -> None:
    clock = ManualClock(START)
    ledger = SqlLedger(ledger_url, clock=clock)
    try:
        acct, key_id = await _history(ledger, clock)
        before = await _reads(ledger, acct, key_id)
    finally:
        await ledger.close()
    assert before["key_headroom"] == 1_000 - 45  # day 2 of the key: late 40 + b1 5

    _migrate(ledger_url, "downgrade", "0015_pg_functions")
    ledger = SqlLedger(ledger_url, clock=clock)
    try:
        old = await ledger.runner.run(_old_rollups)
    finally:
        await ledger.close()
    # what pre-0016 settlement wrote: the sweep's count on day 1, the late charge on day 2;
    # every priced settlement once in cost_daily; key and end-user charges in spend_daily
    assert old == {
        "usage": [(DAY1, "chat", 5, 130), (DAY2, "chat", 1, 45)],
        "cost": [(DAY1, "openai", "gpt-4o-mini", 3, 1, 3000, 1500, 180, 120),
                 (DAY2, "openai", "gpt-4o-mini", 2, 0, 2000, 1000, 180, 45)],
        "spend": [("key", DAY1, 100), ("key", DAY2, 45), ("user", DAY1, 20)],
    }

    _migrate(ledger_url, "upgrade", "head")
    ledger = SqlLedger(ledger_url, clock=clock)
    try:
        assert await _reads(ledger, acct, key_id) == before
        got = await ledger.admit(acct, 100, "chat", 60, PLAN, request_id="c1",
                                 budget=CallBudget(key_id=key_id))
        assert isinstance(got, Admission)
        await ledger.settle(got.hold_id, _record(acct, "c1", key_id=key_id), 6, "clamp",
                            CallBudget(key_id=key_id))
        after = await _reads(ledger, acct, key_id)
    finally:
        await ledger.close()
    assert after["key_headroom"] == before["key_headroom"] - 6
    assert [g.calls for g in after["costs"]] == [g.calls + 1 for g in before["costs"]]
