"""The PDFs the gateway renders, parsed back: a receipt's lines and totals, a usage
statement's groups and totals in the deployment's unit; same data, same bytes and ETag."""

from __future__ import annotations

import io
import re

from pypdf import PdfReader

from gateway.invoicing.documents import etag, receipt_pdf, statement_pdf
from gateway.invoicing.formats import amount, money
from policies.units import TIME, UnitKind, UnitOfAccount
from storage.ports import InvoiceLine, MirroredInvoice, UsageLine

T0 = 1_790_000_000_000


def text_of(pdf: bytes) -> str:
    assert pdf.startswith(b"%PDF-")
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def invoice() -> MirroredInvoice:
    return MirroredInvoice(
        invoice_id="in_1", account_id="acct_1", number="GW-0001", status="paid",
        stripe_status="paid", currency="EUR", subtotal_cents=6400, tax_cents=1216,
        discount_cents=500, total_cents=7116, credits_applied_cents=116,
        amount_due_cents=7000, amount_paid_cents=7000, created_at_ms=T0,
        version=(3, T0, 1, 0), finalized_at_ms=T0, paid_at_ms=T0 + 1000,
        lines=(InvoiceLine("Pro (1200 min / month)", 5900, 1, "subscription", 72_000_000,
                           T0, T0 + 30 * 86_400_000),
               InvoiceLine("Setup", 500, 1)))


def test_receipt_lists_lines_with_credits_and_the_totals() -> None:
    text = text_of(receipt_pdf(invoice(), TIME))
    assert "Receipt GW-0001" in text and "acct_1" in text and "paid" in text
    assert re.search(r"Pro \(1200 min / month\)\s+1\s+59\.00 EUR\s+72,000 s", text)
    assert re.search(r"Setup\s+1\s+5\.00 EUR\s+-", text)
    for name, figure in (("Subtotal", "64.00 EUR"), ("Discount", "-5.00 EUR"),
                         ("Tax", "12.16 EUR"), ("Total", "71.16 EUR"),
                         ("Credits applied", "-1.16 EUR"), ("Amount paid", "70.00 EUR"),
                         ("Amount due", "70.00 EUR")):
        assert re.search(rf"^{name}\s+{re.escape(figure)}$", text, re.M), (name, text)


def test_statement_groups_by_operation_and_model_and_totals_in_the_unit() -> None:
    lines = [UsageLine(("build", None), 1, 0, 0, 500, 100),
             UsageLine(("chat", "gpt-4o-mini"), 3, 10, 20, 12_345, 0)]
    text = text_of(statement_pdf("acct_1", "2026-11", T0, lines, TIME))
    assert "Usage statement 2026-11" in text and "Unit s" in text
    assert re.search(r"build\s+-\s+1\s+0\s+0\s+0\.5 s\s+0\.1 s", text)
    assert re.search(r"chat\s+gpt-4o-mini\s+3\s+10\s+20\s+12\.345 s\s+0 s", text)
    assert re.search(r"^Calls\s+4$", text, re.M)
    assert re.search(r"^Total charged\s+12\.845 s$", text, re.M)
    assert re.search(r"^Total unbilled\s+0\.1 s$", text, re.M)


def test_statement_in_a_currency_unit() -> None:
    usd = UnitOfAccount(UnitKind.CURRENCY, "USD")
    text = text_of(statement_pdf("acct_1", "2026-11", T0,
                                 [UsageLine(("chat", "m"), 2, 1, 1, 1_250, 0)], usd))
    assert re.search(r"^Total charged\s+0\.00125 USD$", text, re.M)


def test_same_data_gives_the_same_bytes_and_etag_other_data_another() -> None:
    lines = [UsageLine(("chat", "m"), 1, 1, 1, 1000, 0)]
    first = statement_pdf("acct_1", "2026-11", T0, lines, TIME)
    assert first == statement_pdf("acct_1", "2026-11", T0, lines, TIME)
    tag = etag("statement", ["acct_1", "2026-11", lines, TIME])
    assert tag == etag("statement", ["acct_1", "2026-11", lines, TIME])
    assert re.fullmatch(r'"[0-9a-f]{32}"', tag)
    more = [UsageLine(("chat", "m"), 2, 1, 1, 2000, 0)]
    assert tag != etag("statement", ["acct_1", "2026-11", more, TIME])


def test_amounts_are_exact() -> None:
    assert money(123456, "USD") == "1,234.56 USD" and money(-5, "EUR") == "-0.05 EUR"
    assert money(500, "JPY") == "500 JPY"
    assert amount(72_000_000, TIME) == "72,000 s" and amount(1, TIME) == "0.001 s"
