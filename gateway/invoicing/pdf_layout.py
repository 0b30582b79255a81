"""The layout of the gateway's PDFs with fpdf2 (https://py-pdf.github.io/fpdf2/), imported
only when a PDF is rendered (fpdf2 loads Pillow and fontTools). The data, formatting and ETags
are gateway.invoicing.documents'; this module only places them on A4 pages with the core
Helvetica font (Latin-1: other characters print as `?`). The creation date is the document's
own date, never the clock, so the same data gives the same bytes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from fpdf import FPDF

from gateway.invoicing.formats import amount, date_of, money
from policies.units import UnitOfAccount
from storage.ports import STATEMENT_GROUPS, MirroredInvoice, UsageLine


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


def receipt(inv: MirroredInvoice, unit: UnitOfAccount) -> bytes:
    """gateway.invoicing.documents.receipt_pdf."""
    doc = _Doc(f"Receipt {inv.number or inv.invoice_id}", inv.finalized_at_ms or inv.created_at_ms)
    doc.field("Invoice", inv.number or inv.invoice_id)
    doc.field("Stripe invoice", inv.invoice_id)
    doc.field("Account", inv.account_id)
    doc.field("Status", inv.status)
    doc.field("Period", f"{date_of(inv.period_start_ms)} to {date_of(inv.period_end_ms)}")
    doc.field("Issued", date_of(inv.finalized_at_ms or inv.created_at_ms))
    doc.field("Paid", date_of(inv.paid_at_ms))
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


def statement(account_id: str, month: str, start_ms: int, lines: Sequence[UsageLine],
              unit: UnitOfAccount) -> bytes:
    """gateway.invoicing.documents.statement_pdf."""
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
