"""The ledger operations on the request path, as fixed SQL on a DB-API cursor.

Profiling showed SQLAlchemy's statement building and cache-key generation taking ~80 % of the
gateway's CPU per call when admission and settlement were written in Core; the same statements
as pre-rendered SQL cost a fraction. These functions mirror `storage.sql.ledger`'s Core versions
(the same tables, locks and rules; the contract tests run both paths) and take
`(cur, pg, *args)`: a DB-API cursor inside an open transaction and whether it is PostgreSQL.
Placeholders are written `?` and rendered `$n` for asyncpg. Amounts: ledger units (ms).
"""

from __future__ import annotations

import json
from typing import Any

from storage.buckets import Bucket, EventType, Source
from storage.burn_down import plan_debit
from storage.ports import Admission, CallRecord, Settlement, Shortfall, UnknownAccount
from storage.sql.ledger import ShortfallRule, new_sequential_id, to_datetime


class _Sql:
    """One statement in both paramstyles (`?` for sqlite3, `$n` for asyncpg)."""

    __slots__ = ("lite", "pg")

    def __init__(self, text: str, pg_suffix: str = "") -> None:
        self.lite = text
        parts = text.split("?")
        self.pg = parts[0] + "".join(f"${i}{p}" for i, p in enumerate(parts[1:], 1)) + pg_suffix

    def __call__(self, pg: bool) -> str:
        return self.pg if pg else self.lite


_LOCK = _Sql("SELECT plan_key, debt FROM accounts WHERE id = ?", " FOR UPDATE")
_FUNDS = _Sql(
    "SELECT"
    " (SELECT COALESCE(SUM(remaining), 0) FROM buckets WHERE account_id = ? AND remaining > 0"
    "   AND (expires_at_ms IS NULL OR expires_at_ms > ?)),"
    " (SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = ? AND expires_at_ms > ?),"
    " (SELECT COALESCE(SUM(remaining), 0) FROM buckets WHERE account_id = ? AND remaining > 0"
    "   AND source = 'daily' AND expires_at_ms > ?)"
)
_HELD = _Sql("SELECT COALESCE(SUM(amount), 0) FROM holds WHERE account_id = ? AND expires_at_ms > ?")
_LIVE = _Sql(
    "SELECT id, source, remaining, expires_at_ms, created_at_ms FROM buckets"
    " WHERE account_id = ? AND remaining > 0 AND (expires_at_ms IS NULL OR expires_at_ms > ?)"
)
_SWEEP_HOLDS = _Sql("DELETE FROM holds WHERE expires_at_ms <= ?")
_INSERT_HOLD = _Sql(
    "INSERT INTO holds (id, account_id, amount, operation, created_at_ms, expires_at_ms)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
_HOLD_AMOUNT = _Sql("SELECT amount FROM holds WHERE id = ? AND expires_at_ms > ?")
_UPDATE_HOLD = _Sql("UPDATE holds SET amount = ?, expires_at_ms = ? WHERE id = ?")
_DELETE_HOLD = _Sql("DELETE FROM holds WHERE id = ?")
_SETTLED = _Sql("SELECT 1 FROM usage_records WHERE id = ?")
_DEBIT = _Sql("UPDATE buckets SET remaining = remaining - ? WHERE id = ?")
_SET_DEBT = _Sql("UPDATE accounts SET debt = ? WHERE id = ?")
_INSERT_ENTRY = _Sql(
    "INSERT INTO ledger_entries (account_id, event_type, delta, idempotency_key, reason,"
    " metadata_json, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id"
)
_INSERT_ALLOCATION = _Sql("INSERT INTO allocations (entry_id, bucket_id, amount) VALUES (?, ?, ?)")
_INSERT_USAGE = _Sql(
    "INSERT INTO usage_records (id, account_id, operation, model, upstream_status, duration_ms,"
    " input_tokens, output_tokens, cached_tokens, reasoning_tokens, estimated, charged, unbilled,"
    " usage_source, streamed, outcome, created_at_ms)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_RESOLVE_KEY = _Sql(
    "SELECT k.account_id, a.plan_key FROM api_keys k JOIN accounts a ON a.id = k.account_id"
    " WHERE k.key_hash = ? AND k.revoked_at_ms IS NULL"
)


def _lock(cur: Any, pg: bool, account_id: str) -> tuple[str, int]:
    cur.execute(_LOCK(pg), (account_id,))
    row = cur.fetchone()
    if row is None:
        raise UnknownAccount(account_id)
    return row[0], int(row[1])


def resolve_key(cur: Any, pg: bool, key_hash: str) -> tuple[str, str] | None:
    """(account id, plan key) of an active API key with this SHA-256, else None."""
    cur.execute(_RESOLVE_KEY(pg), (key_hash,))
    row = cur.fetchone()
    return None if row is None else (row[0], row[1])


def admit(
    cur: Any, pg: bool, account_id: str, amount: int, operation: str, ttl_ms: int, at_ms: int
) -> Admission | Shortfall:
    """Place a hold of `amount` if available = spendable − holds − debt covers it (SPEC §3),
    else report the shortfall split into daily bonus and the rest. Locks the account row."""
    _plan, debt = _lock(cur, pg, account_id)
    cur.execute(_FUNDS(pg), (account_id, at_ms, account_id, at_ms, account_id, at_ms))
    spendable, held, daily = (int(v) for v in cur.fetchone())
    available = spendable - held - debt
    if amount <= available:
        hold_id = new_sequential_id("hold")
        cur.execute(_INSERT_HOLD(pg), (hold_id, account_id, amount, operation, at_ms,
                                       at_ms + ttl_ms))
        return Admission(hold_id=hold_id, amount=amount, available_after=available - amount)
    shown = max(0, available)
    daily = min(shown, max(0, daily - held))  # holds burn the daily bucket first
    return Shortfall(required=amount, available=shown, daily=daily, paid=shown - daily)


def extend_hold(
    cur: Any, pg: bool, account_id: str, hold_id: str, new_amount: int, ttl_ms: int, at_ms: int
) -> bool:
    """Raise a live hold to `new_amount` when the balance covers the increase; renews expiry.
    False (nothing changed) when it cannot, or the hold is gone."""
    _plan, debt = _lock(cur, pg, account_id)
    cur.execute(_HOLD_AMOUNT(pg), (hold_id, at_ms))
    row = cur.fetchone()
    if row is None:
        return False
    current = int(row[0])
    if new_amount > current:
        cur.execute(_FUNDS(pg), (account_id, at_ms, account_id, at_ms, account_id, at_ms))
        spendable, held, _daily = (int(v) for v in cur.fetchone())
        if new_amount - current > spendable - held - debt:
            return False
    cur.execute(_UPDATE_HOLD(pg), (max(new_amount, current), at_ms + ttl_ms, hold_id))
    return True


def settle(
    cur: Any, pg: bool, hold_id: str | None, record: CallRecord, charge: int,
    on_shortfall: ShortfallRule, at_ms: int,
) -> Settlement:
    """Debit `charge` in burn order, release the hold and write the usage record; idempotent
    by request id. `clamp`: the uncovered rest is unbilled; `overdraft`: it becomes debt."""
    account_id = record.account_id
    _plan, debt = _lock(cur, pg, account_id)
    if hold_id is not None:
        cur.execute(_DELETE_HOLD(pg), (hold_id,))
    key = "call:" + record.request_id
    cur.execute(_SETTLED(pg), (record.request_id,))
    if cur.fetchone() is not None:
        return Settlement(charged=0, unbilled=0, remaining=0, replayed=True)
    cur.execute(_LIVE(pg), (account_id, at_ms))
    rows = cur.fetchall()
    buckets = [
        Bucket(r[0], Source(r[1]), int(r[2]),
               None if r[3] is None else to_datetime(int(r[3])), to_datetime(int(r[4])))
        for r in rows
    ]
    plan = plan_debit(buckets, charge, to_datetime(at_ms))
    clamp = on_shortfall == "clamp"
    unbilled = plan.shortfall if clamp else 0
    debited = plan.covered if clamp else charge
    new_debt = debt if clamp else debt + plan.shortfall
    for a in plan.allocations:
        cur.execute(_DEBIT(pg), (a.amount, a.bucket_id))
    if new_debt != debt:
        cur.execute(_SET_DEBT(pg), (new_debt, account_id))
    if debited:
        meta: dict[str, Any] = {"operation": record.operation, "model": record.model,
                                "usage_source": record.usage_source}
        if plan.shortfall:
            meta["shortfall"] = plan.shortfall
            meta["shortfall_rule"] = on_shortfall
        cur.execute(_INSERT_ENTRY(pg), (
            account_id, EventType.CONSUMPTION.value, -debited, key,
            f"{record.operation} ({record.usage_source} usage)",
            json.dumps(meta, separators=(",", ":")), at_ms))
        entry_id = int(cur.fetchone()[0])
        for a in plan.allocations:
            cur.execute(_INSERT_ALLOCATION(pg), (entry_id, a.bucket_id, a.amount))
    cur.execute(_INSERT_USAGE(pg), (
        record.request_id, account_id, record.operation, record.model, record.upstream_status,
        record.duration_ms, record.input_tokens, record.output_tokens, record.cached_tokens,
        record.reasoning_tokens, record.estimated, debited, unbilled, record.usage_source,
        bool(record.streamed), record.outcome, at_ms))
    cur.execute(_HELD(pg), (account_id, at_ms))
    held = int(cur.fetchone()[0])
    spendable = sum(b.remaining for b in buckets) - plan.covered
    return Settlement(charged=debited, unbilled=unbilled, remaining=spendable - held - new_debt)


_RENEW = _Sql("UPDATE holds SET expires_at_ms = ? WHERE id = ? AND expires_at_ms > ?")


def renew_holds(
    cur: Any, pg: bool, hold_ids: list[str], expires_at_ms: int, at_ms: int
) -> list[str]:
    """Push the expiry of the still-live holds among `hold_ids` to `expires_at_ms` (lease
    renewal; no account lock: a renewal never changes an amount). A hold whose lease already
    lapsed stays lapsed — its balance may be held by another call now. Returns the ids that
    were not renewed."""
    lapsed = []
    for hold_id in hold_ids:
        cur.execute(_RENEW(pg), (expires_at_ms, hold_id, at_ms))
        if cur.rowcount == 0:
            lapsed.append(hold_id)
    return lapsed


def sweep_holds(cur: Any, pg: bool, before_ms: int) -> int:
    """Delete holds whose lease lapsed before `before_ms` (crashed processes' holds; they no
    longer count anyway). Returns how many were deleted."""
    cur.execute(_SWEEP_HOLDS(pg), (before_ms,))
    return int(cur.rowcount)
