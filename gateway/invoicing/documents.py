"""The PDFs the gateway renders itself, with fpdf2 (https://py-pdf.github.io/fpdf2/): the
receipt of an invoice Stripe has no PDF for, and the monthly usage statement — what an account
consumed, by operation and model, in the deployment's unit — which Stripe cannot produce.

Rendering is a pure function of the document's data: the same data gives the same bytes (the
PDF's creation date is the document's own date, never the clock), so `etag` — a hash of the
data and this module's layout version — is a strong validator (RFC 9110 §8.8.1): equal ETags
mean byte-identical PDFs. The core PDF fonts cover Latin-1 only: other characters print as `?`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from fpdf import FPDF

from policies.units import UnitOfAccount
from storage.clock import iso_utc
from storage.ports import STATEMENT_GROUPS, MirroredInvoice, UsageLine

LAYOUT_VERSION = "1"  # bump when the layout changes: it changes every ETag
ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"}


def etag(kind: str, data: Any) -> str:
    """A strong ETag (quoted) of a document of `kind` rendered from `data` (JSON-able, or
    dataclasses)."""
    canonical = json.dumps([kind, LAYOUT_VERSION, data], sort_keys=True, default=_plain,
                           separators=(",", ":"))
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    if isinstance(value, UnitOfAccount):
        return [value.kind.value, value.currency]
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def money(cents: int, currency: str) -> str:
    """Minor units as `1,234.50 USD` (0 decimals for zero-decimal currencies)."""
    if currency.upper() in ZERO_DECIMAL:
        return f"{cents:,} {currency.upper()}"
    sign = "-" if cents < 0 else ""
    major, minor = divmod(abs(cents), 100)
    return f"{sign}{major:,}.{minor:02d} {currency.upper()}"


def amount(ledger_units: int, unit: UnitOfAccount) -> str:
    """Ledger units in the API's unit, exact (`12.5 s`, `0.000125 USD`, `1,200 tokens`)."""
    value = unit.to_api(ledger_units).normalize()
    text = f"{value:,f}" if value == value.to_integral_value() else f"{value:f}"
    return f"{text} {unit.api_name}"


def _date(ms: int | None) -> str:
    return iso_utc(ms)[:10] if ms else "-"


def _latin1(text: str) -> str:
    return text.encode("latin-1", "replace").decode("latin-1")


class _Doc(FPDF):
    def __init__(self, title: str, created_ms: int) -> None:
        super().__init__(orientation="portrait", unit="mm", format="A4")
        self.set_creation_date(datetime.fromtimestamp(created_ms / 1000, UTC))
        self.set_producer("ai-metering-gateway")
        self.set_title(_latin1(title))
        self.set_auto_page_break(auto=True, margin=15)
        self.add_page()
        self.set_font("helvetica", "B", 16)
        self.cell(0, 10, _latin1(title), new_x="LMARGIN", new_y="NEXT")
        self.set_font("helvetica", size=10)

    def field(self, name: str, value: str) -> None:
        self.set_font("helvetica", "B", 10)
        self.cell(45, 6, _latin1(name))
        self.set_font("helvetica", size=10)
        self.cell(0, 6, _latin1(value), new_x="LMARGIN", new_y="NEXT")

    def rows(self, header: Sequence[str], rows: Sequence[Sequence[str]],
             widths: Sequence[int]) -> None:
        self.ln(3)
        with self.table(col_widths=tuple(widths), text_align="LEFT",
                        first_row_as_headings=True) as table:
            for values in (header, *rows):
                row = table.row()
                for value in values:
                    row.cell(_latin1(value))
        self.ln(3)


def receipt_pdf(inv: MirroredInvoice, unit: UnitOfAccount) -> bytes:
    """A receipt of a mirrored invoice: number, status, dates, lines (with what each credited,
    in `unit`) and totals in the invoice's currency."""
    doc = _Doc(f"Receipt {inv.number or inv.invoice_id}", inv.finalized_at_ms or inv.created_at_ms)
    doc.field("Invoice", inv.number or inv.invoice_id)
    doc.field("Stripe invoice", inv.invoice_id)
    doc.field("Account", inv.account_id)
    doc.field("Status", inv.status)
    doc.field("Period", f"{_date(inv.period_start_ms)} to {_date(inv.period_end_ms)}")
    doc.field("Issued", _date(inv.finalized_at_ms or inv.created_at_ms))
    doc.field("Paid", _date(inv.paid_at_ms))
    if inv.description:
        doc.field("Description", inv.description[:200])
    doc.rows(("Description", "Qty", "Amount", "Credited"),
             [(line.description or line.kind, str(line.quantity),
               money(line.amount_cents, inv.currency),
               amount(line.credited, unit) if line.credited else "-") for line in inv.lines],
             (90, 15, 40, 45))
    for name, cents in (("Subtotal", inv.subtotal_cents), ("Discount", -inv.discount_cents),
                        ("Tax", inv.tax_cents), ("Total", inv.total_cents),
                        ("Credits applied", -inv.credits_applied_cents),
                        ("Amount paid", inv.amount_paid_cents),
                        ("Amount due", inv.amount_due_cents)):
        doc.field(name, money(cents, inv.currency))
    return bytes(doc.output())


def statement_pdf(account_id: str, month: str, start_ms: int, lines: Sequence[UsageLine],
                  unit: UnitOfAccount) -> bytes:
    """The usage statement of `account_id` for `month` (`YYYY-MM`, starting at `start_ms`):
    one row per group of STATEMENT_GROUPS (calls, tokens, charged and unbilled in `unit`) and
    the totals."""
    doc = _Doc(f"Usage statement {month}", start_ms)
    doc.field("Account", account_id)
    doc.field("Period", f"{month} (UTC)")
    doc.field("Unit", unit.api_name)
    header = (*(name.capitalize() for name in STATEMENT_GROUPS), "Calls", "Input tokens",
              "Output tokens", "Charged", "Unbilled")
    body = [(*(value or "-" for value in line.group), f"{line.calls:,}",
             f"{line.input_tokens:,}", f"{line.output_tokens:,}", amount(line.charged, unit),
             amount(line.unbilled, unit)) for line in lines]
    group_width = max(20, (190 - 120) // max(1, len(STATEMENT_GROUPS)))
    doc.rows(header, body, (*(group_width,) * len(STATEMENT_GROUPS), 18, 24, 24, 27, 27))
    doc.field("Calls", f"{sum(x.calls for x in lines):,}")
    doc.field("Total charged", amount(sum(x.charged for x in lines), unit))
    doc.field("Total unbilled", amount(sum(x.unbilled for x in lines), unit))
    return bytes(doc.output())
