"""Admission and settlement on PostgreSQL in one round trip each (issue 13 item 1).

`gw_admit` and `gw_settle` are PL/pgSQL functions that migration 0015
(storage/migrations/versions/0015_pg_functions.py) installs (gw_settle's rollup statements
replaced by migration 0016_one_rollup); each call here is one statement run
outside an explicit transaction (`Runner.run_single`: autocommit, so BEGIN and COMMIT cost no
round trip). `gw_admit` makes its transaction's commit asynchronous (migration 0017: it does not
wait for the WAL flush, the larger part of a statement's latency; the settlement's commit
does). They do what storage.sql.hot_path.admit / settle and
storage.sql.budgets.record_settled do for a call without key or end-user limits (calls with
limits keep the multi-statement path of storage.sql.budgets). Python still decides what the
engine owns: the shortfall split (storage.engine.availability.Funds), the balance.updated data
(storage.engine.events.balance_data), auto top-up (wants_top_up) and low-balance crossings
(storage.engine.alerts.crossing); the functions' availability check and burn-down are the one
copy of money rules in SQL, held to storage.engine by tests/integration/test_pg_functions.py.

Amounts: ledger units; times: UTC epoch ms.
"""

from __future__ import annotations

import json
from typing import Any

from storage.clock import day_start_ms
from storage.engine.alerts import AlertRules, AlertState, crossing
from storage.engine.availability import Funds, available, wants_top_up
from storage.engine.buckets import EventType
from storage.engine.budgets import END_USER_SCOPE, end_user_scope_id
from storage.engine.burn_down import ShortfallRule
from storage.engine.events import BALANCE_UPDATED, balance_data
from storage.ids import new_sequential_id
from storage.ports import AccountEvent, Admission, CallRecord, Settlement, Shortfall, UnknownAccount
from storage.sql.alerts import alerts_raw
from storage.sql.executor import Executor, Sql

GW_ADMIT = Sql("SELECT * FROM gw_admit(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", sqlite=False)
GW_SETTLE = Sql("SELECT * FROM gw_settle(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", sqlite=False)
# Several admissions in one statement (group commit, storage.sql.account_batches): one row per
# call, in the order given; each gw_admit call sees the holds the ones before it placed (a
# VOLATILE function's statements see the earlier commands of the same transaction). The
# function is called once per unnest row, in array order: the LATERAL call is the inner side of
# a nested loop driven by the unnest scan (tests/integration/test_*_batches.py check the order).
GW_ADMIT_MANY = Sql(
    "SELECT r.* FROM unnest(CAST(? AS text[]), CAST(? AS bigint[]), CAST(? AS bigint[]),"
    " CAST(? AS text[]), CAST(? AS text[]), CAST(? AS bigint[]), CAST(? AS text[]),"
    " CAST(? AS text[]), CAST(? AS boolean[]), CAST(? AS text[]), CAST(? AS text[]))"
    " WITH ORDINALITY AS x(account_id, amount, at_ms, hold_id, operation, expires_at_ms,"
    " request_id, model, streamed, key_id, end_user, n)"
    " CROSS JOIN LATERAL gw_admit(x.account_id, x.amount, x.at_ms, x.hold_id, x.operation,"
    " x.expires_at_ms, x.request_id, x.model, x.streamed, x.key_id, x.end_user) AS r"
    " ORDER BY x.n", sqlite=False)
# Several settlements in one statement, the same way (each sees what the earlier ones wrote: the
# holds they released, the usage records they completed — a repeated request id is a replay).
# The spend scopes (a text[] per call, 0-1 long: the end user) travel as JSON arrays: unnest
# would flatten a text[][] column.
_SETTLE_COLUMNS = (
    ("account_id", "text"), ("hold_id", "text"), ("request_id", "text"), ("charge", "bigint"),
    ("overdraft", "boolean"), ("at_ms", "bigint"), ("day_ms", "bigint"), ("operation", "text"),
    ("model", "text"), ("upstream_status", "integer"), ("duration_ms", "integer"),
    ("input_tokens", "integer"), ("output_tokens", "integer"), ("cached_tokens", "integer"),
    ("reasoning_tokens", "integer"), ("estimated", "bigint"), ("usage_source", "text"),
    ("streamed", "boolean"), ("outcome", "text"), ("provider", "text"), ("key_id", "text"),
    ("end_user", "text"), ("cache_write_tokens", "integer"), ("prompt_cost", "bigint"),
    ("completion_cost", "bigint"), ("total_cost", "bigint"), ("cost_reason", "text"),
    ("price_version", "text"), ("entry_type", "text"), ("reason", "text"), ("meta", "text"),
    ("scopes", "text"), ("scope_ids", "text"))
GW_SETTLE_MANY = Sql(
    "SELECT r.* FROM unnest("
    + ", ".join(f"CAST(? AS {kind}[])" for _, kind in _SETTLE_COLUMNS)
    + ") WITH ORDINALITY AS x(" + ", ".join(name for name, _ in _SETTLE_COLUMNS) + ", n)"
    " CROSS JOIN LATERAL gw_settle("
    + ", ".join(f"x.{name}" for name, _ in _SETTLE_COLUMNS[:-2])
    + ", ARRAY(SELECT jsonb_array_elements_text(CAST(x.scopes AS jsonb))),"
    " ARRAY(SELECT jsonb_array_elements_text(CAST(x.scope_ids AS jsonb)))) AS r"
    " ORDER BY x.n", sqlite=False)
# A low-balance crossing seen after a settlement: the alert inputs read again under the lock.
_ALERT_STATE = Sql("SELECT plan_key, low_balance_threshold, balance_alert FROM accounts"
                   " WHERE id = ?", " FOR UPDATE")


async def admit(
    db: Executor, account_id: str, amount: int, operation: str, ttl_ms: int, at_ms: int,
    request_id: str | None = None, model: str | None = None, streamed: bool = False,
    key_id: str | None = None, end_user: str | None = None,
) -> Admission | Shortfall:
    """storage.sql.hot_path.admit as one `gw_admit` statement: a hold of `amount` when
    available covers it (the usage record opened with it when `request_id` is given; both
    carry `key_id`/`end_user`), else the shortfall split by
    storage.engine.availability.Funds. Raises UnknownAccount."""
    params = admit_params(account_id, amount, operation, ttl_ms, at_ms, request_id, model,
                          streamed, key_id, end_user)
    return admission_of(params, await db.one(GW_ADMIT, params))


def admit_params(
    account_id: str, amount: int, operation: str, ttl_ms: int, at_ms: int,
    request_id: str | None = None, model: str | None = None, streamed: bool = False,
    key_id: str | None = None, end_user: str | None = None,
) -> tuple[Any, ...]:
    """The parameters of one `gw_admit` call (its order), with a new hold id (index 3)."""
    return (account_id, amount, at_ms, new_sequential_id("hold"), operation, at_ms + ttl_ms,
            request_id, model, streamed, key_id, end_user)


def admission_of(params: tuple[Any, ...], row: Any) -> Admission | Shortfall:
    """The Admission or Shortfall a `gw_admit` row (found, admitted, spendable, held, daily,
    debt) means for the call of `params` (admit_params). Raises UnknownAccount."""
    if not row[0]:
        raise UnknownAccount(params[0])
    amount = params[1]
    funds = Funds(int(row[2]), int(row[3]), int(row[4]), int(row[5]))
    if row[1]:
        return Admission(hold_id=params[3], amount=amount,
                         available_after=funds.available - amount)
    shown, daily, paid = funds.shortfall()
    return Shortfall(required=amount, available=shown, daily=daily, paid=paid)


def settle_params(hold_id: str | None, record: CallRecord, charge: int,
                  on_shortfall: ShortfallRule, at_ms: int) -> tuple[Any, ...]:
    """The parameters of `gw_settle` for one call (its column order). Raises ValueError for an
    unknown shortfall rule or a negative charge, as storage.engine.burn_down.settle_debit."""
    if on_shortfall not in ("clamp", "overdraft"):
        raise ValueError(f"shortfall rule must be 'clamp' or 'overdraft', got {on_shortfall!r}")
    if charge < 0:
        raise ValueError(f"debit amount must be >= 0, got {charge}")
    meta = json.dumps({"operation": record.operation, "model": record.model,
                       "usage_source": record.usage_source}, separators=(",", ":"))
    # spend_daily scopes: the end user's (a key's spend is its rows of the one rollup)
    scopes: list[str] = []
    scope_ids: list[str] = []
    if record.end_user is not None:
        scopes.append(END_USER_SCOPE)
        scope_ids.append(end_user_scope_id(record.account_id, record.end_user))
    return (
        record.account_id, hold_id, record.request_id, charge, on_shortfall == "overdraft",
        at_ms, day_start_ms(at_ms), record.operation, record.model, record.upstream_status,
        record.duration_ms, record.input_tokens, record.output_tokens, record.cached_tokens,
        record.reasoning_tokens, record.estimated, record.usage_source, bool(record.streamed),
        record.outcome, record.provider, record.key_id, record.end_user,
        record.cache_write_tokens, record.prompt_cost, record.completion_cost,
        record.total_cost, record.cost_reason, record.price_version,
        EventType.CONSUMPTION.value, f"{record.operation} ({record.usage_source} usage)", meta,
        scopes, scope_ids)


class SettledPg:
    """What one `gw_settle` did: the Settlement, and a low-balance `alert` to fire afterwards
    as (balance, rules) when storage.engine.alerts.crossing says the state changes (rare)."""

    __slots__ = ("alert", "settlement")

    def __init__(self, settlement: Settlement,
                 alert: tuple[int, AlertRules | None] | None = None) -> None:
        self.settlement = settlement
        self.alert = alert


async def admit_one(db: Executor, params: tuple[Any, ...]) -> Any:
    """The `gw_admit` row of one call (admit_params), one statement."""
    return await db.one(GW_ADMIT, params)


async def admit_many(db: Executor, calls: list[tuple[Any, ...]]) -> list[Any]:
    """The `gw_admit` rows of `calls` (admit_params tuples), run in order as ONE statement
    (one lock, one commit for all); a failure of any call fails them all (nothing written)."""
    columns = [list(column) for column in zip(*calls, strict=True)]
    return await db.all(GW_ADMIT_MANY, tuple(columns))


# One settlement for settle_one / settle_many: its settle_params, and the alert rules.
SettleCall = tuple[tuple[Any, ...], AlertRules | None]


async def settle(
    db: Executor, hold_id: str | None, record: CallRecord, charge: int,
    on_shortfall: ShortfallRule, at_ms: int, alert_rules: AlertRules | None = None,
) -> SettledPg:
    """storage.sql.hot_path.settle + storage.sql.budgets.record_settled as one `gw_settle`
    statement (a call without key or end-user limits): debit in burn order, release the hold,
    complete or write the usage record, the one usage/cost/key rollup upsert and the end
    user's spend; idempotent by request id.
    The live balance.updated event goes on `db.events`. A low-balance crossing is not written
    here: `SettledPg.alert` asks the caller to run `fire_alerts` (a second, locked
    transaction). Raises UnknownAccount."""
    return await settle_one(
        db, (settle_params(hold_id, record, charge, on_shortfall, at_ms), alert_rules))


async def settle_one(db: Executor, call: SettleCall) -> SettledPg:
    """`settle` for the settle_params of one call: one `gw_settle` statement."""
    params, alert_rules = call
    return settled_of(db, params, await db.one(GW_SETTLE, params), alert_rules)


async def settle_many(db: Executor, calls: list[SettleCall]) -> list[SettledPg]:
    """`settle` for several calls of ONE account, in order, as ONE statement (one lock, one
    commit for all); each call's outcome, event seq and balance.updated data are its own, as
    if it ran alone after the ones before it. A failure of any call fails them all (nothing
    written). Raises UnknownAccount (nothing written: gw_settle writes nothing then)."""
    columns = [list(column) for column in zip(*(params for params, _ in calls), strict=True)]
    columns[-2] = [json.dumps(scopes) for scopes in columns[-2]]
    columns[-1] = [json.dumps(ids) for ids in columns[-1]]
    rows = await db.all(GW_SETTLE_MANY, tuple(columns))
    return [settled_of(db, params, row, alert_rules)
            for (params, alert_rules), row in zip(calls, rows, strict=True)]


def settled_of(db: Executor, params: tuple[Any, ...], row: Any,
               alert_rules: AlertRules | None) -> SettledPg:
    """What the `gw_settle` `row` means for the call of `params` (settle_params); its
    balance.updated event is appended to `db.events`. Raises UnknownAccount."""
    account_id, at_ms = params[0], params[5]
    if not row[0]:
        raise UnknownAccount(account_id)
    if row[1]:
        return SettledPg(Settlement(charged=0, unbilled=0, remaining=0, replayed=True))
    charged, unbilled, debt, seq, held, spendable = (int(v) for v in row[2:8])
    data = balance_data(list(zip(row[8], row[9], strict=True)), held, debt,
                        EventType.CONSUMPTION.value)
    data["charged_ms"] = charged
    db.events.append(AccountEvent(account_id, seq, BALANCE_UPDATED, data, at_ms))
    remaining = available(spendable, held, debt)
    topup = row[10]
    settlement = Settlement(charged=charged, unbilled=unbilled, remaining=remaining,
                            top_up=wants_top_up(remaining, None if topup is None else int(topup)))
    rules = alert_rules or AlertRules()
    own = None if row[12] is None else int(row[12])
    balance = spendable - debt
    new, fired = crossing(AlertState(row[13]), balance, rules.threshold(own, row[11]))
    if fired or new.value != row[13]:
        return SettledPg(settlement, (balance, alert_rules))
    return SettledPg(settlement)


async def fire_alerts(db: Executor, account_id: str, balance: int,
                      rules: AlertRules | None, at_ms: int) -> list[AccountEvent]:
    """After a `gw_settle` whose result crosses a low-balance threshold: lock the account, and
    fire what the crossing from the state stored NOW to `balance` (the watched balance that
    settlement left, ledger units) fires (storage.sql.alerts.alerts_raw). Reading the state
    again under the lock makes it a compare-and-set: of concurrent settlements that saw the
    same state, the first to get here moves it and fires; the others then see the new state
    and fire only a further crossing (e.g. low, then depleted), so each crossing fires once."""
    row = await db.one(_ALERT_STATE, (account_id,))
    if row is None:
        raise UnknownAccount(account_id)
    own = None if row[1] is None else int(row[1])
    return await alerts_raw(db, account_id, balance, row[0], own, row[2], rules, at_ms)
