"""The SQL ledger: admission, settlement, grants and reads, each one atomic step per account.

Every operation below is one transaction that first locks the account row (`FOR UPDATE` on
PostgreSQL; SQLite's `BEGIN IMMEDIATE` write lock), so admission and settlement are correct with
many gateway processes on one database (SPEC §3). Every money decision comes from the pure
engine (`storage.engine`); this module only reads and writes rows. Amounts are ledger units
(ms of AI time); times are UTC epoch milliseconds.

Invariant kept by every write: Σ buckets.remaining − accounts.debt = Σ ledger_entries.delta.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.engine import Connection

from storage.clock import MS_PER_SECOND, Clock, day_start_ms, now_ms, to_datetime, to_ms
from storage.engine import bonus
from storage.engine.buckets import CREDIT_EVENT_FOR_SOURCE, Bucket, EventType, Source
from storage.engine.budgets import Limits
from storage.engine.burn_down import ShortfallRule, net_credit, plan_debit, priority_key
from storage.engine.events import credit_events
from storage.ids import hash_key, new_id
from storage.ports import (
    IN_FLIGHT,
    AccountEvent,
    Admission,
    BalanceSnapshot,
    BucketView,
    CallBudget,
    CallRecord,
    CostDay,
    CostGroup,
    CostQuery,
    EventSink,
    GrantResult,
    IdempotencyConflict,
    PlanTerms,
    ResolvedKey,
    Settlement,
    Shortfall,
    StoreUnavailable,
    UnknownAccount,
)
from storage.sql import budgets, costs, hot_path, hot_path_pg, inspection
from storage.sql import events as log
from storage.sql.account_batches import AccountBatches
from storage.sql.engine import PG_POOL_SIZE, Runner
from storage.sql.events import emit_balance_tx, emit_tx
from storage.sql.hot_path_pg import SettledPg
from storage.sql.tables import (
    accounts,
    allocations,
    api_keys,
    buckets,
    holds,
    ledger_entries,
    usage_daily,
    usage_records,
)

_log = logging.getLogger("storage.sql.ledger")
KEY_PREFIX = "gw_"


# ---- statements built once (SQLAlchemy caches their compiled form) --------------------------

def _live_bucket_rows(conn: Connection, account_id: str, at_ms: int) -> list[Any]:
    return list(
        conn.execute(
            select(
                buckets.c.id,
                buckets.c.source,
                buckets.c.remaining,
                buckets.c.expires_at_ms,
                buckets.c.created_at_ms,
                buckets.c.amount,
            ).where(
                buckets.c.account_id == account_id,
                buckets.c.remaining > 0,
                or_(buckets.c.expires_at_ms.is_(None), buckets.c.expires_at_ms > at_ms),
            )
        )
    )


def _as_bucket(row: Any) -> Bucket:
    return Bucket(
        id=row.id,
        source=Source(row.source),
        remaining=row.remaining,
        expires_at=None if row.expires_at_ms is None else to_datetime(row.expires_at_ms),
        created_at=to_datetime(row.created_at_ms),
    )


def _lock(conn: Connection, account_id: str) -> Any:
    row = conn.execute(
        select(accounts.c.plan_key, accounts.c.debt, accounts.c.subscription_status)
        .where(accounts.c.id == account_id)
        .with_for_update()
    ).first()
    if row is None:
        raise UnknownAccount(account_id)
    return row


def _held(conn: Connection, account_id: str, at_ms: int) -> int:
    return int(
        conn.execute(
            select(func.coalesce(func.sum(holds.c.amount), 0)).where(
                holds.c.account_id == account_id, holds.c.expires_at_ms > at_ms
            )
        ).scalar_one()
    )


def _entry_exists(conn: Connection, account_id: str, key: str) -> bool:
    return (
        conn.execute(
            select(ledger_entries.c.id).where(
                ledger_entries.c.account_id == account_id,
                ledger_entries.c.idempotency_key == key,
            )
        ).first()
        is not None
    )


def _insert_entry(
    conn: Connection,
    account_id: str,
    event_type: EventType,
    delta: int,
    key: str,
    reason: str,
    at_ms: int,
    metadata: dict[str, Any] | None = None,
) -> int:
    result = conn.execute(
        insert(ledger_entries).values(
            account_id=account_id,
            event_type=event_type.value,
            delta=delta,
            idempotency_key=key,
            reason=reason,
            metadata_json=json.dumps(metadata, separators=(",", ":")) if metadata else None,
            created_at_ms=at_ms,
        )
    )
    pk = result.inserted_primary_key
    assert pk is not None
    return int(pk[0])


def credit_tx(
    conn: Connection,
    account_id: str,
    source: Source,
    amount: int,
    key: str,
    expires_at_ms: int | None,
    reason: str,
    at_ms: int,
    metadata: dict[str, Any] | None = None,
    event_type: EventType | None = None,
    locked: bool = False,
) -> GrantResult:
    """Credit `amount` (> 0) as a new bucket, idempotent by `key`; debt is netted first.

    Returns GrantResult(replayed=True) when `key` was already applied. Raises ValueError for a
    non-positive amount, UnknownAccount for an unknown account.
    """
    if amount <= 0:
        raise ValueError(f"credit amount must be > 0, got {amount}")
    account = _lock(conn, account_id) if not locked else None
    if _entry_exists(conn, account_id, key):
        return GrantResult(entry_id=None, bucket_id=None, amount=amount, replayed=True)
    debt = account.debt if account is not None else int(
        conn.execute(select(accounts.c.debt).where(accounts.c.id == account_id)).scalar_one()
    )
    held, netted = net_credit(amount, debt)
    if netted:
        conn.execute(
            update(accounts).where(accounts.c.id == account_id).values(debt=debt - netted)
        )
    bucket_id = new_id("bkt")
    conn.execute(
        insert(buckets).values(
            id=bucket_id,
            account_id=account_id,
            source=source.value,
            amount=amount,
            remaining=held,
            expires_at_ms=expires_at_ms,
            created_at_ms=at_ms,
        )
    )
    meta = dict(metadata or {})
    if netted:
        meta["debt_netted"] = netted
    entry_id = _insert_entry(
        conn, account_id, event_type or CREDIT_EVENT_FOR_SOURCE[source], amount, key, reason,
        at_ms, meta or None,
    )
    conn.execute(insert(allocations).values(entry_id=entry_id, bucket_id=bucket_id, amount=amount))
    kind = (event_type or CREDIT_EVENT_FOR_SOURCE[source]).value
    for name, data in credit_events(source, bucket_id, amount, expires_at_ms, kind, reason,
                                    netted, meta.get("from_bucket")):
        emit_tx(conn, account_id, name, data, at_ms)
    return GrantResult(entry_id=entry_id, bucket_id=bucket_id, amount=amount, metadata=meta)


def take_tx(conn: Connection, account_id: str, bucket_id: str, amount: int, kind: EventType,
            key: str, reason: str, at_ms: int, metadata: dict[str, Any] | None = None) -> int:
    """Remove `amount` (> 0, ≤ remaining) from one bucket as one ledger entry of type `kind`
    with its allocation (expiry, rollover, clawback). Returns the entry id. Caller holds the
    account lock."""
    conn.execute(update(buckets).where(buckets.c.id == bucket_id)
                 .values(remaining=buckets.c.remaining - amount))
    entry_id = _insert_entry(conn, account_id, kind, -amount, key, reason, at_ms, metadata)
    conn.execute(insert(allocations).values(entry_id=entry_id, bucket_id=bucket_id,
                                            amount=amount))
    return entry_id


def _applied_under(conn: Connection, account_id: str, key: str) -> Any:
    """The ledger entry applied under idempotency `key` (id, event_type, delta, reason,
    metadata_json) with the source and id of a bucket it touched, or None."""
    return conn.execute(
        select(ledger_entries.c.id, ledger_entries.c.event_type, ledger_entries.c.delta,
               ledger_entries.c.reason, ledger_entries.c.metadata_json,
               buckets.c.source, buckets.c.id.label("bucket_id"))
        .select_from(ledger_entries
                     .outerjoin(allocations, allocations.c.entry_id == ledger_entries.c.id)
                     .outerjoin(buckets, buckets.c.id == allocations.c.bucket_id))
        .where(ledger_entries.c.account_id == account_id,
               ledger_entries.c.idempotency_key == key)
        .order_by(allocations.c.id)
    ).first()


def _metadata(row: Any) -> dict[str, Any]:
    return dict(json.loads(row.metadata_json)) if row.metadata_json else {}


def grant_tx(conn: Connection, account_id: str, source: Source, amount: int, key: str,
             expires_at_ms: int | None, reason: str, at_ms: int,
             metadata: dict[str, Any] | None = None,
             event_type: EventType | None = None) -> GrantResult:
    """`credit_tx` followed by balance.updated when it applied (admin and CLI grants).

    Idempotent by `key` as an operator request is (draft-ietf-httpapi-idempotency-key-header):
    the same grant again (amount, source, reason, entry type) returns the original entry and
    bucket with `replayed=True`; the key already applied to anything else raises
    IdempotencyConflict and changes nothing. (The expiry is not compared: a package grant's is
    computed from the time of the request.) Raises ValueError, UnknownAccount."""
    kind = event_type or CREDIT_EVENT_FOR_SOURCE[source]
    _lock(conn, account_id)
    prior = _applied_under(conn, account_id, key)
    if prior is not None:
        if (prior.event_type, prior.delta, prior.reason, prior.source) != (
                kind.value, amount, reason, source.value):
            raise IdempotencyConflict(key)
        return GrantResult(entry_id=prior.id, bucket_id=prior.bucket_id, amount=prior.delta,
                           replayed=True, metadata=_metadata(prior))
    result = credit_tx(conn, account_id, source, amount, key, expires_at_ms, reason, at_ms,
                       metadata, event_type, locked=True)
    emit_balance_tx(conn, account_id, at_ms, kind.value)
    return result


def _daily_granted_this_month(conn: Connection, account_id: str, now: datetime) -> int:
    """Σ daily-bonus credits of `now`'s UTC calendar month (ledger units)."""
    return int(
        conn.execute(
            select(func.coalesce(func.sum(ledger_entries.c.delta), 0)).where(
                ledger_entries.c.account_id == account_id,
                ledger_entries.c.event_type == EventType.DAILY_BONUS.value,
                ledger_entries.c.created_at_ms >= to_ms(bonus.month_start(now)),
            )
        ).scalar_one()
    )


def ensure_daily_bonus_tx(conn: Connection, account_id: str, plan: PlanTerms,
                          at_ms: int) -> bool:
    """Grant today's daily bonus if the plan has one and it was not granted yet (lazy, SPEC §4).

    Returns True when the day is settled (granted now, earlier, or nothing grantable).
    Caller holds the account lock.
    """
    if plan.daily_bonus <= 0:
        return True
    now = to_datetime(at_ms)
    if _entry_exists(conn, account_id, bonus.daily_idempotency_key(now)):
        return True
    granted = _daily_granted_this_month(conn, account_id, now)
    grant = bonus.daily_grant(now, plan.daily_bonus, plan.monthly_bonus_cap, granted)
    if grant is not None:
        credit_tx(
            conn, account_id, Source.DAILY, grant.amount, grant.key, to_ms(grant.expires_at),
            "daily bonus", at_ms, locked=True,
        )
        emit_balance_tx(conn, account_id, at_ms, EventType.DAILY_BONUS.value)
    return True


def create_account_tx(conn: Connection, plan: PlanTerms, at_ms: int,
                      account_id: str | None) -> str:
    """Insert an account on `plan` and credit its welcome bonus (never expires)."""
    account_id = account_id or new_id("acct")
    conn.execute(insert(accounts).values(id=account_id, plan_key=plan.key, debt=0,
                                         created_at_ms=at_ms))
    if plan.welcome_bonus > 0:
        credit_tx(conn, account_id, Source.WELCOME, plan.welcome_bonus, "welcome_bonus", None,
                  "welcome bonus", at_ms, locked=True)
        emit_balance_tx(conn, account_id, at_ms, EventType.WELCOME_BONUS.value)
    return account_id


def create_api_key_tx(conn: Connection, account_id: str, at_ms: int,
                      limits: Limits | None = None) -> tuple[str, str]:
    """Create an API key for the account (with spending `limits`, ledger units). Returns
    (key_id, plaintext key) — shown once."""
    _lock(conn, account_id)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id("key")
    limits = limits or Limits()
    conn.execute(insert(api_keys).values(id=key_id, account_id=account_id, key_hash=hash_key(key),
                                         prefix=key[:10], created_at_ms=at_ms,
                                         limit_day=limits.day, limit_month=limits.month))
    return key_id, key


def revoke_api_key_tx(conn: Connection, key_id: str, at_ms: int) -> bool:
    """Revoke a key by id. Returns False when no active key has that id."""
    result = conn.execute(
        update(api_keys)
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at_ms.is_(None))
        .values(revoked_at_ms=at_ms)
    )
    return bool(result.rowcount)


def release_hold_tx(conn: Connection, hold_id: str) -> None:
    """Drop a hold without charging (e.g. the call never reached the upstream), and the
    `in_flight` usage record its admission opened: no call, no record (as for a 402)."""
    request_id = conn.execute(select(holds.c.request_id).where(holds.c.id == hold_id)).scalar()
    conn.execute(holds.delete().where(holds.c.id == hold_id))
    if request_id is not None:
        conn.execute(usage_records.delete().where(usage_records.c.id == request_id,
                                                  usage_records.c.outcome == IN_FLIGHT))


def balance_tx(conn: Connection, account_id: str, at_ms: int) -> BalanceSnapshot:
    """Read the account's live buckets (burn order), holds, debt and month's daily grants."""
    account = conn.execute(
        select(accounts.c.plan_key, accounts.c.debt, accounts.c.subscription_status,
               accounts.c.pending_plan_key, accounts.c.pending_effective_at_ms)
        .where(accounts.c.id == account_id)
    ).first()
    if account is None:
        raise UnknownAccount(account_id)
    rows = _live_bucket_rows(conn, account_id, at_ms)
    rows.sort(key=lambda r: priority_key(_as_bucket(r)))
    now = to_datetime(at_ms)
    granted = _daily_granted_this_month(conn, account_id, now)
    version = conn.execute(
        select(func.coalesce(func.max(ledger_entries.c.id), 0)).where(
            ledger_entries.c.account_id == account_id)
    ).scalar_one()
    return BalanceSnapshot(
        account_id=account_id,
        version=int(version),
        plan_key=account.plan_key,
        subscription_status=account.subscription_status,
        buckets=[
            BucketView(r.id, r.source, r.remaining, r.amount, r.expires_at_ms, r.created_at_ms)
            for r in rows
        ],
        held=_held(conn, account_id, at_ms),
        debt=account.debt,
        daily_granted_this_month=granted,
        now_ms=at_ms,
        pending_plan_key=account.pending_plan_key,
        pending_effective_at_ms=account.pending_effective_at_ms,
    )


def usage_tx(conn: Connection, account_id: str, limit: int) -> list[dict[str, Any]]:
    """The newest `limit` usage records of the account as dicts (times in epoch ms)."""
    rows = conn.execute(
        select(usage_records)
        .where(usage_records.c.account_id == account_id)
        .order_by(usage_records.c.created_at_ms.desc(), usage_records.c.id.desc())
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


def account_exists_tx(conn: Connection, account_id: str) -> bool:
    """True if the account exists."""
    found = conn.execute(select(accounts.c.id).where(accounts.c.id == account_id)).first()
    return found is not None


def totals_tx(conn: Connection, account_id: str) -> dict[str, int]:
    """Audit sums: Σ remaining (all buckets), debt, Σ ledger deltas, live (unexpired) holds."""
    remaining = conn.execute(
        select(func.coalesce(func.sum(buckets.c.remaining), 0)).where(
            buckets.c.account_id == account_id)).scalar_one()
    deltas = conn.execute(
        select(func.coalesce(func.sum(ledger_entries.c.delta), 0)).where(
            ledger_entries.c.account_id == account_id)).scalar_one()
    debt = conn.execute(select(accounts.c.debt).where(accounts.c.id == account_id)).scalar_one()
    n_holds = conn.execute(
        select(func.count()).select_from(holds).where(
            holds.c.account_id == account_id, holds.c.expires_at_ms > now_ms())
    ).scalar_one()
    return {"remaining": int(remaining), "debt": int(debt), "deltas": int(deltas),
            "holds": int(n_holds)}


def _ensure_daily_locked(conn: Connection, account_id: str, plan: PlanTerms,
                         at_ms: int) -> bool:
    _lock(conn, account_id)
    return ensure_daily_bonus_tx(conn, account_id, plan, at_ms)


class SqlLedger:
    """The SQL adapter of the ports Ledger, Accounts, EventLog and Inspection (storage.ports);
    each method is one atomic transaction. Payments: storage.sql.payments.SqlPayments.

    Construct with a database URL (`sqlite:///…` or `postgresql+asyncpg://…`). Methods raise
    StoreUnavailable when the database is unreachable and UnknownAccount for unknown ids.
    Keeps a small per-process cache of which accounts already had today's daily bonus settled,
    so the hot path skips that lookup (a stale cache only costs one extra idempotent check).
    `clock` (epoch ms, default the wall clock) stamps every operation: hold expiries and leases,
    bucket expiry, the day of the daily bonus. `pool_size`: PostgreSQL connections per process
    (storage.sql.engine.Runner; GATEWAY_DB_POOL_SIZE).
    """

    def __init__(self, url: str, lease_s: float = 30.0,
                 clock: Clock = now_ms, pool_size: int = PG_POOL_SIZE) -> None:
        self.runner = Runner(url, pool_size)
        self.lease_s = lease_s
        self.clock = clock  # epoch ms: the time every operation is stamped with (tests set it)
        self._daily_done: dict[str, str] = {}
        self._leases: dict[str, int] = {}  # hold id -> last moment (epoch ms) to renew it
        # PostgreSQL: concurrent admissions of one account share a statement (group commit),
        # and so do its concurrent settlements
        self.admit_batches: AccountBatches[tuple[Any, ...], Any] | None = None
        self.settle_batches: AccountBatches[hot_path_pg.SettleCall, SettledPg] | None = None
        if not self.runner.sqlite:
            self.admit_batches = AccountBatches(
                self.runner, hot_path_pg.admit_one, hot_path_pg.admit_many)
            self.settle_batches = AccountBatches(
                self.runner, hot_path_pg.settle_one, hot_path_pg.settle_many)

    async def close(self) -> None:
        await self.runner.close()

    async def ping(self) -> None:
        await self.runner.ping()

    @property
    def on_commit(self) -> EventSink | None:
        """Receives each committed transaction's account events (the live fan-out)."""
        return self.runner.on_commit

    @on_commit.setter
    def on_commit(self, sink: EventSink | None) -> None:
        self.runner.on_commit = sink

    async def create_account(self, plan: PlanTerms, account_id: str | None = None) -> str:
        return await self.runner.run(create_account_tx, plan, self.clock(), account_id)

    async def create_api_key(self, account_id: str,
                             limits: Limits | None = None) -> tuple[str, str]:
        return await self.runner.run(create_api_key_tx, account_id, self.clock(), limits)

    async def set_key_limits(self, key_id: str, limits: Limits) -> str | None:
        return await self.runner.run(costs.set_key_limits_tx, key_id, limits)

    async def revoke_api_key(self, key_id: str) -> bool:
        return await self.runner.run(revoke_api_key_tx, key_id, self.clock())

    async def resolve_key(self, key: str) -> ResolvedKey | None:
        return await self.runner.run_raw(hot_path.resolve_key, hash_key(key))

    async def resolve_key_hash(self, key_hash: str) -> ResolvedKey | None:
        return await self.runner.run_raw(hot_path.resolve_key, key_hash)

    async def admit(
        self, account_id: str, amount: int, operation: str, ttl_s: float, plan: PlanTerms, *,
        request_id: str | None = None, model: str | None = None, streamed: bool = False,
        budget: CallBudget | None = None,
    ) -> Admission | Shortfall:
        """Place a hold of `amount` units or report the shortfall; first grants today's daily
        bonus when this process has not settled it for the account today. With `request_id`
        the call's usage record is opened in the same transaction (outcome `in_flight`, see
        hot_path.admit), completed by `settle` or closed as interrupted by the lease sweep."""
        at = self.clock()
        if plan.daily_bonus > 0:
            day = bonus.daily_idempotency_key(to_datetime(at))
            if self._daily_done.get(account_id) != day:
                await self.runner.run(_ensure_daily_locked, account_id, plan, at)
                if len(self._daily_done) > 100_000:
                    self._daily_done.clear()
                self._daily_done[account_id] = day
        ttl_ms = int(self.lease_s * MS_PER_SECOND)
        result: Admission | Shortfall
        if self.admit_batches is not None and not budgets.has_limits(account_id, budget):
            # PostgreSQL, no key or end-user limit: one statement, one round trip (gw_admit),
            # shared with the account's other admissions waiting meanwhile (admit_batches).
            params = hot_path_pg.admit_params(
                account_id, amount, operation, ttl_ms, at, request_id, model, streamed,
                budget.key_id if budget else None, budget.end_user if budget else None)
            result = hot_path_pg.admission_of(
                params, await self.admit_batches.run(account_id, params))
        else:
            result = await self.runner.run_raw(
                budgets.admit, account_id, amount, operation, ttl_ms, at, request_id, model,
                streamed, budget, gather=bool(self._leases))
        if isinstance(result, Admission):
            self._leases[result.hold_id] = at + int(ttl_s * MS_PER_SECOND)
        return result

    async def extend_hold(
        self, account_id: str, hold_id: str, new_amount: int, ttl_s: float
    ) -> bool:
        at = self.clock()
        ok = await self.runner.run_raw(
            hot_path.extend_hold, account_id, hold_id, new_amount,
            int(self.lease_s * MS_PER_SECOND), at)
        if ok and hold_id in self._leases:
            self._leases[hold_id] = max(self._leases[hold_id], at + int(ttl_s * MS_PER_SECOND))
        return ok

    async def settle(
        self, hold_id: str | None, record: CallRecord, charge: int, on_shortfall: ShortfallRule,
        budget: CallBudget | None = None,
    ) -> Settlement:
        if hold_id is not None:
            self._leases.pop(hold_id, None)
        at = self.clock()
        if self.settle_batches is not None and not budgets.has_limits(record.account_id, budget):
            # PostgreSQL, no key or end-user limit: one statement, one round trip (gw_settle),
            # shared with the account's other settlements waiting meanwhile (account_batches);
            # a low-balance crossing (rare) is fired in a second, locked transaction.
            done = await self.settle_batches.run(record.account_id, (
                hot_path_pg.settle_params(hold_id, record, charge, on_shortfall, at),
                self.runner.alert_rules))
            if done.alert is not None:
                balance, rules = done.alert
                try:
                    await self.runner.run_raw(hot_path_pg.fire_alerts, record.account_id,
                                              balance, rules, at)
                except StoreUnavailable:
                    # The settlement is committed: not reported as failed. The alert state is
                    # unchanged, so the account's next balance change finds the crossing again.
                    _log.warning("low-balance alert check failed after settling %s",
                                 record.request_id)
            return done.settlement
        # Other calls in flight in this process: share a commit with them (SQLite group commit).
        return await self.runner.run_raw(
            budgets.settle, hold_id, record, charge, on_shortfall, at, budget,
            self.runner.alert_rules, gather=bool(self._leases))

    async def renew_leases(self, at_ms: int | None = None) -> int:
        """Renew the leases of this process's in-flight holds (call every lease_s / 3 s), then
        sweep every process's holds lapsed for over a lease (their calls' records closed as
        `interrupted`, see hot_path.sweep_holds). Holds past their route's lifetime are no
        longer renewed. `at_ms`: now (injectable for tests). Returns how many were renewed.
        Raises StoreUnavailable."""
        at = self.clock() if at_ms is None else at_ms
        for hold_id in [h for h, last in self._leases.items() if last <= at]:
            del self._leases[hold_id]
        renewed = 0
        ids = list(self._leases)
        if ids:  # renew this process's own holds first, so a late tick never sweeps them
            lapsed = await self.runner.run_raw(
                hot_path.renew_holds, ids, at + int(self.lease_s * MS_PER_SECOND), at)
            for hold_id in lapsed:
                self._leases.pop(hold_id, None)
            renewed = len(ids) - len(lapsed)
        await self.runner.run_raw(hot_path.sweep_holds, at - int(self.lease_s * MS_PER_SECOND), at)
        return renewed

    async def ensure_daily_bonus(self, account_id: str, plan: PlanTerms,
                                 at_ms: int | None = None) -> bool:
        at = self.clock() if at_ms is None else at_ms
        return await self.runner.run(_ensure_daily_locked, account_id, plan, at)

    async def release(self, hold_id: str) -> None:
        self._leases.pop(hold_id, None)
        await self.runner.run(release_hold_tx, hold_id)

    async def grant(
        self,
        account_id: str,
        source: Source,
        amount: int,
        key: str,
        expires_at_ms: int | None,
        reason: str,
        metadata: dict[str, Any] | None = None,
        event_type: EventType | None = None,
    ) -> GrantResult:
        return await self.runner.run(
            grant_tx, account_id, source, amount, key, expires_at_ms, reason, self.clock(),
            metadata, event_type,
        )

    async def balance(self, account_id: str) -> BalanceSnapshot:
        return await self.runner.run(balance_tx, account_id, self.clock())

    async def usage(self, account_id: str, limit: int = 50) -> list[dict[str, Any]]:
        return await self.runner.run(usage_tx, account_id, limit)

    async def account_exists(self, account_id: str) -> bool:
        return await self.runner.run(account_exists_tx, account_id)


    async def adjust_down(self, account_id: str, amount: int, key: str,
                          reason: str) -> GrantResult:
        return await self.runner.run(debit_adjustment_tx, account_id, amount, key, reason,
                                     self.clock())

    async def list_accounts(self, limit: int, after_id: str | None,
                            plan_key: str | None) -> list[dict[str, Any]]:
        return await self.runner.run(list_accounts_tx, limit, after_id, plan_key)

    async def account_keys(self, account_id: str) -> list[dict[str, Any]]:
        return await self.runner.run(account_keys_tx, account_id)

    async def usage_stats(self, from_ms: int, to_ms_: int, by: str) -> list[dict[str, Any]]:
        return await self.runner.run(usage_stats_tx, from_ms, to_ms_, by)

    async def cost_records(self, query: CostQuery, limit: int,
                           after: tuple[int, str] | None) -> list[dict[str, Any]]:
        return await self.runner.run(costs.cost_records_tx, query, limit, after)

    async def cost_by_day(self, account_id: str | None, from_ms: int,
                          to_ms_: int) -> list[CostDay]:
        return await self.runner.run(costs.cost_by_day_tx, account_id, from_ms, to_ms_)

    async def cost_summary(self, query: CostQuery) -> list[CostGroup]:
        return await self.runner.run(costs.cost_summary_tx, query)

    async def events(
        self, account_id: str, limit: int, before_id: int | None
    ) -> list[dict[str, Any]]:
        return await self.runner.run(events_tx, account_id, limit, before_id)

    async def usage_summary(
        self, account_id: str, from_ms: int, to_ms_: int, key_id: str | None = None,
        end_user: str | None = None,
    ) -> list[tuple[str, int, int, int]]:
        if key_id is not None or end_user is not None:
            return await self.runner.run(costs.usage_summary_filtered_tx, account_id, from_ms,
                                         to_ms_, key_id, end_user)
        return await self.runner.run(usage_summary_tx, account_id, from_ms, to_ms_)

    # ---- EventLog ----------------------------------------------------------------------------

    async def stream_position(self, account_id: str) -> tuple[int, int] | None:
        return await self.runner.run(log.stream_position_tx, account_id)

    async def catch_up(self, account_id: str, after_seq: int,
                       limit: int) -> tuple[list[AccountEvent], int]:
        return await self.runner.run(log.catch_up_tx, account_id, after_seq, limit)

    async def events_after(self, account_id: str, after_seq: int,
                           limit: int) -> list[AccountEvent]:
        return await self.runner.run(log.events_after_tx, account_id, after_seq, limit)

    async def prune_events(self, before_ms: int) -> int:
        return await self.runner.run(log.prune_events_tx, before_ms)

    # ---- Inspection (audits and tests) ------------------------------------------------------

    async def totals(self, account_id: str) -> dict[str, int]:
        return await self.runner.run(totals_tx, account_id)

    async def entry_rows(self, account_id: str) -> list[dict[str, Any]]:
        return await self.runner.run(inspection.entry_rows_tx, account_id)

    async def bucket_rows(self, account_id: str) -> list[dict[str, Any]]:
        return await self.runner.run(inspection.bucket_rows_tx, account_id)

    async def allocation_rows(self, account_id: str, key: str) -> list[tuple[str, str, int]]:
        return await self.runner.run(inspection.allocation_rows_tx, account_id, key)

    async def usage_row(self, request_id: str) -> dict[str, Any] | None:
        return await self.runner.run(inspection.usage_row_tx, request_id)

    async def rollup_rows(self, account_id: str) -> list[tuple[str, int, int]]:
        return await self.runner.run(inspection.rollup_rows_tx, account_id)

    async def account_row(self, account_id: str) -> dict[str, Any]:
        return await self.runner.run(inspection.account_row_tx, account_id)

    async def api_key_rows(self) -> list[dict[str, Any]]:
        return await self.runner.run(inspection.api_key_rows_tx)


def events_tx(
    conn: Connection, account_id: str, limit: int, before_id: int | None
) -> list[dict[str, Any]]:
    """Up to `limit` ledger entries of the account, newest first, with ids below `before_id`
    (keyset pagination on the (account_id, id) index: cost independent of history length)."""
    query = (
        select(ledger_entries.c.id, ledger_entries.c.event_type, ledger_entries.c.delta,
               ledger_entries.c.reason, ledger_entries.c.metadata_json,
               ledger_entries.c.created_at_ms)
        .where(ledger_entries.c.account_id == account_id)
        .order_by(ledger_entries.c.id.desc())
        .limit(limit)
    )
    if before_id is not None:
        query = query.where(ledger_entries.c.id < before_id)
    return [dict(r._mapping) for r in conn.execute(query)]


def usage_summary_tx(
    conn: Connection, account_id: str, from_ms: int, to_ms_: int
) -> list[tuple[str, int, int, int]]:
    """(operation, UTC day start ms, Σ charged, number of calls) of the account's usage in the
    UTC days of [from_ms, to_ms_), read from the daily rollup written at settlement: a row per
    day, operation, provider, model and key, whatever the number of calls, summed per day and
    operation."""
    rows = conn.execute(
        select(usage_daily.c.operation, usage_daily.c.day_ms, func.sum(usage_daily.c.charged),
               func.sum(usage_daily.c.calls))
        .where(usage_daily.c.account_id == account_id,
               usage_daily.c.day_ms >= day_start_ms(from_ms),
               usage_daily.c.day_ms < to_ms_)
        .group_by(usage_daily.c.operation, usage_daily.c.day_ms)
    )
    return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]


def debit_adjustment_tx(
    conn: Connection, account_id: str, amount: int, key: str, reason: str, at_ms: int
) -> GrantResult:
    """Take up to `amount` (> 0) units from the live buckets in burn order as an `adjustment`
    entry (support correction, clawback); never below zero — what the buckets lack is reported
    in `metadata["unrecovered"]` (an entry of delta 0 when nothing could be taken, so the key is
    spent all the same). Idempotent by `key`: the same adjustment again (amount, reason) returns
    the original result with `replayed=True`; the key already applied to anything else raises
    IdempotencyConflict. Raises ValueError, UnknownAccount."""
    if amount <= 0:
        raise ValueError(f"adjustment amount must be > 0, got {amount}")
    _lock(conn, account_id)
    prior = _applied_under(conn, account_id, key)
    if prior is not None:
        meta = _metadata(prior)
        requested = -prior.delta + int(meta.get("unrecovered", 0))
        if (prior.event_type, prior.delta <= 0, requested, prior.reason) != (
                EventType.ADJUSTMENT.value, True, amount, reason):
            raise IdempotencyConflict(key)
        return GrantResult(entry_id=prior.id, bucket_id=None, amount=-prior.delta,
                           replayed=True, metadata=meta)
    rows = _live_bucket_rows(conn, account_id, at_ms)
    plan = plan_debit([_as_bucket(r) for r in rows], amount, to_datetime(at_ms))
    for a in plan.allocations:
        conn.execute(update(buckets).where(buckets.c.id == a.bucket_id)
                     .values(remaining=buckets.c.remaining - a.amount))
    meta = {"unrecovered": plan.shortfall} if plan.shortfall else {}
    entry_id = _insert_entry(conn, account_id, EventType.ADJUSTMENT, -plan.covered, key,
                             reason, at_ms, meta or None)
    if plan.covered:
        conn.execute(insert(allocations), [
            {"entry_id": entry_id, "bucket_id": a.bucket_id, "amount": a.amount}
            for a in plan.allocations])
        emit_balance_tx(conn, account_id, at_ms, EventType.ADJUSTMENT.value)
    return GrantResult(entry_id=entry_id, bucket_id=None, amount=plan.covered, metadata=meta)


def list_accounts_tx(
    conn: Connection, limit: int, after_id: str | None, plan_key: str | None
) -> list[dict[str, Any]]:
    """Accounts ordered by id (keyset pages after `after_id`), optionally of one plan."""
    query = select(accounts).order_by(accounts.c.id).limit(limit)
    if after_id is not None:
        query = query.where(accounts.c.id > after_id)
    if plan_key is not None:
        query = query.where(accounts.c.plan_key == plan_key)
    return [dict(r._mapping) for r in conn.execute(query)]


def account_keys_tx(conn: Connection, account_id: str) -> list[dict[str, Any]]:
    """The account's API keys (id, prefix, created, revoked) — never hashes."""
    rows = conn.execute(
        select(api_keys.c.id, api_keys.c.prefix, api_keys.c.created_at_ms,
               api_keys.c.revoked_at_ms, api_keys.c.limit_day, api_keys.c.limit_month)
        .where(api_keys.c.account_id == account_id).order_by(api_keys.c.created_at_ms))
    return [dict(r._mapping) for r in rows]


def usage_stats_tx(conn: Connection, from_ms: int, to_ms_: int, by: str) -> list[dict[str, Any]]:
    """Usage across all accounts in [from_ms, to_ms_) grouped by `model`, `operation`,
    `key_id` or `end_user`:
    calls, input/output tokens, charged and unbilled units (calls still in flight excluded:
    they count once settled or interrupted, as in the daily rollup)."""
    column = usage_records.c[by if by in ("model", "key_id", "end_user") else "operation"]
    rows = conn.execute(
        select(column.label("key"), func.count().label("calls"),
               func.coalesce(func.sum(usage_records.c.input_tokens), 0).label("input_tokens"),
               func.coalesce(func.sum(usage_records.c.output_tokens), 0).label("output_tokens"),
               func.coalesce(func.sum(usage_records.c.charged), 0).label("charged_ms"),
               func.coalesce(func.sum(usage_records.c.unbilled), 0).label("unbilled_ms"))
        .where(usage_records.c.created_at_ms >= from_ms, usage_records.c.created_at_ms < to_ms_,
               usage_records.c.outcome != IN_FLIGHT)
        .group_by(column).order_by(column))
    return [{k: (int(v) if k != "key" else v) for k, v in r._mapping.items()} for r in rows]
