"""The state of the in-memory store and its primitives (one process; storage.memory).

Rows are dicts keyed like the SQL tables' columns (storage/sql/tables.py), so the memory
adapter answers the ports — and the `Inspection` reads — exactly as the SQL adapter does.
Several adapter objects may share one `MemoryStore`, as several gateway processes share one
database (each keeps its own hold leases and clock).

Nothing here awaits: every adapter method runs start to finish without yielding to the loop,
so it is atomic, as a SQL transaction under its account lock is. Methods check everything that
can fail before they write, so a refused operation leaves no trace (a SQL rollback).
The money rules are storage.engine's; this module only keeps rows.
Amounts are ledger units (ms); times UTC epoch ms.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from storage.clock import to_datetime
from storage.engine.alerts import AlertRules, AlertState, alert_data, crossing
from storage.engine.availability import Hold
from storage.engine.buckets import CREDIT_EVENT_FOR_SOURCE, Bucket, EventType, Source
from storage.engine.burn_down import net_credit, priority_key
from storage.engine.events import BALANCE_UPDATED, balance_data, credit_events
from storage.engine.webhooks import PENDING, WEBHOOK_EVENT_TYPES, message_payload
from storage.ids import new_id
from storage.ports import AccountEvent, EventSink, GrantResult, UnknownAccount

Row = dict[str, Any]


def metadata_json(metadata: dict[str, Any] | None) -> str | None:
    """The stored form of entry metadata (as the SQL adapter writes it): compact JSON, or
    None when there is none."""
    return json.dumps(metadata, separators=(",", ":")) if metadata else None


def as_bucket(row: Row) -> Bucket:
    """The engine's Bucket of a bucket row."""
    expires = row["expires_at_ms"]
    return Bucket(row["id"], Source(row["source"]), row["remaining"],
                  None if expires is None else to_datetime(expires),
                  to_datetime(row["created_at_ms"]))


def is_live(row: Row, at_ms: int) -> bool:
    """A bucket row with balance that has not expired at `at_ms` (expiry exclusive)."""
    return row["remaining"] > 0 and (row["expires_at_ms"] is None or row["expires_at_ms"] > at_ms)


@dataclass
class MemoryStore:
    """Every row of the store. `on_commit` receives each completed operation's events (the
    live fan-out), as the SQL runner hands over a committed transaction's."""

    accounts: dict[str, Row] = field(default_factory=dict)
    api_keys: dict[str, Row] = field(default_factory=dict)  # by key id
    key_hashes: dict[str, str] = field(default_factory=dict)  # key hash -> key id
    buckets: dict[str, Row] = field(default_factory=dict)
    account_buckets: dict[str, list[str]] = field(default_factory=dict)
    entries: dict[int, Row] = field(default_factory=dict)  # by id, ids increasing
    entry_keys: dict[tuple[str, str], int] = field(default_factory=dict)
    account_entries: dict[str, list[int]] = field(default_factory=dict)
    allocations: dict[int, list[Row]] = field(default_factory=dict)  # by entry id
    holds: dict[str, Row] = field(default_factory=dict)
    usage_records: dict[str, Row] = field(default_factory=dict)
    # by (account, day, operation, provider, model, key id), '' for none (tables.usage_daily)
    usage_daily: dict[tuple[str, int, str, str, str, str], Row] = field(default_factory=dict)
    spend_daily: dict[tuple[str, str, int], Row] = field(default_factory=dict)  # end users
    events: dict[str, list[AccountEvent]] = field(default_factory=dict)  # the logged ones
    purchases: dict[str, Row] = field(default_factory=dict)  # by session id
    stripe_events: dict[str, Row] = field(default_factory=dict)
    pending_refunds: dict[str, Row] = field(default_factory=dict)
    auto_topups: dict[str, Row] = field(default_factory=dict)
    invoices: dict[str, Row] = field(default_factory=dict)  # by Stripe invoice id
    reconciliation_reports: dict[str, Row] = field(default_factory=dict)  # by report id
    nonces: dict[str, int] = field(default_factory=dict)  # HMAC nonce -> expiry (epoch ms)
    dashboard_sessions: dict[str, Any] = field(default_factory=dict)  # hash -> session
    webhook_endpoints: dict[str, Row] = field(default_factory=dict)
    webhook_deliveries: dict[str, Row] = field(default_factory=dict)  # insertion = time order
    webhook_attempts: list[Row] = field(default_factory=list)
    alert_rules: AlertRules = field(default_factory=AlertRules)
    on_commit: EventSink | None = None
    _entry_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _allocation_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _pending: list[AccountEvent] = field(default_factory=list)

    # ---- operations and their events -----------------------------------------------------

    def commit(self) -> None:
        """Hand the events of the operation that just completed to `on_commit`."""
        events, self._pending = self._pending, []
        if events and self.on_commit is not None:
            self.on_commit(events)

    def queue(self, event: AccountEvent) -> None:
        """Hand `event` to the live fan-out with this operation's events, without logging it
        (the balance.updated of a settled call)."""
        self._pending.append(event)

    def emit(self, account_id: str, event_type: str, data: dict[str, Any], at_ms: int,
             logged: bool = True) -> AccountEvent:
        """The account's next event; written to its log unless `logged` is False (the
        balance.updated of a settled call is live only)."""
        account = self.accounts[account_id]
        account["event_seq"] += 1
        event = AccountEvent(account_id, account["event_seq"], event_type, data, at_ms)
        if logged:
            self.events.setdefault(account_id, []).append(event)
            self.enqueue(event)
        self._pending.append(event)
        return event

    def enqueue(self, event: AccountEvent) -> None:
        """The outgoing-webhook deliveries of a logged event, one per subscribed endpoint, in
        the same operation (storage.sql.outbox's rule)."""
        if event.type not in WEBHOOK_EVENT_TYPES:
            return
        targets = [e["id"] for e in self.webhook_endpoints.values()
                   if event.type in e["event_types"]]
        if not targets:
            return
        message_id = new_id("msg")
        payload = json.dumps(message_payload(event.type, event.account_id, event.seq,
                                             event.data, event.at_ms), separators=(",", ":"))
        for endpoint_id in targets:
            delivery_id = new_id("whd")
            self.webhook_deliveries[delivery_id] = {
                "id": delivery_id, "message_id": message_id, "endpoint_id": endpoint_id,
                "event_type": event.type, "payload_json": payload, "status": PENDING,
                "attempts": 0, "next_attempt_at_ms": event.at_ms, "lease_until_ms": 0,
                "last_status_code": None, "last_error": None, "created_at_ms": event.at_ms,
                "delivered_at_ms": None}

    def check_alerts(self, account_id: str, at_ms: int) -> None:
        """Fire the low-balance alerts the operation's balance change crossed
        (storage.engine.alerts.crossing on live buckets − debt), storing the new state."""
        account = self.accounts[account_id]
        balance = sum(b["remaining"] for b in self.live_buckets(account_id, at_ms)) \
            - account["debt"]
        rules = self.alert_rules
        threshold = rules.threshold(account["low_balance_threshold"], account["plan_key"])
        new, fired = crossing(AlertState(account["balance_alert"]), balance, threshold)
        account["balance_alert"] = new.value
        for event_type in fired:
            self.emit(account_id, event_type, alert_data(balance, threshold, rules), at_ms)

    def emit_balance(self, account_id: str, at_ms: int, reason: str) -> AccountEvent:
        """balance.updated with the account's totals now."""
        live = [(b["source"], b["remaining"]) for b in self.live_buckets(account_id, at_ms)]
        event = self.emit(account_id, BALANCE_UPDATED,
                          balance_data(live, self.held(account_id, at_ms),
                                       self.accounts[account_id]["debt"], reason), at_ms)
        self.check_alerts(account_id, at_ms)
        return event

    # ---- reads -----------------------------------------------------------------------------

    def account(self, account_id: str) -> Row:
        """The account row. Raises UnknownAccount."""
        row = self.accounts.get(account_id)
        if row is None:
            raise UnknownAccount(account_id)
        return row

    def bucket_rows(self, account_id: str) -> list[Row]:
        return [self.buckets[b] for b in self.account_buckets.get(account_id, ())]

    def live_buckets(self, account_id: str, at_ms: int) -> list[Row]:
        """The account's buckets with balance that have not expired at `at_ms`."""
        return [b for b in self.bucket_rows(account_id) if is_live(b, at_ms)]

    def burn_ordered(self, account_id: str, at_ms: int) -> list[Row]:
        """Live bucket rows in burn order (storage.engine.burn_down.priority_key)."""
        return sorted(self.live_buckets(account_id, at_ms),
                      key=lambda r: priority_key(as_bucket(r)))

    def account_holds(self, account_id: str) -> list[Hold]:
        return [Hold(h["id"], h["amount"], h["expires_at_ms"]) for h in self.holds.values()
                if h["account_id"] == account_id]

    def held(self, account_id: str, at_ms: int) -> int:
        """Σ the account's holds whose lease runs at `at_ms`."""
        return sum(h.amount for h in self.account_holds(account_id) if h.is_live(at_ms))

    def entry_under(self, account_id: str, key: str) -> Row | None:
        """The ledger entry applied under idempotency `key`, or None."""
        entry_id = self.entry_keys.get((account_id, key))
        return None if entry_id is None else self.entries[entry_id]

    def account_entry_rows(self, account_id: str) -> list[Row]:
        return [self.entries[e] for e in self.account_entries.get(account_id, ())]

    # ---- writes ----------------------------------------------------------------------------

    def add_entry(self, account_id: str, event_type: EventType, delta: int, key: str,
                  reason: str, at_ms: int, metadata: dict[str, Any] | None = None,
                  allocations: Sequence[tuple[str, int]] = ()) -> int:
        """Write a ledger entry (and its allocations: (bucket id, amount)); returns its id.
        The caller checked that `key` is unused for the account."""
        entry_id = next(self._entry_ids)
        self.entries[entry_id] = {
            "id": entry_id, "account_id": account_id, "event_type": event_type.value,
            "delta": delta, "idempotency_key": key, "reason": reason,
            "metadata_json": metadata_json(metadata), "created_at_ms": at_ms}
        self.entry_keys[(account_id, key)] = entry_id
        self.account_entries.setdefault(account_id, []).append(entry_id)
        self.allocations[entry_id] = [
            {"id": next(self._allocation_ids), "entry_id": entry_id, "bucket_id": bucket_id,
             "amount": amount} for bucket_id, amount in allocations]
        return entry_id

    def take(self, account_id: str, bucket_id: str, amount: int, kind: EventType, key: str,
             reason: str, at_ms: int, metadata: dict[str, Any] | None = None) -> int:
        """Remove `amount` (> 0, ≤ remaining) from one bucket as one entry of type `kind`
        (expiry, rollover, clawback). Returns the entry id."""
        self.buckets[bucket_id]["remaining"] -= amount
        return self.add_entry(account_id, kind, -amount, key, reason, at_ms, metadata,
                              [(bucket_id, amount)])

    def credit(self, account_id: str, source: Source, amount: int, key: str,
               expires_at_ms: int | None, reason: str, at_ms: int,
               metadata: dict[str, Any] | None = None,
               event_type: EventType | None = None) -> GrantResult:
        """Credit `amount` (> 0) as a new bucket, idempotent by `key`; debt is paid first
        (storage.engine.burn_down.net_credit). Raises ValueError, UnknownAccount."""
        if amount <= 0:
            raise ValueError(f"credit amount must be > 0, got {amount}")
        account = self.account(account_id)
        if (account_id, key) in self.entry_keys:
            return GrantResult(entry_id=None, bucket_id=None, amount=amount, replayed=True)
        held, netted = net_credit(amount, account["debt"])
        account["debt"] -= netted
        bucket_id = new_id("bkt")
        self.buckets[bucket_id] = {
            "id": bucket_id, "account_id": account_id, "source": source.value,
            "amount": amount, "remaining": held, "expires_at_ms": expires_at_ms,
            "created_at_ms": at_ms}
        self.account_buckets.setdefault(account_id, []).append(bucket_id)
        meta = dict(metadata or {})
        if netted:
            meta["debt_netted"] = netted
        kind = event_type or CREDIT_EVENT_FOR_SOURCE[source]
        entry_id = self.add_entry(account_id, kind, amount, key, reason, at_ms, meta or None,
                                  [(bucket_id, amount)])
        for name, data in credit_events(source, bucket_id, amount, expires_at_ms, kind.value,
                                        reason, netted, meta.get("from_bucket")):
            self.emit(account_id, name, data, at_ms)
        return GrantResult(entry_id=entry_id, bucket_id=bucket_id, amount=amount,
                           metadata=meta)

    def record_stripe_event(self, event_id: str, event_type: str, outcome: str,
                            at_ms: int) -> str:
        """Remember a processed Stripe event and its outcome; returns the outcome."""
        self.stripe_events[event_id] = {"event_id": event_id, "event_type": event_type,
                                        "outcome": outcome, "processed_at_ms": at_ms}
        return outcome
