"""Invoices and usage statements of an account (issue 11 item 5; seeds 002, 004).

| endpoint | does |
| --- | --- |
| `GET /v1/billing/invoices/{userId}?status=&limit=&cursor=` | mirrored Stripe invoices, newest first, keyset pages |
| `GET /v1/billing/invoices/{userId}/{invoiceId}` | one invoice (seed 002's InvoiceResponse) |
| `GET /v1/billing/invoices/{userId}/{invoiceId}/pdf` | 302 to Stripe's `invoice_pdf`, else a receipt PDF (strong ETag, 304) |
| `POST /v1/billing/invoices/{userId}/{invoiceId}/pay` | pay an open invoice through Stripe (idempotency key per attempt) |
| `GET /v1/billing/statements/{userId}/{YYYY-MM}.pdf` | the month's usage statement PDF, by operation and model (ETag, 304) |

Invoices are what Stripe's webhooks delivered (gateway.invoicing.mirror); another account's
invoice id is a 404, exactly as an unknown one. Amounts are major units of the invoice's
currency (numbers, display) with the exact minor units in `amounts_minor`; what a line credited
is in the deployment's unit (`unit`).
"""  # noqa: E501 - a Markdown table

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import stripe
from pydantic import Field
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from gateway.api.edge import int_param, json_response, own_account, services_for
from gateway.api.operations import (
    ACCOUNT_OR_SIGNED,
    USER_ERRORS,
    USER_ID,
    Operation,
    Param,
    Reply,
    path_param,
    web_routes,
)
from gateway.api.shapes import DATE_TIME, Shape
from gateway.invoicing import documents
from gateway.invoicing.formats import ZERO_DECIMAL
from gateway.invoicing.mirror import to_mirror
from gateway.problems import (
    BadRequest,
    InvoiceNotPayable,
    NotFound,
    PaymentProviderError,
    PaymentsNotConfigured,
)
from gateway.services import Services
from storage.clock import iso_utc, to_ms
from storage.engine.invoices import SEED_STATUSES
from storage.ports import BillingRecords, InvoiceLine, MirroredInvoice

_CURSOR = re.compile(r"([0-9]{1,15})\.([A-Za-z0-9_]{1,255})")
_MONTH = re.compile(r"(20[0-9]{2})-(0[1-9]|1[0-2])")
DOCUMENT_CACHE = {"cache-control": "private, no-cache"}  # may be kept, revalidated each use


def _time(description: str) -> Any:
    return Field(description=description, json_schema_extra=DATE_TIME)


class LineItem(Shape):
    """One line of an invoice and what it credited to the account."""

    description: str
    quantity: int = Field(ge=0)
    amount: float = Field(description="Major units of the invoice's currency.")
    amount_minor: int = Field(description="The exact amount in minor units (cents).")
    kind: str = Field(description="`subscription`, `package` or `other`.")
    credited: int | float = Field(ge=0, description="What this line credited, in `unit` of "
                                                    "the invoice (0: nothing).")
    period_start: str | None = _time("Start of the period the line bills.")
    period_end: str | None = _time("End of the period the line bills.")


class InvoiceResponse(Shape):
    """Seed 002's InvoiceResponse, from the gateway's mirror of a Stripe invoice."""

    id: str = Field(description="The Stripe invoice id (`in_…`).")
    invoice_number: str | None = Field(description="Stripe's number; null while a draft.")
    billing_account_id: str = Field(description="The account id.")
    ticket_id: None = Field(description="Always null (seed field without a counterpart).")
    stripe_invoice_id: str
    status: str = Field(json_schema_extra={"enum": list(SEED_STATUSES)},
                        description="Stripe's `uncollectible` is `past_due`.")
    period_start: str | None = _time("Start of the billed period.")
    period_end: str | None = _time("End of the billed period.")
    subtotal: float
    tax_amount: float
    discount_amount: float
    total: float
    credits_applied: float = Field(description="Customer credit balance the invoice used.")
    amount_due: float
    amount_paid: float
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    amounts_minor: dict[str, int] = Field(description="The same amounts, exact, in minor "
                                                      "units (cents).")
    line_items: list[LineItem]
    unit: str = Field(description="The unit of `line_items[].credited` (`s`, a currency, "
                                  "`tokens`).")
    description: str | None
    due_date: str | None = _time("When payment is due.")
    finalized_at: str | None = _time("When Stripe finalized it.")
    paid_at: str | None = _time("When it was paid.")
    created_at: str | None = _time("When Stripe created it.")
    hosted_invoice_url: str | None = Field(description="Stripe's page to view and pay it.")
    pdf_url: str = Field(description="The gateway's PDF endpoint of this invoice.")


class InvoicesPage(Shape):
    invoices: list[InvoiceResponse] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="`cursor` of the next page; null on the last.")


def records_of(s: Services) -> BillingRecords:
    """The store's BillingRecords (every gateway built by gateway.app has one)."""
    if s.records is None:
        raise RuntimeError("the gateway was built without billing records")
    return s.records


def _major(cents: int, currency: str) -> float:
    return cents if currency in ZERO_DECIMAL else cents / 100


def _when(ms: int | None) -> str | None:
    return iso_utc(ms) if ms else None


def invoice_doc(s: Services, inv: MirroredInvoice) -> InvoiceResponse:
    """The InvoiceResponse of a mirrored invoice."""
    unit = s.policy.unit
    cur = inv.currency
    minor = {"subtotal": inv.subtotal_cents, "tax_amount": inv.tax_cents,
             "discount_amount": inv.discount_cents, "total": inv.total_cents,
             "credits_applied": inv.credits_applied_cents, "amount_due": inv.amount_due_cents,
             "amount_paid": inv.amount_paid_cents}

    def line(x: InvoiceLine) -> LineItem:
        return LineItem(description=x.description, quantity=x.quantity,
                        amount=_major(x.amount_cents, cur), amount_minor=x.amount_cents,
                        kind=x.kind, credited=unit.to_json(x.credited),
                        period_start=_when(x.period_start_ms), period_end=_when(x.period_end_ms))

    return InvoiceResponse(
        id=inv.invoice_id, invoice_number=inv.number, billing_account_id=inv.account_id,
        ticket_id=None, stripe_invoice_id=inv.invoice_id, status=inv.status,
        period_start=_when(inv.period_start_ms), period_end=_when(inv.period_end_ms),
        **{k: _major(v, cur) for k, v in minor.items()}, currency=cur, amounts_minor=minor,
        line_items=[line(x) for x in inv.lines], unit=unit.api_name,
        description=inv.description, due_date=_when(inv.due_date_ms),
        finalized_at=_when(inv.finalized_at_ms), paid_at=_when(inv.paid_at_ms),
        created_at=_when(inv.created_at_ms), hosted_invoice_url=inv.hosted_invoice_url,
        pdf_url=f"/v1/billing/invoices/{inv.account_id}/{inv.invoice_id}/pdf")


async def _own_invoice(request: Request) -> tuple[Services, MirroredInvoice]:
    s = services_for(request)
    account_id = await own_account(request)
    invoice_id = request.path_params["invoiceId"]
    inv = await records_of(s).invoice(account_id, invoice_id)
    if inv is None:
        raise NotFound(f"No invoice {invoice_id!r} for this account.")
    return s, inv


async def list_invoices(request: Request) -> Response:
    """`GET /v1/billing/invoices/{userId}`: the account's invoices, newest first."""
    s = services_for(request)
    account_id = await own_account(request)
    limit = int_param(request, "limit", 20, 1, 100)
    status = request.query_params.get("status")
    if status is not None and status not in SEED_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(SEED_STATUSES)}.")
    before = None
    if (cursor := request.query_params.get("cursor")) is not None:
        match = _CURSOR.fullmatch(cursor)
        if match is None:
            raise BadRequest("cursor: not a cursor this endpoint returned.")
        before = (int(match[1]), match[2])
    rows = await records_of(s).invoices(account_id, status, limit + 1, before)
    page = rows[:limit]
    cursor_out = (f"{page[-1].created_at_ms}.{page[-1].invoice_id}"
                  if len(rows) > limit else None)
    return json_response(InvoicesPage(invoices=[invoice_doc(s, x) for x in page],
                                      next_cursor=cursor_out).wire())


async def get_invoice(request: Request) -> Response:
    """`GET /v1/billing/invoices/{userId}/{invoiceId}`."""
    s, inv = await _own_invoice(request)
    return json_response(invoice_doc(s, inv).wire())


def not_modified(request: Request, tag: str) -> bool:
    """True when `If-None-Match` names `tag` (or `*`): RFC 9110 §13.1.2, weak comparison."""
    header = request.headers.get("if-none-match")
    if header is None:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or tag in tags


def pdf_response(request: Request, tag: str, render: Any, filename: str) -> Response:
    """`304` when the client holds `tag`, else the PDF `render()` makes, with its ETag."""
    headers = {**DOCUMENT_CACHE, "etag": tag}
    if not_modified(request, tag):
        return Response(status_code=304, headers=headers)
    return Response(render(), media_type="application/pdf", headers={
        **headers, "content-disposition": f'inline; filename="{filename}"'})


async def invoice_pdf(request: Request) -> Response:
    """`GET …/{invoiceId}/pdf`: Stripe's PDF when it has one, else the gateway's receipt."""
    s, inv = await _own_invoice(request)
    if inv.invoice_pdf:
        return RedirectResponse(inv.invoice_pdf, status_code=302, headers={
            "cache-control": "no-store"})
    unit = s.policy.unit
    return pdf_response(request, documents.etag("receipt", [inv, unit]),
                        lambda: documents.receipt_pdf(inv, unit), f"{inv.invoice_id}.pdf")


async def pay_invoice(request: Request) -> Response:
    """`POST …/{invoiceId}/pay`: ask Stripe to pay an open invoice now (the customer's default
    payment method); the answer is mirrored at once and the webhooks that follow converge on
    the same state."""
    s, inv = await _own_invoice(request)
    if inv.stripe_status != "open":
        raise InvoiceNotPayable(f"Invoice {inv.invoice_id} is {inv.status}; only an open "
                                "invoice can be paid.")
    if s.stripe is None:
        raise PaymentsNotConfigured("Set STRIPE_SECRET_KEY to pay invoices.")
    # One key per payment attempt: a retried request replays Stripe's answer, while a new
    # attempt after a failure (attempt_count grew) is a new request.
    key = f"gw-invoice-pay:{inv.invoice_id}:{inv.version[2]}"
    try:
        paid = await s.stripe.v1.invoices.pay_async(inv.invoice_id,
                                                    options={"idempotency_key": key})
    except stripe.StripeError as exc:
        raise PaymentProviderError(f"Stripe did not pay the invoice: "
                                   f"{exc.user_message or exc}") from None
    records = records_of(s)
    try:
        await records.mirror_invoice(to_mirror(s, paid.to_dict(), inv.account_id, 0))
    except ValueError:
        raise PaymentProviderError("Stripe answered with something that is not an "
                                   "invoice.") from None
    current = await records.invoice(inv.account_id, inv.invoice_id)
    return json_response(invoice_doc(s, current or inv).wire())


def month_bounds(month: str) -> tuple[int, int]:
    """(start, end) UTC epoch ms of a `YYYY-MM` month. Raises BadRequest otherwise."""
    match = _MONTH.fullmatch(month)
    if match is None:
        raise BadRequest("month must be YYYY-MM (2000-01 to 2099-12).")
    year, mon = int(match[1]), int(match[2])
    start = datetime(year, mon, 1, tzinfo=UTC)
    end = datetime(year + mon // 12, mon % 12 + 1, 1, tzinfo=UTC)
    return to_ms(start), to_ms(end)


async def statement_pdf(request: Request) -> Response:
    """`GET /v1/billing/statements/{userId}/{YYYY-MM}.pdf`: the month's usage statement."""
    s = services_for(request)
    account_id = await own_account(request)
    month = request.path_params["month"]
    start, end = month_bounds(month)
    lines = await records_of(s).usage_breakdown(account_id, start, end)
    unit = s.policy.unit
    return pdf_response(
        request, documents.etag("statement", [account_id, month, lines, unit]),
        lambda: documents.statement_pdf(account_id, month, start, lines, unit),
        f"statement-{month}.pdf")


INVOICE_ID = path_param("invoiceId", "The Stripe invoice id (`in_…`); another account's is a "
                                     "404.")
PDF_HEADERS = {
    "ETag": {"required": True, "description": "Strong validator of the document.",
             "schema": {"type": "string"}},
    "Cache-Control": {"required": True, "description": "`private, no-cache`: revalidate.",
                      "schema": {"type": "string"}}}
IF_NONE_MATCH = Param("If-None-Match", "header", {"type": "string"},
                      "An ETag received before: `304` when the document is unchanged.")
_PDF_REPLIES = (Reply(200, "The PDF.", None, media_type="application/pdf", headers=PDF_HEADERS),
                Reply(304, "Unchanged since the ETag sent in If-None-Match.", None,
                      headers=PDF_HEADERS))

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", "/v1/billing/invoices/{userId}", "listInvoices", "List the account's invoices",
        "invoices", ACCOUNT_OR_SIGNED, (Reply(200, "One page, newest first.", InvoicesPage),),
        USER_ERRORS,
        params=(USER_ID,
                Param("status", "query", {"type": "string", "enum": list(SEED_STATUSES)},
                      "Only invoices in this status (seed 002's union)."),
                Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100,
                                         "default": 20}, "Page size."),
                Param("cursor", "query", {"type": "string", "pattern": _CURSOR.pattern},
                      "`next_cursor` of the previous page.")),
        description="Stripe invoices mirrored from its webhooks (`invoice.finalized`, "
                    "`.paid`, `.payment_failed`, `.voided`, `.marked_uncollectible`).",
        endpoint=list_invoices),
    Operation(
        "GET", "/v1/billing/invoices/{userId}/{invoiceId}", "getInvoice", "One invoice",
        "invoices", ACCOUNT_OR_SIGNED, (Reply(200, "The invoice.", InvoiceResponse),),
        USER_ERRORS, params=(USER_ID, INVOICE_ID), endpoint=get_invoice),
    Operation(
        "GET", "/v1/billing/invoices/{userId}/{invoiceId}/pdf", "getInvoicePdf",
        "The invoice as PDF", "invoices", ACCOUNT_OR_SIGNED,
        (Reply(302, "Stripe's PDF of the invoice (the legal document).", None, headers={
            "Location": {"required": True, "description": "Stripe's `invoice_pdf` URL.",
                         "schema": {"type": "string", "format": "uri"}}}), *_PDF_REPLIES),
        USER_ERRORS, params=(USER_ID, INVOICE_ID, IF_NONE_MATCH),
        description="A redirect to Stripe's `invoice_pdf` when Stripe has one; otherwise a "
                    "receipt the gateway renders (lines, totals, what each line credited).",
        endpoint=invoice_pdf),
    Operation(
        "POST", "/v1/billing/invoices/{userId}/{invoiceId}/pay", "payInvoice",
        "Pay an open invoice", "invoices", ACCOUNT_OR_SIGNED,
        (Reply(200, "The invoice as Stripe answered (usually `paid`).", InvoiceResponse),),
        (*USER_ERRORS, InvoiceNotPayable, PaymentProviderError, PaymentsNotConfigured),
        params=(USER_ID, INVOICE_ID), body=None,
        description="Stripe's `POST /v1/invoices/{id}/pay` with the customer's default payment "
                    "method, idempotency key `gw-invoice-pay:<invoice>:<attempt_count>`; "
                    "a declined card is a 502 `payment-provider-error` naming Stripe's reason.",
        endpoint=pay_invoice),
    Operation(
        "GET", "/v1/billing/statements/{userId}/{month}.pdf", "getUsageStatement",
        "Monthly usage statement (PDF)", "invoices", ACCOUNT_OR_SIGNED, _PDF_REPLIES,
        USER_ERRORS,
        params=(USER_ID, Param("month", "path", {"type": "string",
                                                 "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])$"},
                               "The UTC month, `YYYY-MM`.", required=True), IF_NONE_MATCH),
        description="What the account consumed in the month, by operation and model: calls, "
                    "tokens, charged and unbilled in the deployment's unit; always rendered "
                    "by the gateway.",
        endpoint=statement_pdf),
)
INVOICE_ROUTES = web_routes(OPERATIONS)
