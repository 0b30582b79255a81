"""The outgoing-webhook outbox on SQL (issue 11 item 8): endpoints, one delivery row per
(event, subscribed endpoint) written in the SAME transaction as the event (so an event exists
if and only if its deliveries do, and a restart loses nothing), claims by delivery workers,
and the attempts they record.

Two writers of deliveries, one rule: `enqueue_tx` on a SQLAlchemy connection (every event
emitted through storage.sql.events.emit_tx) and `enqueue_raw` on the request path's statement
executor (alerts fired by a settlement, storage.sql.alerts). Claims are safe with many workers
in many processes: PostgreSQL takes due rows with `FOR UPDATE SKIP LOCKED`; on SQLite the
transaction holds the write lock and the update is conditional on the lease having lapsed.
Times are UTC epoch ms. Secrets are returned only to the worker that signs with them.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection

from storage.engine.webhooks import (
    DELIVERED,
    FAILED,
    PENDING,
    WEBHOOK_EVENT_TYPES,
    RetrySchedule,
    message_payload,
    subscribed,
)
from storage.ids import new_id
from storage.ports import AccountEvent, DeliveryClaim
from storage.sql.executor import Executor, Sql
from storage.sql.tables import webhook_attempts, webhook_deliveries, webhook_endpoints

_ENDPOINTS = Sql("SELECT id, event_types_json FROM webhook_endpoints")
_INSERT_DELIVERY = Sql(
    "INSERT INTO webhook_deliveries (id, message_id, endpoint_id, event_type, payload_json,"
    " status, attempts, next_attempt_at_ms, lease_until_ms, created_at_ms)"
    f" VALUES (?, ?, ?, ?, ?, '{PENDING}', 0, ?, 0, ?)")


def _rows(event: AccountEvent, endpoints: list[Any]) -> list[tuple[Any, ...]]:
    """Delivery rows of `event` for the endpoints subscribed to its type (one message id)."""
    targets = [e[0] for e in endpoints if subscribed(json.loads(e[1]), event.type)]
    if not targets:
        return []
    message_id = new_id("msg")
    payload = json.dumps(message_payload(event.type, event.account_id, event.seq, event.data,
                                         event.at_ms), separators=(",", ":"))
    return [(new_id("whd"), message_id, endpoint_id, event.type, payload, event.at_ms,
             event.at_ms) for endpoint_id in targets]


def enqueue_tx(conn: Connection, event: AccountEvent) -> int:
    """Write the deliveries of `event` (if its type is a webhook type) in the caller's
    transaction; returns how many."""
    if event.type not in WEBHOOK_EVENT_TYPES:
        return 0
    endpoints = list(conn.execute(select(webhook_endpoints.c.id,
                                         webhook_endpoints.c.event_types_json)))
    rows = _rows(event, endpoints)
    for r in rows:
        conn.execute(insert(webhook_deliveries).values(
            id=r[0], message_id=r[1], endpoint_id=r[2], event_type=r[3], payload_json=r[4],
            status=PENDING, attempts=0, next_attempt_at_ms=r[5], lease_until_ms=0,
            created_at_ms=r[6]))
    return len(rows)


async def enqueue_raw(db: Executor, event: AccountEvent) -> int:
    """`enqueue_tx` on the request path's executor (same rows, same transaction)."""
    if event.type not in WEBHOOK_EVENT_TYPES:
        return 0
    rows = _rows(event, await db.all(_ENDPOINTS, ()))
    for r in rows:
        await db.run(_INSERT_DELIVERY, r)
    return len(rows)


# ---- endpoints (admin API) --------------------------------------------------------------------

def create_endpoint_tx(conn: Connection, endpoint_id: str, url: str, event_types: list[str],
                       description: str | None, secret: str, at_ms: int) -> None:
    """Register an endpoint (validated by the caller)."""
    conn.execute(insert(webhook_endpoints).values(
        id=endpoint_id, url=url, event_types_json=json.dumps(event_types),
        description=description, secret=secret, created_at_ms=at_ms))


def _endpoint_view(row: Any) -> dict[str, Any]:
    return {"id": row.id, "url": row.url, "event_types": json.loads(row.event_types_json),
            "description": row.description, "created_at_ms": int(row.created_at_ms)}


def list_endpoints_tx(conn: Connection) -> list[dict[str, Any]]:
    """Every endpoint, oldest first, without its secret."""
    cols = [webhook_endpoints.c[n] for n in
            ("id", "url", "event_types_json", "description", "created_at_ms")]
    rows = conn.execute(select(*cols).order_by(webhook_endpoints.c.created_at_ms,
                                               webhook_endpoints.c.id))
    return [_endpoint_view(r) for r in rows]


def deliveries_tx(conn: Connection, endpoint_id: str, limit: int) -> list[dict[str, Any]] | None:
    """The endpoint's newest deliveries with their attempts, or None for an unknown endpoint."""
    if conn.execute(select(webhook_endpoints.c.id).where(
            webhook_endpoints.c.id == endpoint_id)).first() is None:
        return None
    d = webhook_deliveries.c
    rows = list(conn.execute(
        select(d.id, d.message_id, d.event_type, d.status, d.attempts, d.next_attempt_at_ms,
               d.last_status_code, d.last_error, d.created_at_ms, d.delivered_at_ms)
        .where(d.endpoint_id == endpoint_id)
        .order_by(d.created_at_ms.desc(), d.id.desc()).limit(limit)))
    a = webhook_attempts.c
    attempts: dict[str, list[dict[str, Any]]] = {r.id: [] for r in rows}
    if rows:
        for r in conn.execute(select(a.delivery_id, a.attempt, a.at_ms, a.status_code, a.error,
                                     a.duration_ms)
                              .where(a.delivery_id.in_(list(attempts)))
                              .order_by(a.delivery_id, a.attempt)):
            attempts[r.delivery_id].append({
                "attempt": int(r.attempt), "at_ms": int(r.at_ms), "status_code": r.status_code,
                "error": r.error, "duration_ms": int(r.duration_ms)})
    return [{"id": r.id, "message_id": r.message_id, "event_type": r.event_type,
             "status": r.status, "attempts": int(r.attempts),
             "next_attempt_at_ms": int(r.next_attempt_at_ms) if r.status == PENDING else None,
             "last_status_code": r.last_status_code, "last_error": r.last_error,
             "created_at_ms": int(r.created_at_ms), "delivered_at_ms": r.delivered_at_ms,
             "attempt_log": attempts[r.id]} for r in rows]


# ---- the delivery worker's side ---------------------------------------------------------------

def claim_tx(conn: Connection, at_ms: int, lease_ms: int, limit: int) -> list[DeliveryClaim]:
    """Lease up to `limit` due deliveries (pending, due, lease lapsed) until `at_ms + lease_ms`.
    PostgreSQL skips rows another worker has locked; SQLite holds the write lock, and the
    update re-checks the lease, so a row is claimed by one worker at a time."""
    d = webhook_deliveries.c
    due = and_(d.status == PENDING, d.next_attempt_at_ms <= at_ms, d.lease_until_ms <= at_ms)
    ids = [r[0] for r in conn.execute(
        select(d.id).where(due).order_by(d.next_attempt_at_ms).limit(limit)
        .with_for_update(skip_locked=True))]
    if not ids:
        return []
    conn.execute(update(webhook_deliveries).where(d.id.in_(ids), due)
                 .values(lease_until_ms=at_ms + lease_ms))
    e = webhook_endpoints.c
    rows = conn.execute(
        select(d.id, d.message_id, d.endpoint_id, d.payload_json, d.attempts, d.created_at_ms,
               d.lease_until_ms, e.url, e.secret)
        .join_from(webhook_deliveries, webhook_endpoints, d.endpoint_id == e.id)
        .where(d.id.in_(ids), d.lease_until_ms == at_ms + lease_ms))
    return [DeliveryClaim(r.id, r.message_id, r.endpoint_id, r.url, r.secret, r.payload_json,
                          int(r.attempts), int(r.created_at_ms), int(r.lease_until_ms))
            for r in rows]


def record_attempt_tx(conn: Connection, claim: DeliveryClaim, status_code: int | None,
                      error: str | None, duration_ms: int, at_ms: int,
                      schedule: RetrySchedule) -> str:
    """Record one attempt of a claimed delivery and decide what follows: `delivered` on a
    2xx, else retried per `schedule` (`pending`) or given up (`failed`). Returns the status.
    An attempt whose lease was taken over meanwhile is still logged (it happened)."""
    d = webhook_deliveries.c
    row = conn.execute(select(d.status, d.attempts).where(d.id == claim.delivery_id)
                       .with_for_update()).first()
    if row is None:
        raise KeyError(claim.delivery_id)
    attempt = int(row.attempts) + 1
    conn.execute(insert(webhook_attempts).values(
        delivery_id=claim.delivery_id, attempt=attempt, at_ms=at_ms, status_code=status_code,
        error=error, duration_ms=duration_ms))
    if row.status != PENDING:
        conn.execute(update(webhook_deliveries).where(d.id == claim.delivery_id)
                     .values(attempts=attempt))
        return str(row.status)
    ok = status_code is not None and 200 <= status_code < 300
    values: dict[str, Any] = {"attempts": attempt, "last_status_code": status_code,
                              "last_error": error, "lease_until_ms": 0}
    if ok:
        values.update(status=DELIVERED, delivered_at_ms=at_ms)
    else:
        retry_at = schedule.next_attempt(attempt, claim.created_at_ms, at_ms)
        if retry_at is None:
            values.update(status=FAILED)
        else:
            values.update(next_attempt_at_ms=retry_at)
    conn.execute(update(webhook_deliveries).where(d.id == claim.delivery_id).values(**values))
    return str(values.get("status", PENDING))
