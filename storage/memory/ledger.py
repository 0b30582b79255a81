"""The in-memory adapter of the ports Ledger, Accounts, EventLog and Inspection
(storage.ports), on a `MemoryStore`; the money rules are storage.engine's.

It answers as storage.sql.ledger.SqlLedger does — the contract suite
(tests/integration/test_ledger_contract.py and friends) runs unchanged against both — and
keeps, like each SQL gateway process, its own hold leases: several `MemoryLedger`s on one store
behave as several processes on one database. Amounts are ledger units (ms); times UTC epoch ms.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from storage.clock import MS_PER_SECOND, Clock, day_start_ms, now_ms, to_datetime, to_ms
from storage.engine import bonus
from storage.engine.availability import Funds, available, funds, wants_top_up
from storage.engine.buckets import CREDIT_EVENT_FOR_SOURCE, EventType, Source
from storage.engine.budgets import Limits
from storage.engine.burn_down import ShortfallRule, plan_debit, settle_debit
from storage.engine.events import BALANCE_UPDATED, balance_data
from storage.ids import hash_key, new_id, new_sequential_id
from storage.memory import costs
from storage.memory.store import MemoryStore, Row, as_bucket
from storage.ports import (
    IN_FLIGHT,
    INTERRUPTED,
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
)

KEY_PREFIX = "gw_"


class MemoryLedger:
    """Ledger, Accounts, EventLog and Inspection in this process. `store` (default: a new
    one) may be shared by several ledgers; `clock` (epoch ms) stamps every operation;
    `lease_s` is a hold's lease."""

    def __init__(self, store: MemoryStore | None = None, lease_s: float = 30.0,
                 clock: Clock = now_ms) -> None:
        self.store = store if store is not None else MemoryStore()
        self.lease_s = lease_s
        self.clock = clock
        self._leases: dict[str, int] = {}  # hold id -> last moment (epoch ms) to renew it

    @property
    def on_commit(self) -> EventSink | None:
        return self.store.on_commit

    @on_commit.setter
    def on_commit(self, sink: EventSink | None) -> None:
        self.store.on_commit = sink

    def _done(self) -> None:
        self.store.commit()

    async def ping(self) -> None:
        """Always reachable."""

    async def close(self) -> None:
        """Nothing to release."""

    # ---- Accounts ----------------------------------------------------------------------------

    async def create_account(self, plan: PlanTerms, account_id: str | None = None) -> str:
        s, at = self.store, self.clock()
        account_id = account_id or new_id("acct")
        if account_id in s.accounts:
            raise ValueError(f"account {account_id!r} already exists")
        s.accounts[account_id] = {
            "id": account_id, "plan_key": plan.key, "subscription_status": "none", "debt": 0,
            "created_at_ms": at, "event_seq": 0, "stripe_customer_id": None,
            "stripe_subscription_id": None, "subscription_key": None,
            "subscription_event_at_ms": 0, "pending_plan_key": None,
            "pending_effective_at_ms": None, "auto_topup_threshold": None,
            "default_payment_method_id": None,
            "low_balance_threshold": None, "balance_alert": "ok"}
        if plan.welcome_bonus > 0:
            s.credit(account_id, Source.WELCOME, plan.welcome_bonus, "welcome_bonus", None,
                     "welcome bonus", at)
            s.emit_balance(account_id, at, EventType.WELCOME_BONUS.value)
        self._done()
        return account_id

    async def account_exists(self, account_id: str) -> bool:
        return account_id in self.store.accounts

    async def create_api_key(self, account_id: str,
                             limits: Limits | None = None) -> tuple[str, str]:
        self.store.account(account_id)
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        key_id = new_id("key")
        limits = limits or Limits()
        self.store.key_hashes[hash_key(key)] = key_id
        self.store.api_keys[key_id] = {
            "id": key_id, "account_id": account_id, "key_hash": hash_key(key),
            "prefix": key[:10], "created_at_ms": self.clock(), "revoked_at_ms": None,
            "limit_day": limits.day, "limit_month": limits.month}
        return key_id, key

    async def set_key_limits(self, key_id: str, limits: Limits) -> str | None:
        row = self.store.api_keys.get(key_id)
        if row is None or row["revoked_at_ms"] is not None:
            return None
        row["limit_day"], row["limit_month"] = limits.day, limits.month
        return str(row["account_id"])

    async def revoke_api_key(self, key_id: str) -> bool:
        row = self.store.api_keys.get(key_id)
        if row is None or row["revoked_at_ms"] is not None:
            return False
        row["revoked_at_ms"] = self.clock()
        return True

    async def resolve_key(self, key: str) -> ResolvedKey | None:
        return await self.resolve_key_hash(hash_key(key))

    async def resolve_key_hash(self, key_hash: str) -> ResolvedKey | None:
        key_id = self.store.key_hashes.get(key_hash)
        row = None if key_id is None else self.store.api_keys[key_id]
        if row is None or row["revoked_at_ms"] is not None:
            return None
        return ResolvedKey(row["account_id"], self.store.accounts[row["account_id"]]["plan_key"],
                           row["id"], Limits(row["limit_day"], row["limit_month"]))

    async def list_accounts(self, limit: int, after_id: str | None,
                            plan_key: str | None) -> list[dict[str, Any]]:
        rows = sorted(self.store.accounts.values(), key=lambda r: r["id"])
        return [dict(r) for r in rows
                if (after_id is None or r["id"] > after_id)
                and (plan_key is None or r["plan_key"] == plan_key)][:limit]

    async def account_keys(self, account_id: str) -> list[dict[str, Any]]:
        rows = [r for r in self.store.api_keys.values() if r["account_id"] == account_id]
        return [{k: r[k] for k in ("id", "prefix", "created_at_ms", "revoked_at_ms",
                                   "limit_day", "limit_month")}
                for r in sorted(rows, key=lambda r: r["created_at_ms"])]

    # ---- admission, holds, settlement --------------------------------------------------------

    def _funds(self, account_id: str, at_ms: int) -> Funds:
        s = self.store
        return funds([as_bucket(b) for b in s.bucket_rows(account_id)],
                     s.account_holds(account_id), s.accounts[account_id]["debt"], at_ms)

    def _ensure_daily(self, account_id: str, plan: PlanTerms, at_ms: int) -> None:
        s = self.store
        s.account(account_id)
        if plan.daily_bonus <= 0:
            return
        now = to_datetime(at_ms)
        if s.entry_under(account_id, bonus.daily_idempotency_key(now)) is not None:
            return
        granted = bonus.granted_in_month(
            ((to_datetime(e["created_at_ms"]), e["delta"]) for e in s.account_entry_rows(account_id)
             if e["event_type"] == EventType.DAILY_BONUS.value), now)
        grant = bonus.daily_grant(now, plan.daily_bonus, plan.monthly_bonus_cap, granted)
        if grant is not None:
            s.credit(account_id, Source.DAILY, grant.amount, grant.key,
                     to_ms(grant.expires_at), "daily bonus", at_ms)
            s.emit_balance(account_id, at_ms, EventType.DAILY_BONUS.value)

    async def ensure_daily_bonus(self, account_id: str, plan: PlanTerms,
                                 at_ms: int | None = None) -> bool:
        self._ensure_daily(account_id, plan, self.clock() if at_ms is None else at_ms)
        self._done()
        return True

    async def admit(
        self, account_id: str, amount: int, operation: str, ttl_s: float, plan: PlanTerms, *,
        request_id: str | None = None, model: str | None = None, streamed: bool = False,
        budget: CallBudget | None = None,
    ) -> Admission | Shortfall:
        s, at = self.store, self.clock()
        self._ensure_daily(account_id, plan, at)
        self._done()
        refused = costs.refusal(s, account_id, budget, amount, at)
        if refused is not None:
            return refused
        f = self._funds(account_id, at)
        if not f.covers(amount):
            shown, daily, paid = f.shortfall()
            return Shortfall(required=amount, available=shown, daily=daily, paid=paid)
        if request_id is not None and request_id in s.usage_records:
            raise ValueError(f"usage record {request_id!r} already exists")
        hold_id = new_sequential_id("hold")
        s.holds[hold_id] = {"id": hold_id, "account_id": account_id, "amount": amount,
                            "operation": operation, "created_at_ms": at,
                            "expires_at_ms": at + int(self.lease_s * MS_PER_SECOND),
                            "request_id": request_id,
                            "key_id": budget.key_id if budget else None,
                            "end_user": budget.end_user if budget else None}
        if request_id is not None:
            s.usage_records[request_id] = _usage_row(
                request_id, account_id, operation, model, None, 0, (0, 0, 0, 0), amount, 0, 0,
                "none", streamed, IN_FLIGHT, at)
            if budget is not None:
                s.usage_records[request_id].update(key_id=budget.key_id,
                                                   end_user=budget.end_user)
        self._leases[hold_id] = at + int(ttl_s * MS_PER_SECOND)
        return Admission(hold_id=hold_id, amount=amount, available_after=f.available - amount)

    async def extend_hold(self, account_id: str, hold_id: str, new_amount: int,
                          ttl_s: float) -> bool:
        s, at = self.store, self.clock()
        s.account(account_id)
        hold = s.holds.get(hold_id)
        if hold is None or hold["expires_at_ms"] <= at:
            return False
        current = hold["amount"]
        if new_amount > current and not self._funds(account_id, at).covers(new_amount - current):
            return False
        hold["amount"] = max(new_amount, current)
        hold["expires_at_ms"] = at + int(self.lease_s * MS_PER_SECOND)
        if hold_id in self._leases:
            self._leases[hold_id] = max(self._leases[hold_id], at + int(ttl_s * MS_PER_SECOND))
        return True

    async def settle(self, hold_id: str | None, record: CallRecord, charge: int,
                     on_shortfall: ShortfallRule,
                     budget: CallBudget | None = None) -> Settlement:
        s, at = self.store, self.clock()
        account_id = record.account_id
        account = s.account(account_id)
        if hold_id is not None:
            self._leases.pop(hold_id, None)
        opened = s.usage_records.get(record.request_id)
        replay = opened is not None and opened["outcome"] not in (IN_FLIGHT, INTERRUPTED)
        hold = s.holds.pop(hold_id, None) if hold_id is not None else None
        allowed = costs.clamped(s, account_id, budget, charge, at)
        if hold is not None:
            s.holds[hold["id"]] = hold  # written below, once decided
        live = s.live_buckets(account_id, at)
        settled = None if replay else settle_debit(
            [as_bucket(b) for b in live], allowed, account["debt"], to_datetime(at), on_shortfall)
        # Decided: now write (the event sequence moves even for a replay, as in SQL).
        account["event_seq"] += 1
        seq = account["event_seq"]
        if hold_id is not None:
            s.holds.pop(hold_id, None)
        if settled is None:
            return Settlement(charged=0, unbilled=0, remaining=0, replayed=True)
        plan = settled.plan
        for a in plan.allocations:
            s.buckets[a.bucket_id]["remaining"] -= a.amount
        account["debt"] = settled.debt
        if settled.charged:
            meta: dict[str, Any] = {"operation": record.operation, "model": record.model,
                                    "usage_source": record.usage_source}
            if plan.shortfall:
                meta["shortfall"] = plan.shortfall
                meta["shortfall_rule"] = on_shortfall
            s.add_entry(account_id, EventType.CONSUMPTION, -settled.charged,
                        "call:" + record.request_id,
                        f"{record.operation} ({record.usage_source} usage)", at, meta,
                        [(a.bucket_id, a.amount) for a in plan.allocations])
        held = s.held(account_id, at)
        after = [(b["source"], b["remaining"]) for b in live]
        data = balance_data(after, held, settled.debt, EventType.CONSUMPTION.value)
        data["charged_ms"] = settled.charged
        counted = opened is not None and opened["outcome"] == INTERRUPTED
        unbilled = settled.unbilled + charge - allowed
        s.usage_records[record.request_id] = row = _usage_row(
            record.request_id, account_id, record.operation, record.model,
            record.upstream_status, record.duration_ms,
            (record.input_tokens, record.output_tokens, record.cached_tokens,
             record.reasoning_tokens), record.estimated, settled.charged, unbilled,
            record.usage_source, bool(record.streamed), record.outcome, at)
        row.update({k: getattr(record, k) for k in COST_COLUMNS})
        costs.record_settled(s, record, settled.charged, at, counted)
        s.queue(AccountEvent(account_id, seq, BALANCE_UPDATED, data, at))  # live only
        s.check_alerts(account_id, at)
        self._done()
        remaining = available(sum(r for _, r in after), held, settled.debt)
        return Settlement(charged=settled.charged, unbilled=unbilled,
                          remaining=remaining,
                          top_up=wants_top_up(remaining, account["auto_topup_threshold"]))

    async def release(self, hold_id: str) -> None:
        self._leases.pop(hold_id, None)
        hold = self.store.holds.pop(hold_id, None)
        if hold is not None and hold["request_id"] is not None:
            record = self.store.usage_records.get(hold["request_id"])
            if record is not None and record["outcome"] == IN_FLIGHT:
                del self.store.usage_records[hold["request_id"]]

    async def renew_leases(self, at_ms: int | None = None) -> int:
        """Renew this ledger's in-flight holds (those still within their route's ttl and not
        lapsed), then sweep every ledger's holds lapsed for over a lease (their calls' records
        closed `interrupted`, counted in the rollup of `at_ms`), as SqlLedger does."""
        s = self.store
        at = self.clock() if at_ms is None else at_ms
        lease_ms = int(self.lease_s * MS_PER_SECOND)
        for hold_id in [h for h, last in self._leases.items() if last <= at]:
            del self._leases[hold_id]
        renewed = 0
        for hold_id in list(self._leases):  # own holds first, so a late tick never sweeps them
            mine = s.holds.get(hold_id)
            if mine is not None and mine["expires_at_ms"] > at:
                mine["expires_at_ms"] = at + lease_ms
                renewed += 1
            else:
                del self._leases[hold_id]
        for hold in [h for h in s.holds.values() if h["expires_at_ms"] <= at - lease_ms]:
            del s.holds[hold["id"]]
            record = s.usage_records.get(hold["request_id"] or "")
            if record is not None and record["outcome"] == IN_FLIGHT:
                record.update(outcome=INTERRUPTED, charged=0, unbilled=record["estimated"],
                              created_at_ms=at)
                costs.roll_up(s, (record["account_id"], day_start_ms(at), record["operation"],
                                  "", record.get("model") or "", record.get("key_id") or ""),
                              calls=1)
        return renewed

    # ---- grants ------------------------------------------------------------------------------

    async def grant(self, account_id: str, source: Source, amount: int, key: str,
                    expires_at_ms: int | None, reason: str,
                    metadata: dict[str, Any] | None = None,
                    event_type: EventType | None = None) -> GrantResult:
        s, at = self.store, self.clock()
        kind = event_type or CREDIT_EVENT_FOR_SOURCE[source]
        s.account(account_id)
        prior = s.entry_under(account_id, key)
        if prior is not None:
            allocations = s.allocations[prior["id"]]
            bucket_id = allocations[0]["bucket_id"] if allocations else None
            bucket_source = None if bucket_id is None else s.buckets[bucket_id]["source"]
            if (prior["event_type"], prior["delta"], prior["reason"], bucket_source) != (
                    kind.value, amount, reason, source.value):
                raise IdempotencyConflict(key)
            return GrantResult(entry_id=prior["id"], bucket_id=bucket_id,
                               amount=prior["delta"], replayed=True, metadata=_meta(prior))
        result = s.credit(account_id, source, amount, key, expires_at_ms, reason, at, metadata,
                          event_type)
        s.emit_balance(account_id, at, kind.value)
        self._done()
        return result

    async def adjust_down(self, account_id: str, amount: int, key: str,
                          reason: str) -> GrantResult:
        s, at = self.store, self.clock()
        if amount <= 0:
            raise ValueError(f"adjustment amount must be > 0, got {amount}")
        s.account(account_id)
        prior = s.entry_under(account_id, key)
        if prior is not None:
            meta = _meta(prior)
            requested = -prior["delta"] + int(meta.get("unrecovered", 0))
            if (prior["event_type"], prior["delta"] <= 0, requested, prior["reason"]) != (
                    EventType.ADJUSTMENT.value, True, amount, reason):
                raise IdempotencyConflict(key)
            return GrantResult(entry_id=prior["id"], bucket_id=None, amount=-prior["delta"],
                               replayed=True, metadata=meta)
        plan = plan_debit([as_bucket(b) for b in s.live_buckets(account_id, at)], amount,
                          to_datetime(at))
        for a in plan.allocations:
            s.buckets[a.bucket_id]["remaining"] -= a.amount
        meta = {"unrecovered": plan.shortfall} if plan.shortfall else {}
        entry_id = s.add_entry(account_id, EventType.ADJUSTMENT, -plan.covered, key, reason,
                               at, meta or None,
                               [(a.bucket_id, a.amount) for a in plan.allocations])
        if plan.covered:
            s.emit_balance(account_id, at, EventType.ADJUSTMENT.value)
        self._done()
        return GrantResult(entry_id=entry_id, bucket_id=None, amount=plan.covered,
                           metadata=meta)

    # ---- reads -------------------------------------------------------------------------------

    async def balance(self, account_id: str) -> BalanceSnapshot:
        s, at = self.store, self.clock()
        account = s.account(account_id)
        now = to_datetime(at)
        granted = bonus.granted_in_month(
            ((to_datetime(e["created_at_ms"]), e["delta"]) for e in s.account_entry_rows(account_id)
             if e["event_type"] == EventType.DAILY_BONUS.value), now)
        entries = s.account_entries.get(account_id)
        return BalanceSnapshot(
            account_id=account_id, version=entries[-1] if entries else 0,
            plan_key=account["plan_key"], subscription_status=account["subscription_status"],
            buckets=[BucketView(b["id"], b["source"], b["remaining"], b["amount"],
                                b["expires_at_ms"], b["created_at_ms"])
                     for b in s.burn_ordered(account_id, at)],
            held=s.held(account_id, at), debt=account["debt"], daily_granted_this_month=granted,
            now_ms=at, pending_plan_key=account["pending_plan_key"],
            pending_effective_at_ms=account["pending_effective_at_ms"])

    async def events(self, account_id: str, limit: int,
                     before_id: int | None) -> list[dict[str, Any]]:
        rows = [e for e in reversed(self.store.account_entry_rows(account_id))
                if before_id is None or e["id"] < before_id][:limit]
        return [{k: e[k] for k in ("id", "event_type", "delta", "reason", "metadata_json",
                                   "created_at_ms")} for e in rows]

    async def usage(self, account_id: str, limit: int = 50) -> list[dict[str, Any]]:
        rows = [r for r in self.store.usage_records.values() if r["account_id"] == account_id]
        rows.sort(key=lambda r: (r["created_at_ms"], r["id"]), reverse=True)
        return [dict(r) for r in rows[:limit]]

    async def usage_summary(self, account_id: str, from_ms: int, to_ms_: int,
                            key_id: str | None = None,
                            end_user: str | None = None) -> list[tuple[str, int, int, int]]:
        if key_id is not None or end_user is not None:
            return costs.usage_summary_filtered(self.store, account_id, from_ms, to_ms_,
                                                key_id, end_user)
        rows = costs.usage_by_day(self.store, account_id, day_start_ms(from_ms), to_ms_)
        return [(op, day, charged, calls) for (day, op), (calls, charged) in rows.items()]

    async def cost_records(self, query: CostQuery, limit: int,
                           after: tuple[int, str] | None) -> list[dict[str, Any]]:
        return costs.cost_records(self.store, query, limit, after)

    async def cost_by_day(self, account_id: str | None, from_ms: int,
                          to_ms_: int) -> list[CostDay]:
        return costs.cost_by_day(self.store, account_id, from_ms, to_ms_)

    async def cost_summary(self, query: CostQuery) -> list[CostGroup]:
        return costs.cost_summary(self.store, query)

    async def usage_stats(self, from_ms: int, to_ms_: int, by: str) -> list[dict[str, Any]]:
        column = by if by in ("model", "key_id", "end_user") else "operation"
        groups: dict[Any, dict[str, Any]] = {}
        for r in self.store.usage_records.values():
            if not from_ms <= r["created_at_ms"] < to_ms_ or r["outcome"] == IN_FLIGHT:
                continue
            g = groups.setdefault(r.get(column), {
                "key": r.get(column), "calls": 0, "input_tokens": 0, "output_tokens": 0,
                "charged_ms": 0, "unbilled_ms": 0})
            g["calls"] += 1
            g["input_tokens"] += r["input_tokens"]
            g["output_tokens"] += r["output_tokens"]
            g["charged_ms"] += r["charged"]
            g["unbilled_ms"] += r["unbilled"]
        return sorted(groups.values(), key=lambda g: (g["key"] is not None, g["key"] or ""))

    # ---- EventLog ----------------------------------------------------------------------------

    async def stream_position(self, account_id: str) -> tuple[int, int] | None:
        account = self.store.accounts.get(account_id)
        if account is None:
            return None
        log = self.store.events.get(account_id)
        current = account["event_seq"]
        return current, log[0].seq if log else current + 1

    async def catch_up(self, account_id: str, after_seq: int,
                       limit: int) -> tuple[list[AccountEvent], int]:
        account = self.store.accounts.get(account_id)
        return (await self.events_after(account_id, after_seq, limit),
                0 if account is None else account["event_seq"])

    async def events_after(self, account_id: str, after_seq: int,
                           limit: int) -> list[AccountEvent]:
        return [e for e in self.store.events.get(account_id, ()) if e.seq > after_seq][:limit]

    async def prune_events(self, before_ms: int) -> int:
        pruned = 0
        for account_id, log in self.store.events.items():
            kept = [e for e in log if e.at_ms >= before_ms]
            pruned += len(log) - len(kept)
            self.store.events[account_id] = kept
        return pruned

    # ---- Inspection --------------------------------------------------------------------------

    async def totals(self, account_id: str) -> dict[str, int]:
        s, at = self.store, self.clock()
        return {"remaining": sum(b["remaining"] for b in s.bucket_rows(account_id)),
                "debt": s.account(account_id)["debt"],
                "deltas": sum(e["delta"] for e in s.account_entry_rows(account_id)),
                "holds": sum(1 for h in s.account_holds(account_id) if h.is_live(at))}

    async def entry_rows(self, account_id: str) -> list[dict[str, Any]]:
        return [dict(e) for e in self.store.account_entry_rows(account_id)]

    async def bucket_rows(self, account_id: str) -> list[dict[str, Any]]:
        rows = self.store.bucket_rows(account_id)
        return [dict(b) for b in sorted(rows, key=lambda b: (b["created_at_ms"], b["id"]))]

    async def allocation_rows(self, account_id: str, key: str) -> list[tuple[str, str, int]]:
        entry = self.store.entry_under(account_id, key)
        if entry is None:
            return []
        return [(a["bucket_id"], self.store.buckets[a["bucket_id"]]["source"], a["amount"])
                for a in self.store.allocations[entry["id"]]]

    async def usage_row(self, request_id: str) -> dict[str, Any] | None:
        row = self.store.usage_records.get(request_id)
        return None if row is None else dict(row)

    async def rollup_rows(self, account_id: str) -> list[tuple[str, int, int]]:
        rows = costs.usage_by_day(self.store, account_id, 0, 2**63)
        return [(op, calls, charged) for (_day, op), (calls, charged) in rows.items()]

    async def account_row(self, account_id: str) -> dict[str, Any]:
        return dict(self.store.account(account_id))

    async def api_key_rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.store.api_keys.values()]


def _meta(entry: Row) -> dict[str, Any]:
    return dict(json.loads(entry["metadata_json"])) if entry["metadata_json"] else {}


def _usage_row(request_id: str, account_id: str, operation: str, model: str | None,
               upstream_status: int | None, duration_ms: int,
               tokens: tuple[int, int, int, int], estimated: int, charged: int, unbilled: int,
               usage_source: str, streamed: bool, outcome: str, at_ms: int) -> Row:
    """A usage record row (the columns of `usage_records`)."""
    input_tokens, output_tokens, cached_tokens, reasoning_tokens = tokens
    return {"id": request_id, "account_id": account_id, "operation": operation,
            "model": model, "upstream_status": upstream_status, "duration_ms": duration_ms,
            "input_tokens": input_tokens, "output_tokens": output_tokens,
            "cached_tokens": cached_tokens, "reasoning_tokens": reasoning_tokens,
            "estimated": estimated, "charged": charged, "unbilled": unbilled,
            "usage_source": usage_source, "streamed": streamed, "outcome": outcome,
            "created_at_ms": at_ms, **dict.fromkeys(COST_COLUMNS), "cache_write_tokens": 0}


# The usage record's provider-cost columns, as CallRecord names them (issue 10).
COST_COLUMNS = ("provider", "key_id", "end_user", "cache_write_tokens", "prompt_cost",
                "completion_cost", "total_cost", "cost_reason", "price_version")

