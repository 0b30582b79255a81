"""The one sanctioned copy of money rules outside storage/engine/: PostgreSQL's `gw_admit` and
`gw_settle` (migration 0015, storage/sql/hot_path_pg.py) decide admission and burn down buckets
in PL/pgSQL, so a call costs one round trip. Held here to the engine on generated cases:
- admission: the decision and the sums behind a refusal's split (storage.engine.availability);
- settlement: allocations in burn order (storage.engine.burn_down.priority_key, with ties of
  expiry, remaining and creation time, and ids that sort differently by locale than by code
  point), charged, unbilled, debt, both shortfall rules (settle_debit);
- and against the multi-statement path it replaces (storage.sql.budgets.settle): every row a
  settlement writes — usage record, ledger entry and allocations, buckets, debt, the usage,
  cost and spend rollups — and the balance.updated event, for fresh, opened and interrupted
  records and replays.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from dataclasses import dataclass, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from policies.compiled import Plan
from storage.clock import to_datetime
from storage.engine.availability import Hold, funds
from storage.engine.buckets import Bucket, Source
from storage.engine.burn_down import settle_debit
from storage.ports import INTERRUPTED, Admission, CallRecord, Shortfall
from storage.sql import budgets, hot_path_pg
from storage.sql.ledger import SqlLedger
from storage.sql.tables import (
    accounts,
    allocations,
    buckets,
    holds,
    ledger_entries,
    spend_daily,
    usage_daily,
    usage_records,
)

pytestmark = pytest.mark.parametrize(
    "ledger_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)

PLAN = Plan(key="t", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)
AT = 1_750_000_000_000  # the instant of the call (epoch ms)
NEAR = st.integers(-2, 3).map(lambda k: AT + k * 1_000)  # expiries around AT, AT itself too
_serial = itertools.count()


@dataclass(frozen=True)
class Case:
    """Buckets (id suffix, source, remaining, expires_at_ms, created_at_ms), holds (amount,
    expires_at_ms), debt, the amount asked for or charged, and the shortfall rule."""

    buckets: list[tuple[str, Source, int, int | None, int]]
    holds: list[tuple[int, int]]
    debt: int
    amount: int
    rule: str


def _bucket(suffix: str) -> st.SearchStrategy[tuple[str, Source, int, int | None, int]]:
    remaining = st.integers(0, 5) | st.integers(0, 50_000)  # small values: ties
    created = st.integers(0, 2).map(lambda k: AT - 10_000 + k)
    daily = st.tuples(st.just(suffix), st.just(Source.DAILY), remaining, NEAR, created)
    paid = st.tuples(st.just(suffix), st.sampled_from([s for s in Source if s is not Source.DAILY]),
                     remaining, st.none() | NEAR, created)
    return daily | paid


# Suffixes whose code-point order differs from a locale's ("_" and case): the id tie-break.
SUFFIXES = st.lists(st.text("aAbB_-0", min_size=1, max_size=3), unique=True, max_size=7)
CASES = SUFFIXES.flatmap(lambda names: st.builds(
    Case, buckets=st.tuples(*[_bucket(n) for n in names]).map(list),
    holds=st.lists(st.tuples(st.integers(0, 40_000), NEAR), max_size=3),
    debt=st.integers(0, 30_000), amount=st.integers(0, 150_000),
    rule=st.sampled_from(["clamp", "overdraft"])))


def _arrange(conn: Connection, account_id: str, prefix: str, case: Case) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(debt=case.debt))
    for suffix, source, remaining, expires, created in case.buckets:
        conn.execute(insert(buckets).values(
            id=prefix + suffix, account_id=account_id, source=source.value,
            amount=max(1, remaining), remaining=remaining, expires_at_ms=expires,
            created_at_ms=created))
    for i, (amount, expires) in enumerate(case.holds):
        conn.execute(insert(holds).values(
            id=f"{prefix}h{i}", account_id=account_id, amount=amount, operation="t.op",
            created_at_ms=AT - 10_000, expires_at_ms=expires))


def _engine_buckets(case: Case) -> list[Bucket]:
    return [Bucket(suffix, source, remaining, None if expires is None else to_datetime(expires),
                   to_datetime(created))
            for suffix, source, remaining, expires, created in case.buckets]


async def _account(ledger: SqlLedger, case: Case) -> tuple[str, str]:
    account_id = await ledger.create_account(PLAN)
    prefix = f"p{next(_serial):06d}"
    await ledger.runner.run(_arrange, account_id, prefix, case)
    return account_id, prefix


def _run(ledger_url: str, check: Any, max_examples: int) -> None:
    with asyncio.Runner() as loop:
        ledger = SqlLedger(ledger_url)
        try:
            @settings(max_examples=max_examples, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])
            @given(case=CASES)
            def agree(case: Case) -> None:
                loop.run(check(ledger, case))

            agree()
        finally:
            loop.run(ledger.close())


async def _admission_agrees(ledger: SqlLedger, case: Case) -> None:
    account_id, _ = await _account(ledger, case)
    f = funds(_engine_buckets(case),
              [Hold(f"h{i}", amount, expires) for i, (amount, expires) in enumerate(case.holds)],
              case.debt, AT)
    got = await ledger.runner.run_single(hot_path_pg.admit, account_id, case.amount, "t.op",
                                         60_000, AT, "req" + account_id)
    if f.covers(case.amount):
        assert isinstance(got, Admission), case
        assert got.available_after == f.available - case.amount, case
        held = await ledger.runner.run(lambda c: c.execute(
            select(holds.c.amount).where(holds.c.id == got.hold_id)).scalar_one())
        assert held == case.amount
    else:
        shown, daily, paid = f.shortfall()
        assert got == Shortfall(required=case.amount, available=shown, daily=daily, paid=paid)


def test_gw_admit_agrees_with_the_engine(ledger_url: str) -> None:
    _run(ledger_url, _admission_agrees, 150)


def _record(account_id: str, request_id: str, **kw: Any) -> CallRecord:
    return CallRecord(request_id=request_id, account_id=account_id, operation="chat",
                      model="m1", upstream_status=200, duration_ms=120, input_tokens=10,
                      output_tokens=20, estimated=500, **kw)


async def _settlement_agrees(ledger: SqlLedger, case: Case) -> None:
    account_id, prefix = await _account(ledger, case)
    request_id = "r" + prefix
    got = await ledger.runner.run_single(
        hot_path_pg.settle, None, _record(account_id, request_id), case.amount, case.rule, AT)
    expected = settle_debit(_engine_buckets(case), case.amount, case.debt, to_datetime(AT),
                            case.rule)  # type: ignore[arg-type]
    s = got.settlement
    assert (s.charged, s.unbilled) == (expected.charged, expected.unbilled), case

    def rows(conn: Connection) -> tuple[Any, ...]:
        debt = conn.execute(select(accounts.c.debt).where(accounts.c.id == account_id)).scalar()
        entry = conn.execute(select(ledger_entries.c.id, ledger_entries.c.delta)
                             .where(ledger_entries.c.account_id == account_id)).all()
        allocated = conn.execute(
            select(allocations.c.bucket_id, allocations.c.amount)
            .join(ledger_entries, ledger_entries.c.id == allocations.c.entry_id)
            .where(ledger_entries.c.account_id == account_id).order_by(allocations.c.id)).all()
        left = dict(conn.execute(select(buckets.c.id, buckets.c.remaining)
                                 .where(buckets.c.account_id == account_id)).all())
        return debt, entry, allocated, left

    debt, entry, allocated, left = await ledger.runner.run(rows)
    assert debt == expected.debt, case
    assert [(b[len(prefix):], a) for b, a in allocated] == [
        (a.bucket_id, a.amount) for a in expected.plan.allocations], case
    assert [d for _, d in entry] == ([-expected.charged] if expected.charged else []), case
    taken = {a.bucket_id: a.amount for a in expected.plan.allocations}
    assert {k[len(prefix):]: v for k, v in left.items()} == {
        b[0]: b[2] - taken.get(b[0], 0) for b in case.buckets}, case
    live_after = sum(b.remaining for b in _engine_buckets(case)
                     if b.remaining > 0 and b.is_live(to_datetime(AT))) - expected.plan.covered
    held = sum(a for a, e in case.holds if e > AT)
    assert s.remaining == live_after - held - expected.debt, case


def test_gw_settle_burns_down_as_the_engine(ledger_url: str) -> None:
    _run(ledger_url, _settlement_agrees, 150)


# --- against the multi-statement path it replaces ------------------------------------------

_TABLES = (usage_records, ledger_entries, usage_daily, holds)


def _written(conn: Connection, account_id: str, prefix: str) -> dict[str, Any]:
    """Every row a settlement of the account writes, with its own ids taken out."""
    out: dict[str, Any] = {}
    for t in _TABLES:
        rows = conn.execute(select(t).where(t.c.account_id == account_id)).mappings().all()
        out[t.name] = sorted(
            json.dumps({k: v for k, v in r.items() if k not in ("id", "account_id")},
                       sort_keys=True, default=str).replace(prefix, "P") for r in rows)
    out["allocations"] = [(b[len(prefix):], a) for b, a in conn.execute(
        select(allocations.c.bucket_id, allocations.c.amount)
        .join(ledger_entries, ledger_entries.c.id == allocations.c.entry_id)
        .where(ledger_entries.c.account_id == account_id).order_by(allocations.c.id)).all()]
    out["buckets"] = sorted((b[len(prefix):], r) for b, r in conn.execute(
        select(buckets.c.id, buckets.c.remaining).where(buckets.c.account_id == account_id)))
    out["account"] = tuple(conn.execute(
        select(accounts.c.debt, accounts.c.event_seq, accounts.c.balance_alert)
        .where(accounts.c.id == account_id)).one())
    out["spend"] = sorted((r.scope, r.scope_id.replace(account_id, "A").replace(prefix, "P"),
                           r.charged) for r in conn.execute(select(spend_daily)).all()
                          if prefix in r.scope_id or account_id in r.scope_id)
    return out


_FLAVOURS = st.sampled_from(["fresh", "opened", "interrupted", "replay"])


async def _same_as_before(ledger: SqlLedger, case: Case, flavour: str, provider: bool) -> None:
    seen: list[Any] = []
    ledger.runner.on_commit = seen.extend
    results = []
    for path in ("old", "new"):
        account_id, prefix = await _account(ledger, case)
        request_id = "r" + prefix
        hold_id = None
        if flavour != "fresh":
            adm = await ledger.runner.run_raw(budgets.admit, account_id, 0, "chat", 60_000, AT,
                                              request_id, "m1", False, None)
            hold_id = adm.hold_id if isinstance(adm, Admission) else None
        if flavour == "interrupted":
            await ledger.runner.run(lambda c, r=request_id: c.execute(
                update(usage_records).where(usage_records.c.id == r).values(
                    outcome=INTERRUPTED)))
        record = _record(account_id, request_id, key_id="k" + prefix, end_user="eu",
                         provider="openai" if provider else None,
                         total_cost=77 if provider else None)
        times = 2 if flavour == "replay" else 1
        for _ in range(times):
            seen.clear()
            if path == "old":
                settled = await ledger.runner.run_raw(
                    budgets.settle, hold_id, record, case.amount, case.rule, AT, None, None)
            else:
                done = await ledger.runner.run_single(
                    hot_path_pg.settle, hold_id, record, case.amount, case.rule, AT)
                if done.alert is not None:
                    await ledger.runner.run_raw(hot_path_pg.fire_alerts, account_id,
                                                done.alert[0], done.alert[1], AT)
                settled = done.settlement
        events = [(e.seq, e.type, e.data) for e in seen]
        written = await ledger.runner.run(_written, account_id, prefix)
        results.append((settled, events, written))
    assert results[0] == results[1], case


def test_gw_settle_writes_what_the_statement_path_writes(ledger_url: str) -> None:
    with asyncio.Runner() as loop:
        ledger = SqlLedger(ledger_url)
        try:
            @settings(max_examples=60, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.function_scoped_fixture,
                                             HealthCheck.too_slow])
            @given(case=CASES, flavour=_FLAVOURS, provider=st.booleans())
            def same(case: Case, flavour: str, provider: bool) -> None:
                loop.run(_same_as_before(ledger, replace(case, holds=[]), flavour, provider))

            same()
        finally:
            loop.run(ledger.close())


# --- commit durability (migration 0017) -----------------------------------------------------

def test_admission_commits_without_waiting_for_the_wal_flush_and_settlement_waits(
        ledger_url: str) -> None:
    """gw_admit makes the commit of its own transaction asynchronous (a hold lost in a server
    crash costs no money: a settlement without its hold or opened record charges as usual, the
    `fresh` flavour above), and the hold is seen at once by other connections; gw_settle and
    the transactions after an admission keep the server's setting (a charge is durable when
    it is answered)."""
    async def setting(db: Any) -> str:
        return str(await db.conn.fetchval("SELECT current_setting('synchronous_commit')"))

    async def admitted_then(db: Any, account_id: str, request_id: str) -> tuple[Any, str]:
        got = await hot_path_pg.admit(db, account_id, 0, "t.op", 60_000, AT, request_id)
        return got, await setting(db)

    async def settled_then(db: Any, account_id: str, request_id: str) -> str:
        await hot_path_pg.settle(db, None, _record(account_id, request_id), 0, "clamp", AT)
        return await setting(db)

    async def check() -> tuple[str, ...]:
        ledger = SqlLedger(ledger_url)
        try:
            account_id = await ledger.create_account(PLAN)
            request_id = f"r{next(_serial):06d}sync"
            server = await ledger.runner.run_raw(setting)
            got, in_admission = await ledger.runner.run_raw(admitted_then, account_id,
                                                            request_id)
            assert isinstance(got, Admission)
            seen = await ledger.runner.run(lambda c: c.execute(
                select(holds.c.amount).where(holds.c.id == got.hold_id)).scalar_one())
            assert seen == 0
            after = await ledger.runner.run_raw(setting)
            in_settlement = await ledger.runner.run_raw(settled_then, account_id, request_id)
        finally:
            await ledger.close()
        return server, in_admission, after, in_settlement

    server, in_admission, after, in_settlement = asyncio.run(check())
    assert in_admission == "off"
    assert (after, in_settlement) == (server, server)
