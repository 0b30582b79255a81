"""The in-memory adapter of the `BillingRecords` port (storage.ports), on the `MemoryStore` of a
MemoryLedger; rows as storage.invoice_rows writes them, so it answers as
storage.sql.billing_records.SqlBillingRecords does (the contract suite holds them to it)."""

from __future__ import annotations

from typing import Any

from storage.engine.invoices import supersedes
from storage.engine.webhooks import PAYMENT_FAILED, payment_failed
from storage.invoice_rows import (
    credit_keys,
    credit_kind,
    credits_of,
    invoice_from_row,
    invoice_row,
    purchase_key,
    report_from_row,
    report_row,
    version_of_row,
)
from storage.memory.ledger import MemoryLedger
from storage.memory.store import MemoryStore
from storage.ports import (
    IN_FLIGHT,
    STATEMENT_GROUPS,
    MirroredInvoice,
    StripeCredit,
    UsageLine,
)


class MemoryBillingRecords:
    """BillingRecords on the store of `ledger`."""

    def __init__(self, ledger: MemoryLedger) -> None:
        self._s: MemoryStore = ledger.store

    async def mirror_invoice(self, invoice: MirroredInvoice) -> str:
        self._s.account(invoice.account_id)  # UnknownAccount
        stored = self._s.invoices.get(invoice.invoice_id)
        if stored is None:
            self._s.invoices[invoice.invoice_id] = invoice_row(invoice)
            return "created"
        if stored["account_id"] != invoice.account_id or not supersedes(
                invoice.version, version_of_row(stored)):
            return "stale"
        self._s.invoices[invoice.invoice_id] = invoice_row(invoice)
        return "updated"

    async def mirror_invoice_event(self, invoice: MirroredInvoice, event_id: str,
                                   event_type: str, failure: str | None,
                                   at_ms: int) -> str:
        self._s.account(invoice.account_id)  # UnknownAccount, before anything is written
        if event_id in self._s.stripe_events:
            return "duplicate"
        outcome = await self.mirror_invoice(invoice)
        self._s.record_stripe_event(event_id, event_type, "mirrored", at_ms)
        owner = self._s.invoices[invoice.invoice_id]["account_id"]
        if failure is not None and owner == invoice.account_id:  # never another account's
            self._s.emit(invoice.account_id, PAYMENT_FAILED,
                         payment_failed("invoice", invoice.invoice_id, failure), at_ms)
        self._s.commit()
        return outcome

    async def invoice(self, account_id: str, invoice_id: str) -> MirroredInvoice | None:
        row = self._s.invoices.get(invoice_id)
        if row is None or row["account_id"] != account_id:
            return None
        return invoice_from_row(row)

    async def invoices(self, account_id: str, status: str | None, limit: int,
                       before: tuple[int, str] | None) -> list[MirroredInvoice]:
        rows = [r for r in self._s.invoices.values() if r["account_id"] == account_id
                and (status is None or r["status"] == status)
                and (before is None or (r["created_at_ms"], r["invoice_id"]) < before)]
        rows.sort(key=lambda r: (r["created_at_ms"], r["invoice_id"]), reverse=True)
        return [invoice_from_row(r) for r in rows[:limit]]

    async def usage_breakdown(self, account_id: str, from_ms: int,
                              to_ms_: int) -> list[UsageLine]:
        groups: dict[tuple[Any, ...], list[int]] = {}
        for r in self._s.usage_records.values():
            if (r["account_id"] != account_id or not from_ms <= r["created_at_ms"] < to_ms_
                    or r["outcome"] == IN_FLIGHT):
                continue
            g = groups.setdefault(tuple(r[name] for name in STATEMENT_GROUPS), [0] * 5)
            for i, value in enumerate((1, r["input_tokens"], r["output_tokens"], r["charged"],
                                       r["unbilled"])):
                g[i] += value
        lines = [UsageLine(key, *sums) for key, sums in groups.items()]
        return sorted(lines, key=lambda u: tuple((v is not None, v or "") for v in u.group))

    async def stripe_credits(self, from_ms: int, to_ms_: int,
                             object_ids: list[str]) -> list[StripeCredit]:
        wanted = set(object_ids)
        found = [p for p in self._s.purchases.values()
                 if p["session_id"] in wanted or p.get("payment_intent_id") in wanted]
        keys = {k for oid in object_ids for k in credit_keys(oid)}
        keys |= {purchase_key(p) for p in found}
        entries = [e for e in self._s.entries.values()
                   if credit_kind(e["idempotency_key"]) is not None
                   and (from_ms <= e["created_at_ms"] < to_ms_ or e["idempotency_key"] in keys)]
        sessions = {e["idempotency_key"].split(":", 1)[1] for e in entries}
        found += [p for p in self._s.purchases.values()
                  if p["session_id"] in sessions and p not in found]
        return credits_of(entries, found)

    async def save_report(self, report_id: str, from_ms: int, to_ms_: int, created_at_ms: int,
                          applied: bool, document: dict[str, Any]) -> None:
        self._s.reconciliation_reports[report_id] = report_row(
            report_id, from_ms, to_ms_, created_at_ms, applied, document)

    async def report(self, report_id: str) -> dict[str, Any] | None:
        row = self._s.reconciliation_reports.get(report_id)
        return None if row is None else report_from_row(row)

    async def reports(self, limit: int, before: str | None) -> list[dict[str, Any]]:
        ids = sorted((i for i in self._s.reconciliation_reports
                      if before is None or i < before), reverse=True)
        return [report_from_row(self._s.reconciliation_reports[i]) for i in ids[:limit]]
