"""The in-memory adapter's provider-cost and budget operations (issue 10 items 3–4), on a
`MemoryStore`: the same answers as storage/sql/costs.py and the budget steps of
storage/sql/hot_path.py, the rules being storage.engine.budgets'.

Amounts: ledger units; costs: USD micro-units; times: UTC epoch ms.
"""

from __future__ import annotations

from typing import Any

from storage.clock import day_start_ms
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
from storage.memory.store import MemoryStore
from storage.ports import (
    IN_FLIGHT,
    CallBudget,
    CallRecord,
    CostDay,
    CostGroup,
    CostQuery,
    Shortfall,
)

_SUMS = ("calls", "late", "charged", "unpriced", "prompt_tokens", "completion_tokens", "cost")


def roll_up(store: MemoryStore, key: tuple[str, int, str, str, str, str], **sums: int) -> None:
    """Add `sums` (columns of storage/sql/tables.py usage_daily) to the rollup row of `key`
    (account, UTC day ms, operation, provider, model, key id; '' for none)."""
    row = store.usage_daily.get(key)
    if row is None:
        row = store.usage_daily[key] = dict(zip(
            ("account_id", "day_ms", "operation", "provider", "model", "key_id"), key,
            strict=True))
        row.update(dict.fromkeys(_SUMS, 0))
    for name, value in sums.items():
        row[name] += value


def usage_by_day(store: MemoryStore, account_id: str, from_ms: int, to_ms_: int
                 ) -> dict[tuple[int, str], tuple[int, int]]:
    """(calls, Σ charged) per (UTC day ms, operation) of the account's rollup rows with
    from_ms <= day < to_ms_, summed over provider, model and key (the SQL readers' GROUP BY)."""
    groups: dict[tuple[int, str], tuple[int, int]] = {}
    for r in store.usage_daily.values():
        if r["account_id"] == account_id and from_ms <= r["day_ms"] < to_ms_:
            calls, charged = groups.get((r["day_ms"], r["operation"]), (0, 0))
            groups[(r["day_ms"], r["operation"])] = (calls + r["calls"], charged + r["charged"])
    return groups


def _spend(store: MemoryStore, scope: str, scope_id: str, account_id: str, column: str,
           value: str, at_ms: int) -> Spend:
    day, month = day_start_ms(at_ms), month_start_ms(at_ms)
    if scope == KEY_SCOPE:
        rows = [r for (a, d, _op, _p, _m, k), r in store.usage_daily.items()
                if a == account_id and k == scope_id and d >= month]
    else:
        rows = [r for (sc, sid, d), r in store.spend_daily.items()
                if sc == scope and sid == scope_id and d >= month]
    held = sum(h["amount"] for h in store.holds.values()
               if h["account_id"] == account_id and h.get(column) == value
               and h["expires_at_ms"] > at_ms)
    return Spend(day=sum(r["charged"] for r in rows if r["day_ms"] == day),
                 month=sum(r["charged"] for r in rows), held=held)


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


def refusal(store: MemoryStore, account_id: str, budget: CallBudget | None, amount: int,
            at_ms: int) -> Shortfall | None:
    """The shortfall of the first limit without `amount` of headroom, else None."""
    for source, scope, scope_id, column, value, limits in _scopes(account_id, budget):
        spend = _spend(store, scope, scope_id, account_id, column, value, at_ms)
        if not admits(limits, spend, amount):
            room = max(0, headroom(limits, spend) or 0)
            return Shortfall(required=amount, available=room, daily=0, paid=room,
                             limit_source=source)
    return None


def clamped(store: MemoryStore, account_id: str, budget: CallBudget | None, charge: int,
            at_ms: int) -> int:
    """`charge` clamped at every limit's headroom (the call's own hold already released)."""
    for _source, scope, scope_id, column, value, limits in _scopes(account_id, budget):
        charge = clamp(charge, limits, _spend(store, scope, scope_id, account_id, column,
                                               value, at_ms))
    return charge


def record_settled(store: MemoryStore, record: CallRecord, charged: int, at_ms: int,
                   counted: bool) -> None:
    """Add a settled call to the one rollup (usage, cost, key spend; `counted`: the lease
    sweep already counted it, so it counts in `late`) and its charge to its end user's daily
    spend."""
    day = day_start_ms(at_ms)
    priced = record.provider is not None
    roll_up(store, (record.account_id, day, record.operation, record.provider or "",
                    record.model or "", record.key_id or ""),
            calls=0 if counted else 1, late=1 if counted else 0, charged=charged,
            unpriced=1 if priced and record.total_cost is None else 0,
            prompt_tokens=record.input_tokens, completion_tokens=record.output_tokens,
            cost=record.total_cost or 0)
    if charged and record.end_user is not None:
        scope_id = end_user_scope_id(record.account_id, record.end_user)
        spent = store.spend_daily.setdefault((END_USER_SCOPE, scope_id, day), {
            "scope": END_USER_SCOPE, "scope_id": scope_id, "day_ms": day, "charged": 0})
        spent["charged"] += charged


def _matches(r: dict[str, Any], q: CostQuery) -> bool:
    return ((q.account_id is None or r["account_id"] == q.account_id)
            and q.from_ms <= r["created_at_ms"] < q.to_ms and r["outcome"] != IN_FLIGHT
            and r.get("provider") is not None
            and (q.key_id is None or r.get("key_id") == q.key_id)
            and (q.end_user is None or r.get("end_user") == q.end_user))


def cost_records(store: MemoryStore, q: CostQuery, limit: int,
                 after: tuple[int, str] | None) -> list[dict[str, Any]]:
    """Settled records with a provider matching `q`, newest first, below `after`."""
    rows = [r for r in store.usage_records.values() if _matches(r, q)
            and (after is None or (r["created_at_ms"], r["id"]) < after)]
    rows.sort(key=lambda r: (r["created_at_ms"], r["id"]), reverse=True)
    return [dict(r) for r in rows[:limit]]


def cost_summary(store: MemoryStore, q: CostQuery) -> list[CostGroup]:
    """Cost by (provider, model): from the rollup, or the records when filtered."""
    groups: dict[tuple[str, str], list[int]] = {}
    if q.filtered:
        for r in store.usage_records.values():
            if _matches(r, q):
                g = groups.setdefault((r["provider"], r["model"] or ""), [0] * 6)
                g[0] += 1
                g[1] += 1 if r.get("total_cost") is None else 0
                g[2] += r["input_tokens"]
                g[3] += r["output_tokens"]
                g[4] += r.get("total_cost") or 0
                g[5] += r["charged"]
    else:
        for row in store.usage_daily.values():
            if (row["provider"] and (q.account_id is None or row["account_id"] == q.account_id)
                    and day_start_ms(q.from_ms) <= row["day_ms"] < q.to_ms):
                g = groups.setdefault((row["provider"], row["model"]), [0] * 6)
                g[0] += row["calls"] + row["late"]
                for i, col in enumerate(("unpriced", "prompt_tokens", "completion_tokens",
                                         "cost", "charged"), 1):
                    g[i] += row[col]
    return [CostGroup(p, m, *g) for (p, m), g in sorted(groups.items())]


def cost_by_day(store: MemoryStore, account_id: str | None, from_ms: int,
                to_ms_: int) -> list[CostDay]:
    """Per-UTC-day totals of the cost rollup for the days of [from, to), oldest first."""
    days: dict[int, list[int]] = {}
    for row in store.usage_daily.values():
        if (row["provider"] and (account_id is None or row["account_id"] == account_id)
                and day_start_ms(from_ms) <= row["day_ms"] < to_ms_):
            d = days.setdefault(row["day_ms"], [0, 0, 0])
            d[0] += row["calls"] + row["late"]
            d[1] += row["cost"]
            d[2] += row["charged"]
    return [CostDay(day, *d) for day, d in sorted(days.items())]


def usage_summary_filtered(store: MemoryStore, account_id: str, from_ms: int, to_ms_: int,
                           key_id: str | None, end_user: str | None
                           ) -> list[tuple[str, int, int, int]]:
    """(operation, UTC day ms, Σ charged, calls) of the matching settled records."""
    groups: dict[tuple[str, int], list[int]] = {}
    for r in store.usage_records.values():
        if (r["account_id"] == account_id and r["outcome"] != IN_FLIGHT
                and day_start_ms(from_ms) <= r["created_at_ms"] < to_ms_
                and (key_id is None or r.get("key_id") == key_id)
                and (end_user is None or r.get("end_user") == end_user)):
            g = groups.setdefault((r["operation"], day_start_ms(r["created_at_ms"])), [0, 0])
            g[0] += r["charged"]
            g[1] += 1
    return [(op, day, charged, calls) for (op, day), (charged, calls) in groups.items()]
