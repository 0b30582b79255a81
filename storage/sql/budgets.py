"""Admission and settlement within budgets, in SQL (issue 10 items 3–4): storage.sql.hot_path's
`admit` and `settle` wrapped, in their transaction, with the key's and end user's limits and the
end user's spend rollup (costs and key spend are in hot_path's one rollup upsert). The account
row is locked first, so every admission of a key or end user — all within one account — is
serialized, across processes. The rules are storage.engine.budgets'.

Amounts: ledger units; costs: USD micro-units; times: UTC epoch ms.
"""

from __future__ import annotations

from storage.clock import day_start_ms
from storage.engine.alerts import AlertRules
from storage.engine.budgets import (
    END_USER_SCOPE,
    KEY_SCOPE,
    Limits,
    Spend,
    admits,
    clamp,
    end_user_scope_id,
    headroom,
    month_start_ms,
)
from storage.engine.burn_down import ShortfallRule
from storage.ports import Admission, CallBudget, CallRecord, Settlement, Shortfall, UnknownAccount
from storage.sql import hot_path
from storage.sql.executor import Executor, Sql

# Spend of a scope: (Σ charged today, Σ charged this month, live holds). A key's charges are
# its rows of the daily rollup (usage_daily, within its account); an end user's, spend_daily.
_HELD_BY = ("(SELECT COALESCE(SUM(amount), 0) FROM holds"
            "   WHERE account_id = ? AND {column} = ? AND expires_at_ms > ? AND id <> ?)")
_SPEND = {
    "key_id": Sql(
        "SELECT"
        " (SELECT COALESCE(SUM(charged), 0) FROM usage_daily"
        "   WHERE account_id = ? AND day_ms = ? AND key_id = ?),"
        " (SELECT COALESCE(SUM(charged), 0) FROM usage_daily"
        "   WHERE account_id = ? AND day_ms >= ? AND key_id = ?),"
        f" {_HELD_BY.format(column='key_id')}"),
    "end_user": Sql(
        "SELECT"
        " (SELECT COALESCE(SUM(charged), 0) FROM spend_daily"
        "   WHERE scope = ? AND scope_id = ? AND day_ms = ?),"
        " (SELECT COALESCE(SUM(charged), 0) FROM spend_daily"
        "   WHERE scope = ? AND scope_id = ? AND day_ms >= ?),"
        f" {_HELD_BY.format(column='end_user')}"),
}
_ADD_SPEND = Sql(
    "INSERT INTO spend_daily (scope, scope_id, day_ms, charged) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (scope, scope_id, day_ms)"
    " DO UPDATE SET charged = spend_daily.charged + excluded.charged")


def _scopes(account_id: str, budget: CallBudget | None
            ) -> list[tuple[str, str, str, str, str, Limits]]:
    """(limit source, scope, scope id, holds column, its value, limits) of a call's limits."""
    out: list[tuple[str, str, str, str, str, Limits]] = []
    if budget is None:
        return out
    if budget.key_id is not None and budget.key_limits.any:
        out.append(("key", KEY_SCOPE, budget.key_id, "key_id", budget.key_id,
                    budget.key_limits))
    if budget.end_user is not None and budget.end_user_day is not None:
        out.append(("end_user", END_USER_SCOPE, end_user_scope_id(account_id, budget.end_user),
                    "end_user", budget.end_user, Limits(day=budget.end_user_day)))
    return out


def has_limits(account_id: str, budget: CallBudget | None) -> bool:
    """True when a key or end-user limit applies to the call (`admit`/`settle` then read and
    clamp to spend); False for the common call, which PostgreSQL runs as one statement
    (storage.sql.hot_path_pg)."""
    return bool(_scopes(account_id, budget))


_LOCK = Sql("SELECT id FROM accounts WHERE id = ?", " FOR UPDATE")
_ADD_UNBILLED = Sql("UPDATE usage_records SET unbilled = unbilled + ? WHERE id = ?")


async def _spend(db: Executor, scope: str, scope_id: str, account_id: str, column: str,
                 value: str, at_ms: int, except_hold: str) -> Spend:
    day, month = day_start_ms(at_ms), month_start_ms(at_ms)
    if column == "key_id":
        params: tuple[object, ...] = (account_id, day, scope_id, account_id, month, scope_id)
    else:
        params = (scope, scope_id, day, scope, scope_id, month)
    row = await db.one(_SPEND[column], (*params, account_id, value, at_ms, except_hold))
    assert row is not None
    return Spend(day=int(row[0]), month=int(row[1]), held=int(row[2]))


async def _lock(db: Executor, account_id: str) -> None:
    if await db.one(_LOCK, (account_id,)) is None:
        raise UnknownAccount(account_id)


async def admit(
    db: Executor, account_id: str, amount: int, operation: str, ttl_ms: int, at_ms: int,
    request_id: str | None, model: str | None, streamed: bool, budget: CallBudget | None,
) -> Admission | Shortfall:
    """hot_path.admit under the budget's limits: the first limit (key, then end user) without
    `amount` of headroom refuses with its `limit_source`; else the account's balance decides.
    Reads spend only when a limit applies (calls without limits pay nothing for budgets)."""
    scopes = _scopes(account_id, budget)
    if scopes:
        await _lock(db, account_id)
        for source, scope, scope_id, column, value, limits in scopes:
            spend = await _spend(db, scope, scope_id, account_id, column, value, at_ms, "")
            if not admits(limits, spend, amount):
                room = max(0, headroom(limits, spend) or 0)
                return Shortfall(required=amount, available=room, daily=0, paid=room,
                                 limit_source=source)
    return await hot_path.admit(
        db, account_id, amount, operation, ttl_ms, at_ms, request_id, model, streamed,
        budget.key_id if budget else None, budget.end_user if budget else None)


async def settle(
    db: Executor, hold_id: str | None, record: CallRecord, charge: int,
    on_shortfall: ShortfallRule, at_ms: int, budget: CallBudget | None,
    alert_rules: AlertRules | None = None,
) -> Settlement:
    """hot_path.settle with `charge` clamped at the budget's limits (what is cut off is
    unbilled, on the record too), then its charge added to its end user's spend."""
    allowed = charge
    scopes = _scopes(record.account_id, budget)
    if scopes:
        await _lock(db, record.account_id)
        for _source, scope, scope_id, column, value, limits in scopes:
            allowed = clamp(allowed, limits, await _spend(
                db, scope, scope_id, record.account_id, column, value, at_ms, hold_id or ""))
    result = await hot_path.settle(db, hold_id, record, allowed, on_shortfall, at_ms,
                                   alert_rules)
    if result.replayed:
        return result
    await record_settled(db, record, result.charged, at_ms)
    if allowed < charge:
        await db.run(_ADD_UNBILLED, (charge - allowed, record.request_id))
        return Settlement(charged=result.charged, unbilled=result.unbilled + charge - allowed,
                          remaining=result.remaining, top_up=result.top_up)
    return result


async def record_settled(db: Executor, record: CallRecord, charged: int, at_ms: int) -> None:
    """Add a settled call's charge to its end user's daily spend (calls for an end user that
    were charged; the usage, cost and key rollup is the one upsert of hot_path.settle)."""
    if charged and record.end_user is not None:
        await db.run(_ADD_SPEND, (END_USER_SCOPE, end_user_scope_id(
            record.account_id, record.end_user), day_start_ms(at_ms), charged))
