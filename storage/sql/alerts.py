"""Low-balance alerts on SQL (storage.engine.alerts decides; this module reads and writes rows):
the crossing check of a settlement on the request path's executor, and the account's alert
settings. The crossing check of every other balance change runs in
storage.sql.events.emit_balance_tx; both run in the transaction that changed the balance,
under the account lock, so concurrent changes fire one alert per crossing.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.engine import Connection

from storage.engine.alerts import AlertRules, AlertState, alert_data, crossing
from storage.ports import AccountEvent, AlertSettings, UnknownAccount
from storage.sql.events import alerts_tx
from storage.sql.executor import Executor, Sql
from storage.sql.outbox import enqueue_raw
from storage.sql.tables import accounts, buckets

# The alert state and the event ids of the alerts, in one statement (the row is locked).
_SET_STATE = Sql("UPDATE accounts SET balance_alert = ?, event_seq = event_seq + ? WHERE id = ?"
                 " RETURNING event_seq")
_LOG_EVENT = Sql("INSERT INTO account_events (account_id, seq, event_type, data_json,"
                 " created_at_ms) VALUES (?, ?, ?, ?, ?)")


async def alerts_raw(db: Executor, account_id: str, balance: int, plan_key: str,
                     own_threshold: int | None, state: str, rules: AlertRules | None,
                     at_ms: int) -> list[AccountEvent]:
    """Fire the alerts a settlement leaving the watched balance at `balance` (ledger units:
    live buckets − debt) crosses: state stored, each alert logged with the next event id,
    enqueued for webhooks and handed to the live fan-out after the commit. Nothing is written
    when nothing is crossed (the common case: no extra statement on the request path)."""
    rules = rules or AlertRules()
    threshold = rules.threshold(own_threshold, plan_key)
    new, fired = crossing(AlertState(state), balance, threshold)
    if not fired and new.value == state:
        return []
    last = int((await db.one(_SET_STATE, (new.value, len(fired), account_id)))[0])
    out = []
    for i, event_type in enumerate(fired):
        event = AccountEvent(account_id, last - len(fired) + 1 + i, event_type,
                             alert_data(balance, threshold, rules), at_ms)
        await db.run(_LOG_EVENT, (account_id, event.seq, event_type,
                                  json.dumps(event.data, separators=(",", ":")), at_ms))
        await enqueue_raw(db, event)
        db.events.append(event)
        out.append(event)
    return out


def _settings(conn: Connection, account_id: str, lock: bool) -> Any:
    q = select(accounts.c.plan_key, accounts.c.debt, accounts.c.low_balance_threshold,
               accounts.c.balance_alert).where(accounts.c.id == account_id)
    row = conn.execute(q.with_for_update() if lock else q).first()
    if row is None:
        raise UnknownAccount(account_id)
    return row


def alert_settings_tx(conn: Connection, account_id: str) -> AlertSettings:
    """The account's own threshold (None: the plan's default), plan and alert state."""
    row = _settings(conn, account_id, lock=False)
    own = None if row.low_balance_threshold is None else int(row.low_balance_threshold)
    return AlertSettings(own, row.plan_key, row.balance_alert)


def set_threshold_tx(conn: Connection, account_id: str, threshold: int | None,
                     at_ms: int) -> AlertSettings:
    """Set (None: reset to the plan's default) the account's threshold, then check the current
    balance against it in the same transaction: raising it above the balance fires
    `balance.low` now, not at the next change."""
    row = _settings(conn, account_id, lock=True)
    conn.execute(update(accounts).where(accounts.c.id == account_id)
                 .values(low_balance_threshold=threshold))
    live = (buckets.c.account_id == account_id) & (buckets.c.remaining > 0) & or_(
        buckets.c.expires_at_ms.is_(None), buckets.c.expires_at_ms > at_ms)
    spendable = int(conn.execute(select(func.coalesce(func.sum(buckets.c.remaining), 0))
                                 .where(live)).scalar_one())
    alerts_tx(conn, account_id, spendable - int(row.debt), row.plan_key, threshold,
              row.balance_alert, at_ms)
    return alert_settings_tx(conn, account_id)
