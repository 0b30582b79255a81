"""The account event log behind the live stream (SPEC §8 `GET /v1/billing/stream/{userId}`).

Every change a client may want to see live is an account event emitted in the same transaction
as the money change it describes, under the account lock, with the next value of
`accounts.event_seq`: ids are per account, strictly increasing, and an event exists if and only
if its change committed. Events are written to the log, except the balance.updated of each
settled call (the hot path): it is delivered live only, and a stream that missed any gets one
balance snapshot carrying the current id instead — balance is state, the newest wins. The log
is bounded by time (`prune_events_tx`); a client that comes back with a `Last-Event-ID`
older than the log is told so (`oldest_seq_tx`).

Event types and their data: storage.engine.events (shared with the memory adapter).

Events emitted in a transaction are also appended to the transaction's sink
(`conn.info["gw_events"]`, set by `storage.sql.engine.Runner`) so the runner can hand them to
the live fan-out after the commit — never before it.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection

from storage.engine.alerts import AlertRules, AlertState, alert_data, crossing
from storage.engine.events import BALANCE_UPDATED, balance_data
from storage.ports import AccountEvent
from storage.sql.outbox import enqueue_tx
from storage.sql.tables import account_events, accounts, buckets, holds

SINK_KEY = "gw_events"
ALERT_RULES_KEY = "gw_alert_rules"  # the runner's storage.engine.alerts.AlertRules


def emit_tx(conn: Connection, account_id: str, event_type: str, data: dict[str, Any],
            at_ms: int) -> AccountEvent:
    """Append an event to the account's log with the next sequence number. Call inside the
    transaction that made the change (it takes the account row lock if not yet held)."""
    seq = int(conn.execute(
        update(accounts).where(accounts.c.id == account_id)
        .values(event_seq=accounts.c.event_seq + 1).returning(accounts.c.event_seq)
    ).scalar_one())
    conn.execute(insert(account_events).values(
        account_id=account_id, seq=seq, event_type=event_type,
        data_json=json.dumps(data, separators=(",", ":")), created_at_ms=at_ms))
    event = AccountEvent(account_id, seq, event_type, data, at_ms)
    enqueue_tx(conn, event)  # the outgoing webhooks' outbox, in this same transaction
    sink = conn.info.get(SINK_KEY)
    if sink is not None:
        sink.append(event)
    return event


def emit_balance_tx(conn: Connection, account_id: str, at_ms: int, reason: str) -> AccountEvent:
    """Emit balance.updated with the account's totals as of this transaction."""
    live = (buckets.c.account_id == account_id) & (buckets.c.remaining > 0) & (
        buckets.c.expires_at_ms.is_(None) | (buckets.c.expires_at_ms > at_ms))
    rows = conn.execute(select(buckets.c.source, buckets.c.remaining).where(live)).all()
    held = int(conn.execute(select(func.coalesce(func.sum(holds.c.amount), 0)).where(
        holds.c.account_id == account_id, holds.c.expires_at_ms > at_ms)).scalar_one())
    account = conn.execute(select(accounts.c.debt, accounts.c.plan_key,
                                  accounts.c.low_balance_threshold, accounts.c.balance_alert)
                           .where(accounts.c.id == account_id).with_for_update()).one()
    debt = int(account.debt)
    event = emit_tx(conn, account_id, BALANCE_UPDATED,
                    balance_data(((r[0], int(r[1])) for r in rows), held, debt, reason), at_ms)
    alerts_tx(conn, account_id, sum(int(r[1]) for r in rows) - debt, account.plan_key,
              account.low_balance_threshold, account.balance_alert, at_ms)
    return event


def alerts_tx(conn: Connection, account_id: str, balance: int, plan_key: str,
              own_threshold: int | None, state: str, at_ms: int) -> list[AccountEvent]:
    """Fire the low-balance alerts a change leaving the watched balance at `balance` (ledger
    units: live buckets − debt) crosses (storage.engine.alerts.crossing), in the caller's
    transaction under the account lock: the new state is stored and each alert is logged (and
    enqueued for webhooks). The rules are the runner's (`conn.info[ALERT_RULES_KEY]`)."""
    rules: AlertRules = conn.info.get(ALERT_RULES_KEY) or AlertRules()
    threshold = rules.threshold(None if own_threshold is None else int(own_threshold), plan_key)
    new, fired = crossing(AlertState(state), balance, threshold)
    if new.value != state:
        conn.execute(update(accounts).where(accounts.c.id == account_id)
                     .values(balance_alert=new.value))
    return [emit_tx(conn, account_id, t, alert_data(balance, threshold, rules), at_ms)
            for t in fired]


def events_after_tx(conn: Connection, account_id: str, after_seq: int,
                    limit: int) -> list[AccountEvent]:
    """The account's events with seq > `after_seq`, oldest first, at most `limit` (a range
    read on the primary key: cost independent of history length)."""
    rows = conn.execute(
        select(account_events.c.seq, account_events.c.event_type, account_events.c.data_json,
               account_events.c.created_at_ms)
        .where(account_events.c.account_id == account_id, account_events.c.seq > after_seq)
        .order_by(account_events.c.seq).limit(limit))
    return [AccountEvent(account_id, int(r[0]), r[1], json.loads(r[2]), int(r[3])) for r in rows]


def catch_up_tx(conn: Connection, account_id: str, after_seq: int,
                limit: int) -> tuple[list[AccountEvent], int]:
    """(logged events after `after_seq`, the account's current seq) in one read: a current seq
    beyond the last logged event means unlogged balance.updated events (consumption) happened,
    which a stream answers with one fresh snapshot."""
    current = conn.execute(select(accounts.c.event_seq).where(
        accounts.c.id == account_id)).scalar()
    return events_after_tx(conn, account_id, after_seq, limit), int(current or 0)


def stream_position_tx(conn: Connection, account_id: str) -> tuple[int, int] | None:
    """(current seq, oldest seq still in the log — or current + 1 when the log is empty) of
    an account; None for an unknown account."""
    seq = conn.execute(select(accounts.c.event_seq).where(accounts.c.id == account_id)).first()
    if seq is None:
        return None
    oldest = conn.execute(select(func.min(account_events.c.seq)).where(
        account_events.c.account_id == account_id)).scalar()
    current = int(seq[0])
    return current, int(oldest) if oldest is not None else current + 1


def prune_events_tx(conn: Connection, before_ms: int) -> int:
    """Delete events older than `before_ms` (the bounded history; through the time index).
    Returns how many were deleted."""
    return int(conn.execute(delete(account_events).where(
        account_events.c.created_at_ms < before_ms)).rowcount)
