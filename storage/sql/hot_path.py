"""The ledger operations on the request path, as fixed SQL on a small executor.

Profiling showed SQLAlchemy's statement building and cache-key generation taking ~80 % of the
gateway's CPU per call when admission and settlement were written in Core, and its asyncpg
adapter costing ~0.2 ms per PostgreSQL round trip; the same statements as pre-rendered SQL on
sqlite3 and on native asyncpg cost a fraction. Each function takes `(db, *args)`, where `db`
(a `storage.sql.executor.Executor`, see `storage.sql.engine`) runs statements inside an open
transaction:
`await db.one(sql, params)`, `await db.all(...)`, `await db.run(...)` → rowcount.
On SQLite nothing inside ever suspends: a whole operation runs to its end on the SQLite writer
thread (storage/sql/sqlite_writer.py), in the transaction it shares with the jobs waiting then.
Placeholders are written `?` and rendered `$n` for asyncpg (storage.sql.executor.Sql). Amounts:
ledger units (ms).

The SQL text here names tables and columns that storage/sql/tables.py defines; every `Sql`
statement is prepared against freshly migrated SQLite and PostgreSQL databases by
tests/integration/test_raw_sql_schema.py, so a column renamed or dropped in the schema fails
there, not in production. Adding a column to a statement is a local edit: its name in the column
list, one `?`, its value in the parameter tuple.
"""

from __future__ import annotations

import json
from typing import Any, cast

from storage.clock import day_start_ms, to_datetime
from storage.engine.alerts import AlertRules
from storage.engine.availability import Funds, available, wants_top_up
from storage.engine.buckets import Bucket, EventType, Source
from storage.engine.budgets import Limits
from storage.engine.burn_down import ShortfallRule, settle_debit
from storage.engine.events import BALANCE_UPDATED, balance_data
from storage.ids import new_sequential_id
from storage.ports import (
    IN_FLIGHT,
    INTERRUPTED,
    AccountEvent,
    Admission,
    CallRecord,
    ResolvedKey,
    Settlement,
    Shortfall,
    UnknownAccount,
)
from storage.sql.alerts import alerts_raw
from storage.sql.executor import Executor, PgExecutor, Sql

_LOCK = Sql("SELECT plan_key, debt FROM accounts WHERE id = ?", " FOR UPDATE")
# Settlement locks the row by bumping the event sequence (one statement for both).
_LOCK_FOR_EVENT = Sql("UPDATE accounts SET event_seq = event_seq + 1 WHERE id = ?"
                      " RETURNING debt, event_seq, auto_topup_threshold, plan_key,"
                      " low_balance_threshold, balance_alert")
_FUNDS = Sql(
    "SELECT"
    " (SELECT COALESCE(SUM(remaining), 0) FROM buckets WHERE account_id = ? AND remaining > 0"
    "   AND (expires_at_ms IS NULL OR expires_at_ms > ?)),"
    " (SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = ? AND expires_at_ms > ?),"
    " (SELECT COALESCE(SUM(remaining), 0) FROM buckets WHERE account_id = ? AND remaining > 0"
    "   AND source = 'daily' AND expires_at_ms > ?)"
)
_HELD = Sql("SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = ? AND expires_at_ms > ?")
_LIVE = Sql(
    "SELECT id, source, remaining, expires_at_ms, created_at_ms FROM buckets"
    " WHERE account_id = ? AND remaining > 0 AND (expires_at_ms IS NULL OR expires_at_ms > ?)"
)
_HOLD_COLUMNS = (
    "INSERT INTO holds (id, account_id, amount, operation, created_at_ms, expires_at_ms,"
    " request_id, key_id, end_user) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_HOLD = Sql(_HOLD_COLUMNS)
# The call's usage record, opened with its hold (completed at settlement, or closed as
# interrupted by the lease sweep).
_OPEN_COLUMNS = (
    "INSERT INTO usage_records (id, account_id, operation, model, duration_ms, estimated,"
    " usage_source, streamed, outcome, created_at_ms, key_id, end_user)"
    f" VALUES (?, ?, ?, ?, 0, ?, 'none', ?, '{IN_FLIGHT}', ?, ?, ?)"
)
_OPEN_RECORD = Sql(_OPEN_COLUMNS)
# PostgreSQL: hold and record in the one round trip the hold alone took (a data-modifying CTE).
_ADMIT_WRITES_PG = Sql(f"WITH h AS ({_HOLD_COLUMNS}) {_OPEN_COLUMNS}", sqlite=False).pg
_HOLD_AMOUNT = Sql("SELECT amount FROM holds WHERE id = ? AND expires_at_ms > ?")
_UPDATE_HOLD = Sql("UPDATE holds SET amount = ?, expires_at_ms = ? WHERE id = ?")
_DELETE_HOLD = Sql("DELETE FROM holds WHERE id = ?")
# The call's record as admission or the sweep left it; locked, so a sweep closing it as
# interrupted and this settlement completing it cannot both count it.
_RECORD_STATE = Sql("SELECT outcome FROM usage_records WHERE id = ?", " FOR UPDATE")
_DEBIT = Sql("UPDATE buckets SET remaining = remaining - ? WHERE id = ?")
_SET_DEBT = Sql("UPDATE accounts SET debt = ? WHERE id = ?")
_INSERT_ENTRY = Sql(
    "INSERT INTO ledger_entries (account_id, event_type, delta, idempotency_key, reason,"
    " metadata_json, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_INSERT_ALLOCATION = Sql("INSERT INTO allocations (entry_id, bucket_id, amount) VALUES (?, ?, ?)")
_USAGE_COLUMNS = (
    "INSERT INTO usage_records (id, account_id, operation, model, upstream_status, duration_ms,"
    " input_tokens, output_tokens, cached_tokens, reasoning_tokens, estimated, charged, unbilled,"
    " usage_source, streamed, outcome, created_at_ms, provider, key_id, end_user,"
    " cache_write_tokens, prompt_cost, completion_cost, total_cost, cost_reason, price_version)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_USAGE = Sql(_USAGE_COLUMNS)
_COMPLETE_COLUMNS = (
    "UPDATE usage_records SET operation = ?, model = ?, upstream_status = ?, duration_ms = ?,"
    " input_tokens = ?, output_tokens = ?, cached_tokens = ?, reasoning_tokens = ?,"
    " estimated = ?, charged = ?, unbilled = ?, usage_source = ?, streamed = ?, outcome = ?,"
    " created_at_ms = ?, provider = ?, key_id = ?, end_user = ?, cache_write_tokens = ?,"
    " prompt_cost = ?, completion_cost = ?, total_cost = ?, cost_reason = ?, price_version = ?"
    " WHERE id = ?"
)
_COMPLETE_USAGE = Sql(_COMPLETE_COLUMNS)
# The daily rollup behind usage analytics, cost summaries and key budgets (storage/sql/tables.py
# usage_daily): ONE upsert per settlement. A call counts once, when it settles or is
# interrupted; a late settlement adds its charge, costs and tokens, and counts in `late`.
_ROLLUP_COLUMNS = ("account_id, day_ms, operation, provider, model, key_id, calls, late,"
                   " charged, unpriced, prompt_tokens, completion_tokens, cost")
_ROLLUP = (
    f"INSERT INTO usage_daily ({_ROLLUP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (account_id, day_ms, operation, provider, model, key_id)"
    " DO UPDATE SET calls = usage_daily.calls + excluded.calls,"
    " late = usage_daily.late + excluded.late,"
    " charged = usage_daily.charged + excluded.charged,"
    " unpriced = usage_daily.unpriced + excluded.unpriced,"
    " prompt_tokens = usage_daily.prompt_tokens + excluded.prompt_tokens,"
    " completion_tokens = usage_daily.completion_tokens + excluded.completion_tokens,"
    " cost = usage_daily.cost + excluded.cost"
)
_ROLLUP_USAGE = Sql(_ROLLUP)
# PostgreSQL: the two settlement writes above in one round trip (a data-modifying CTE).
_SETTLE_WRITES_PG = Sql(f"WITH u AS ({_USAGE_COLUMNS}) {_ROLLUP}", sqlite=False).pg
_COMPLETE_WRITES_PG = Sql(f"WITH u AS ({_COMPLETE_COLUMNS}) {_ROLLUP}", sqlite=False).pg


def rollup_row(record: CallRecord, charged: int, at_ms: int, counted: bool
               ) -> tuple[str, int, str, str, str, str, int, int, int, int, int, int, int]:
    """The usage_daily row a settlement adds (`_ROLLUP`'s parameters): `charged` ledger units;
    `counted`: the lease sweep already counted the call (calls 0, late 1)."""
    priced = record.provider is not None
    return (record.account_id, day_start_ms(at_ms), record.operation, record.provider or "",
            record.model or "", record.key_id or "", 0 if counted else 1, 1 if counted else 0,
            charged, 1 if priced and record.total_cost is None else 0, record.input_tokens,
            record.output_tokens, record.total_cost or 0)


_RESOLVE_KEY = Sql(
    "SELECT k.account_id, a.plan_key, k.id, k.limit_day, k.limit_month FROM api_keys k"
    " JOIN accounts a ON a.id = k.account_id WHERE k.key_hash = ? AND k.revoked_at_ms IS NULL"
)


async def _lock(db: Executor, account_id: str) -> tuple[str, int]:
    row = await db.one(_LOCK, (account_id,))
    if row is None:
        raise UnknownAccount(account_id)
    return row[0], int(row[1])


async def resolve_key(db: Executor, key_hash: str) -> ResolvedKey | None:
    """The account, plan key, key id and limits of an active API key with this SHA-256."""
    row = await db.one(_RESOLVE_KEY, (key_hash,))
    return None if row is None else ResolvedKey(row[0], row[1], row[2], Limits(
        None if row[3] is None else int(row[3]), None if row[4] is None else int(row[4])))


async def admit(
    db: Executor, account_id: str, amount: int, operation: str, ttl_ms: int, at_ms: int,
    request_id: str | None = None, model: str | None = None, streamed: bool = False,
    key_id: str | None = None, end_user: str | None = None,
) -> Admission | Shortfall:
    """Place a hold of `amount` if available = spendable − holds − debt covers it (SPEC §3),
    else report the shortfall split into daily bonus and the rest. Locks the account row.
    The sums are one SQL statement (their filters mirror storage.engine.availability.funds;
    tests/integration/test_sql_engine_agreement.py holds them to it); the decision is the
    engine's (`Funds`).
    With a `request_id`, the call's usage record is opened with the hold (outcome `in_flight`,
    `estimated` = amount; no extra round trip on PostgreSQL); a refusal writes nothing.
    `key_id`/`end_user` are kept on the hold and the record (budgets: storage.sql.budgets)."""
    _plan, debt = await _lock(db, account_id)
    row = await db.one(_FUNDS, (account_id, at_ms, account_id, at_ms, account_id, at_ms))
    funds = Funds(int(row[0]), int(row[1]), int(row[2]), debt)
    if funds.covers(amount):
        hold_id = new_sequential_id("hold")
        hold = (hold_id, account_id, amount, operation, at_ms, at_ms + ttl_ms, request_id,
                key_id, end_user)
        if request_id is None:
            await db.run(_INSERT_HOLD, hold)
        else:
            record = (request_id, account_id, operation, model, amount, streamed, at_ms, key_id,
                      end_user)
            if db.postgres:
                await cast("PgExecutor", db).run_text(_ADMIT_WRITES_PG, hold + record)
            else:
                await db.run(_INSERT_HOLD, hold)
                await db.run(_OPEN_RECORD, record)
        return Admission(hold_id=hold_id, amount=amount,
                         available_after=funds.available - amount)
    shown, daily, paid = funds.shortfall()
    return Shortfall(required=amount, available=shown, daily=daily, paid=paid)


async def extend_hold(
    db: Executor, account_id: str, hold_id: str, new_amount: int, ttl_ms: int, at_ms: int
) -> bool:
    """Raise a live hold to `new_amount` when the balance covers the increase; renews expiry.
    False (nothing changed) when it cannot, or the hold is gone."""
    _plan, debt = await _lock(db, account_id)
    row = await db.one(_HOLD_AMOUNT, (hold_id, at_ms))
    if row is None:
        return False
    current = int(row[0])
    if new_amount > current:
        row = await db.one(_FUNDS, (account_id, at_ms, account_id, at_ms, account_id, at_ms))
        if not Funds(int(row[0]), int(row[1]), int(row[2]), debt).covers(new_amount - current):
            return False
    await db.run(_UPDATE_HOLD, (max(new_amount, current), at_ms + ttl_ms, hold_id))
    return True


async def settle(
    db: Executor, hold_id: str | None, record: CallRecord, charge: int,
    on_shortfall: ShortfallRule, at_ms: int, alert_rules: AlertRules | None = None,
) -> Settlement:
    """Debit `charge` in burn order, release the hold, write the usage record (completing the
    one admission opened, even when the sweep closed it as interrupted meanwhile; else a new
    one), add it to the daily rollup and emit a live balance.updated (next event id; not
    logged); idempotent by request id. `clamp`: the uncovered
    rest is unbilled; `overdraft`: it becomes debt. `Settlement.top_up` is True when the
    account has auto top-up on and is now below its threshold. A low-balance crossing fires its
    alert in the same transaction (storage.sql.alerts.alerts_raw, `alert_rules`)."""
    account_id = record.account_id
    locked = await db.one(_LOCK_FOR_EVENT, (account_id,))
    if locked is None:
        raise UnknownAccount(account_id)
    debt, seq, topup_threshold = int(locked[0]), int(locked[1]), locked[2]
    alert_row = (locked[3], None if locked[4] is None else int(locked[4]), locked[5])
    if hold_id is not None:
        await db.run(_DELETE_HOLD, (hold_id,))
    key = "call:" + record.request_id
    state = await db.one(_RECORD_STATE, (record.request_id,))
    opened = state is not None
    if opened and state[0] not in (IN_FLIGHT, INTERRUPTED):
        return Settlement(charged=0, unbilled=0, remaining=0, replayed=True)
    rows = await db.all(_LIVE, (account_id, at_ms))
    buckets = [
        Bucket(r[0], Source(r[1]), int(r[2]),
               None if r[3] is None else to_datetime(int(r[3])), to_datetime(int(r[4])))
        for r in rows
    ]
    settled = settle_debit(buckets, charge, debt, to_datetime(at_ms), on_shortfall)
    plan, debited, unbilled, new_debt = settled.plan, settled.charged, settled.unbilled, \
        settled.debt
    for a in plan.allocations:
        await db.run(_DEBIT, (a.amount, a.bucket_id))
    if new_debt != debt:
        await db.run(_SET_DEBT, (new_debt, account_id))
    if debited:
        meta: dict[str, Any] = {"operation": record.operation, "model": record.model,
                                "usage_source": record.usage_source}
        if plan.shortfall:
            meta["shortfall"] = plan.shortfall
            meta["shortfall_rule"] = on_shortfall
        entry = await db.one(_INSERT_ENTRY, (
            account_id, EventType.CONSUMPTION.value, -debited, key,
            f"{record.operation} ({record.usage_source} usage)",
            json.dumps(meta, separators=(",", ":")), at_ms))
        entry_id = int(entry[0])
        for a in plan.allocations:
            await db.run(_INSERT_ALLOCATION, (entry_id, a.bucket_id, a.amount))
    held = int((await db.one(_HELD, (account_id, at_ms)))[0])
    spendable = sum(b.remaining for b in buckets) - plan.covered
    taken: dict[str, int] = {}
    for a in plan.allocations:
        taken[a.bucket_id] = taken.get(a.bucket_id, 0) + a.amount
    data = balance_data([(b.source, b.remaining - taken.get(b.id, 0)) for b in buckets], held,
                        new_debt, EventType.CONSUMPTION.value)
    data["charged_ms"] = debited
    usage = (record.request_id, account_id, record.operation, record.model,
             record.upstream_status, record.duration_ms, record.input_tokens,
             record.output_tokens, record.cached_tokens, record.reasoning_tokens,
             record.estimated, debited, unbilled, record.usage_source, bool(record.streamed),
             record.outcome, at_ms, record.provider, record.key_id, record.end_user,
             record.cache_write_tokens, record.prompt_cost, record.completion_cost,
             record.total_cost, record.cost_reason, record.price_version)
    # the sweep already counted an interrupted call
    rollup = rollup_row(record, debited, at_ms, opened and state[0] == INTERRUPTED)
    if opened:
        complete = (*usage[2:], record.request_id)
        if db.postgres:
            await cast("PgExecutor", db).run_text(_COMPLETE_WRITES_PG, complete + rollup)
        else:
            await db.run(_COMPLETE_USAGE, complete)
            await db.run(_ROLLUP_USAGE, rollup)
    elif db.postgres:
        await cast("PgExecutor", db).run_text(_SETTLE_WRITES_PG, usage + rollup)
    else:
        await db.run(_INSERT_USAGE, usage)
        await db.run(_ROLLUP_USAGE, rollup)
    # Live only (not written to the event log): balance.updated is a state event, and a stream
    # that missed some is sent one fresh snapshot instead (gateway.api.stream). One insert per
    # call fewer on the hot path.
    db.events.append(AccountEvent(account_id, seq, BALANCE_UPDATED, data, at_ms))
    await alerts_raw(db, account_id, spendable - new_debt, *alert_row, alert_rules, at_ms)
    remaining = available(spendable, held, new_debt)
    threshold = None if topup_threshold is None else int(topup_threshold)
    return Settlement(charged=debited, unbilled=unbilled, remaining=remaining,
                      top_up=wants_top_up(remaining, threshold))


_RENEW = Sql("UPDATE holds SET expires_at_ms = ? WHERE id = ? AND expires_at_ms > ?")


async def renew_holds(
    db: Executor, hold_ids: list[str], expires_at_ms: int, at_ms: int
) -> list[str]:
    """Push the expiry of the still-live holds among `hold_ids` to `expires_at_ms` (lease
    renewal; no account lock: a renewal never changes an amount). A hold whose lease already
    lapsed stays lapsed — its balance may be held by another call now. Returns the ids that
    were not renewed."""
    lapsed = []
    for hold_id in hold_ids:
        if await db.run(_RENEW, (expires_at_ms, hold_id, at_ms)) == 0:
            lapsed.append(hold_id)
    return lapsed


_SWEEP_HOLDS = Sql("DELETE FROM holds WHERE expires_at_ms <= ? RETURNING request_id")
_INTERRUPT_COLUMNS = (
    f"UPDATE usage_records SET outcome = '{INTERRUPTED}', charged = 0, unbilled = estimated,"
    f" created_at_ms = ? WHERE outcome = '{IN_FLIGHT}'"
)
_INTERRUPT = Sql(_INTERRUPT_COLUMNS + " AND id = ? RETURNING account_id, operation, model, key_id")
# PostgreSQL: the whole sweep in one statement. Holds are deleted (locked) before their records,
# the order settlement takes them in; the rollup is written after the aggregate has read every
# closed record.
_SWEEP_PG = Sql(
    f"WITH gone AS ({_SWEEP_HOLDS.lite}),"
    f" closed AS ({_INTERRUPT_COLUMNS} AND id IN (SELECT request_id FROM gone)"
    "  RETURNING account_id, operation, COALESCE(model, '') AS model,"
    "  COALESCE(key_id, '') AS key_id),"
    f" rolled AS (INSERT INTO usage_daily ({_ROLLUP_COLUMNS})"
    "  SELECT account_id, CAST(? AS BIGINT), operation, '', model, key_id, COUNT(*), 0, 0, 0,"
    "  0, 0, 0 FROM closed GROUP BY account_id, operation, model, key_id"
    "  ON CONFLICT (account_id, day_ms, operation, provider, model, key_id)"
    "  DO UPDATE SET calls = usage_daily.calls + excluded.calls RETURNING 1)"
    " SELECT (SELECT COUNT(*) FROM gone), (SELECT COUNT(*) FROM closed)",
    sqlite=False,
)


async def sweep_holds(db: Executor, before_ms: int, at_ms: int) -> tuple[int, int]:
    """Delete holds whose lease lapsed before `before_ms` (crashed processes' holds; they no
    longer count anyway) and close the usage records they guarded that are still `in_flight`
    as `interrupted` at `at_ms`: charged 0 (the call never settled), its estimate recorded as
    unbilled, counted in the daily rollup of `at_ms` (no provider: the call never reported one;
    its model and key as admitted). Returns (holds deleted, records closed).
    A late settlement of such a call still charges it and completes the record."""
    day = day_start_ms(at_ms)
    if db.postgres:
        gone, closed = await db.one(_SWEEP_PG, (before_ms, at_ms, day))
        return int(gone), int(closed)
    rows = await db.all(_SWEEP_HOLDS, (before_ms,))
    counts: dict[tuple[str, str, str, str], int] = {}
    for (request_id,) in rows:
        if request_id is None:
            continue
        row = await db.one(_INTERRUPT, (at_ms, request_id))
        if row is not None:
            group = (row[0], row[1], row[2] or "", row[3] or "")
            counts[group] = counts.get(group, 0) + 1
    for (account_id, operation, model, key_id), n in counts.items():
        await db.run(_ROLLUP_USAGE, (account_id, day, operation, "", model, key_id, n, 0, 0, 0,
                                     0, 0, 0))
    return len(rows), sum(counts.values())
