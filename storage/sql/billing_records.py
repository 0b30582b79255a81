"""The SQL adapter of the `BillingRecords` port (storage.ports): mirrored Stripe invoices,
usage statements' figures, Stripe-keyed credits for reconciliation, and the stored
reconciliation reports. Each method is one transaction on the ledger's runner.

A mirrored invoice is written under its account's row lock (`SELECT … FOR UPDATE` on
PostgreSQL), so two deliveries of one invoice's events racing on two replicas compare their
versions one after the other and the greater one is what stays (storage.engine.invoices).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection

from storage.engine.invoices import supersedes
from storage.engine.webhooks import PAYMENT_FAILED, payment_failed
from storage.invoice_rows import (
    STRIPE_KEYED_SQL,
    credit_keys,
    credits_of,
    invoice_from_row,
    invoice_row,
    purchase_key,
    report_from_row,
    report_row,
    version_of_row,
)
from storage.ports import (
    IN_FLIGHT,
    STATEMENT_GROUPS,
    MirroredInvoice,
    StripeCredit,
    UsageLine,
)
from storage.sql.events import emit_tx
from storage.sql.ledger import SqlLedger, _lock
from storage.sql.purchases import event_seen_tx, record_event_tx
from storage.sql.tables import (
    invoices,
    ledger_entries,
    purchases,
    reconciliation_reports,
    usage_records,
)

_CHUNK = 500  # bound of an IN list


def mirror_invoice_tx(conn: Connection, inv: MirroredInvoice) -> str:
    """Insert the invoice, or replace the stored state when `inv` supersedes it. Returns
    `created`, `updated` or `stale`. Raises UnknownAccount."""
    _lock(conn, inv.account_id)
    row = conn.execute(select(invoices).where(invoices.c.invoice_id == inv.invoice_id)).first()
    values = invoice_row(inv)
    if row is None:
        conn.execute(insert(invoices).values(**values))
        return "created"
    stored = dict(row._mapping)
    if stored["account_id"] != inv.account_id or not supersedes(inv.version,
                                                                version_of_row(stored)):
        return "stale"
    conn.execute(update(invoices).where(invoices.c.invoice_id == inv.invoice_id).values(**values))
    return "updated"


def mirror_invoice_event_tx(conn: Connection, inv: MirroredInvoice, event_id: str,
                            event_type: str, failure: str | None, at_ms: int) -> str:
    """The mirror, the event record and its `payment.failed` in one transaction (the port's
    `mirror_invoice_event`). Raises UnknownAccount."""
    _lock(conn, inv.account_id)
    if event_seen_tx(conn, event_id):
        return "duplicate"
    outcome = mirror_invoice_tx(conn, inv)
    record_event_tx(conn, event_id, event_type, "mirrored", at_ms)
    owner = conn.execute(select(invoices.c.account_id).where(
        invoices.c.invoice_id == inv.invoice_id)).scalar()
    if failure is not None and owner == inv.account_id:  # never on another account's log
        emit_tx(conn, inv.account_id, PAYMENT_FAILED,
                payment_failed("invoice", inv.invoice_id, failure), at_ms)
    return outcome


def invoice_tx(conn: Connection, account_id: str, invoice_id: str) -> MirroredInvoice | None:
    row = conn.execute(select(invoices).where(invoices.c.invoice_id == invoice_id,
                                              invoices.c.account_id == account_id)).first()
    return None if row is None else invoice_from_row(dict(row._mapping))


def invoices_tx(conn: Connection, account_id: str, status: str | None, limit: int,
                before: tuple[int, str] | None) -> list[MirroredInvoice]:
    q = select(invoices).where(invoices.c.account_id == account_id)
    if status is not None:
        q = q.where(invoices.c.status == status)
    if before is not None:
        q = q.where(or_(invoices.c.created_at_ms < before[0],
                        and_(invoices.c.created_at_ms == before[0],
                             invoices.c.invoice_id < before[1])))
    rows = conn.execute(q.order_by(invoices.c.created_at_ms.desc(),
                                   invoices.c.invoice_id.desc()).limit(limit))
    return [invoice_from_row(dict(r._mapping)) for r in rows]


def usage_breakdown_tx(conn: Connection, account_id: str, from_ms: int,
                       to_ms_: int) -> list[UsageLine]:
    columns = [usage_records.c[name] for name in STATEMENT_GROUPS]
    rows = conn.execute(
        select(*columns, func.count(), func.coalesce(func.sum(usage_records.c.input_tokens), 0),
               func.coalesce(func.sum(usage_records.c.output_tokens), 0),
               func.coalesce(func.sum(usage_records.c.charged), 0),
               func.coalesce(func.sum(usage_records.c.unbilled), 0))
        .where(usage_records.c.account_id == account_id,
               usage_records.c.created_at_ms >= from_ms, usage_records.c.created_at_ms < to_ms_,
               usage_records.c.outcome != IN_FLIGHT)
        .group_by(*columns))
    n = len(columns)
    lines = [UsageLine(tuple(r[:n]), int(r[n]), int(r[n + 1]), int(r[n + 2]), int(r[n + 3]),
                       int(r[n + 4])) for r in rows]
    return sorted(lines, key=lambda u: tuple((v is not None, v or "") for v in u.group))


def _stripe_keyed() -> Any:
    # The partial indexes' predicate, as literal SQL (no bound parameters): SQLite and
    # PostgreSQL use a partial index only when the query implies its predicate verbatim.
    return text(STRIPE_KEYED_SQL)


def stripe_credits_tx(conn: Connection, from_ms: int, to_ms_: int,
                      object_ids: list[str]) -> list[StripeCredit]:
    cols = (ledger_entries.c.account_id, ledger_entries.c.idempotency_key,
            ledger_entries.c.delta, ledger_entries.c.created_at_ms)
    entries = [dict(r._mapping) for r in conn.execute(select(*cols).where(
        _stripe_keyed(), ledger_entries.c.created_at_ms >= from_ms,
        ledger_entries.c.created_at_ms < to_ms_))]
    found: list[dict[str, Any]] = []
    for i in range(0, len(object_ids), _CHUNK):
        chunk = object_ids[i:i + _CHUNK]
        found += [dict(r._mapping) for r in conn.execute(select(purchases).where(
            or_(purchases.c.session_id.in_(chunk), purchases.c.payment_intent_id.in_(chunk))))]
    keys = [k for oid in object_ids for k in credit_keys(oid)] + [purchase_key(p) for p in found]
    for i in range(0, len(keys), _CHUNK):
        entries += [dict(r._mapping) for r in conn.execute(select(*cols).where(
            _stripe_keyed(), ledger_entries.c.idempotency_key.in_(keys[i:i + _CHUNK])))]
    # the purchases behind the credits (their price, payment intent and refunds)
    sessions = sorted({e["idempotency_key"].split(":", 1)[1] for e in entries}
                      - {p["session_id"] for p in found})
    for i in range(0, len(sessions), _CHUNK):
        found += [dict(r._mapping) for r in conn.execute(select(purchases).where(
            purchases.c.session_id.in_(sessions[i:i + _CHUNK])))]
    relevant = {p["session_id"]: p for p in found}
    return credits_of(entries, list(relevant.values()))


def save_report_tx(conn: Connection, report_id: str, from_ms: int, to_ms_: int,
                   created_at_ms: int, applied: bool, document: dict[str, Any]) -> None:
    conn.execute(insert(reconciliation_reports).values(
        **report_row(report_id, from_ms, to_ms_, created_at_ms, applied, document)))


def report_tx(conn: Connection, report_id: str) -> dict[str, Any] | None:
    row = conn.execute(select(reconciliation_reports).where(
        reconciliation_reports.c.id == report_id)).first()
    return None if row is None else report_from_row(dict(row._mapping))


def reports_tx(conn: Connection, limit: int, before: str | None) -> list[dict[str, Any]]:
    q = select(reconciliation_reports)
    if before is not None:
        q = q.where(reconciliation_reports.c.id < before)
    rows = conn.execute(q.order_by(reconciliation_reports.c.id.desc()).limit(limit))
    return [report_from_row(dict(r._mapping)) for r in rows]


class SqlBillingRecords:
    """BillingRecords on the database of `ledger` (its runner)."""

    def __init__(self, ledger: SqlLedger) -> None:
        self._run = ledger.runner.run

    async def mirror_invoice(self, invoice: MirroredInvoice) -> str:
        return await self._run(mirror_invoice_tx, invoice)

    async def mirror_invoice_event(self, invoice: MirroredInvoice, event_id: str,
                                   event_type: str, failure: str | None,
                                   at_ms: int) -> str:
        return await self._run(mirror_invoice_event_tx, invoice, event_id, event_type,
                               failure, at_ms)

    async def invoice(self, account_id: str, invoice_id: str) -> MirroredInvoice | None:
        return await self._run(invoice_tx, account_id, invoice_id)

    async def invoices(self, account_id: str, status: str | None, limit: int,
                       before: tuple[int, str] | None) -> list[MirroredInvoice]:
        return await self._run(invoices_tx, account_id, status, limit, before)

    async def usage_breakdown(self, account_id: str, from_ms: int,
                              to_ms_: int) -> list[UsageLine]:
        return await self._run(usage_breakdown_tx, account_id, from_ms, to_ms_)

    async def stripe_credits(self, from_ms: int, to_ms_: int,
                             object_ids: list[str]) -> list[StripeCredit]:
        return await self._run(stripe_credits_tx, from_ms, to_ms_, object_ids)

    async def save_report(self, report_id: str, from_ms: int, to_ms_: int, created_at_ms: int,
                          applied: bool, document: dict[str, Any]) -> None:
        await self._run(save_report_tx, report_id, from_ms, to_ms_, created_at_ms, applied,
                        document)

    async def report(self, report_id: str) -> dict[str, Any] | None:
        return await self._run(report_tx, report_id)

    async def reports(self, limit: int, before: str | None) -> list[dict[str, Any]]:
        return await self._run(reports_tx, limit, before)
