"""Reconciliation of the ledger with Stripe, for operators (issue 11 item 6; seed 004's
`POST /reconcile`): `POST /v1/admin/reconcile {from, to, apply}` runs it
(gateway.invoicing.reconcile) and stores the report; `GET /v1/admin/reconcile` lists stored
reports, `GET /v1/admin/reconcile/{reportId}` reads one. Admin credential only.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.admin import check
from gateway.api.edge import int_param, json_body, json_response
from gateway.api.invoices import records_of
from gateway.api.operations import (
    ADMIN,
    ADMIN_ERRORS,
    Operation,
    Param,
    Reply,
    path_param,
    web_routes,
)
from gateway.api.shapes import Shape
from gateway.invoicing.reconcile import ReconcileError, reconcile
from gateway.problems import BadRequest, NotFound, PaymentProviderError, PaymentsNotConfigured
from storage.clock import now_ms, to_ms

MAX_SPAN = timedelta(days=366)


class ReconcileRequest(BaseModel):
    """The period [from, to) to reconcile (RFC 3339 with a time zone), and whether to credit
    what Stripe was paid and the ledger never credited."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    from_: AwareDatetime = Field(alias="from")
    to: AwareDatetime
    apply: bool = False


class Finding(Shape):
    """One difference between the ledger and Stripe (members depend on `kind`)."""

    model_config = ConfigDict(extra="allow")
    kind: str = Field(description="`invoice`, `checkout`, `topup`, `refund` or `unknown`.")
    object_id: str = Field(description="The Stripe object (invoice, Checkout Session or "
                                       "payment intent id).")
    account_id: str | None


class StripeCounts(Shape):
    paid_invoices: int = Field(ge=0)
    charges: int = Field(ge=0)
    refunds: int = Field(ge=0)


class ReconciliationReport(Shape):
    """A stored report: what Stripe listed, what matched, and the differences."""

    id: str
    from_: str = Field(alias="from", json_schema_extra={"format": "date-time"})
    to: str = Field(json_schema_extra={"format": "date-time"})
    created_at: str = Field(json_schema_extra={"format": "date-time"})
    applied: bool = Field(description="Whether payments never credited were credited "
                                      "(`paid_not_credited[].applied` says the outcome).")
    stripe: StripeCounts
    ledger_credits: int = Field(ge=0)
    matched: int = Field(ge=0)
    paid_not_credited: list[Finding]
    credited_not_paid: list[Finding]
    amount_mismatches: list[Finding]


class ReportsPage(Shape):
    reports: list[ReconciliationReport] = Field(description="Newest first.")
    next_cursor: str | None


def _report(doc: dict[str, Any]) -> dict[str, Any]:
    return ReconciliationReport.model_validate(doc).wire()


async def run_reconcile(request: Request) -> Response:
    """`POST /v1/admin/reconcile`: compare (and with `apply`, credit) a period."""
    s = check(request)
    body = json_body(ReconcileRequest, await request.body())
    start, end = body.from_.astimezone(UTC), body.to.astimezone(UTC)
    if not start < end or end - start > MAX_SPAN:
        raise BadRequest("from must be before to, at most 366 days apart.")
    if start < datetime(2010, 1, 1, tzinfo=UTC) or end > datetime(2100, 1, 1, tzinfo=UTC):
        raise BadRequest("from and to must be between 2010 and 2100.")
    if s.stripe is None:
        raise PaymentsNotConfigured("Set STRIPE_SECRET_KEY to reconcile with Stripe.")
    try:
        doc = await reconcile(s, records_of(s), to_ms(start), to_ms(end), body.apply, now_ms())
    except ReconcileError as exc:
        raise PaymentProviderError(str(exc)) from None
    return json_response(_report(doc), status=201)


async def get_report(request: Request) -> Response:
    """`GET /v1/admin/reconcile/{reportId}`."""
    s = check(request)
    row = await records_of(s).report(request.path_params["reportId"])
    if row is None:
        raise NotFound("No reconciliation report with this id.")
    return json_response(_report(row["document"]))


async def list_reports(request: Request) -> Response:
    """`GET /v1/admin/reconcile`: stored reports, newest first."""
    s = check(request)
    limit = int_param(request, "limit", 20, 1, 100)
    rows = await records_of(s).reports(limit + 1, request.query_params.get("cursor"))
    page = rows[:limit]
    return json_response(ReportsPage(
        reports=[ReconciliationReport.model_validate(r["document"]) for r in page],
        next_cursor=page[-1]["id"] if len(rows) > limit else None).wire())


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST", "/v1/admin/reconcile", "reconcileStripe", "Reconcile the ledger with Stripe",
        "admin", ADMIN, (Reply(201, "The stored report.", ReconciliationReport),),
        (*ADMIN_ERRORS, PaymentProviderError, PaymentsNotConfigured), body=ReconcileRequest,
        description="Lists Stripe's paid invoices, charges and refunds created in "
                    "[from, to) and compares them with the ledger's credits: "
                    "`paid_not_credited`, `credited_not_paid`, `amount_mismatches`. With "
                    "`apply: true`, payments never credited are credited as their webhook "
                    "would have (idempotent by the Stripe object id); the rest is only "
                    "reported.",
        endpoint=run_reconcile),
    Operation(
        "GET", "/v1/admin/reconcile", "listReconciliations", "Stored reconciliation reports",
        "admin", ADMIN, (Reply(200, "Newest first.", ReportsPage),), ADMIN_ERRORS,
        params=(Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 100,
                                         "default": 20}, "Page size."),
                Param("cursor", "query", {"type": "string"}, "`next_cursor` of the previous "
                                                             "page.")),
        endpoint=list_reports),
    Operation(
        "GET", "/v1/admin/reconcile/{reportId}", "getReconciliation",
        "A stored reconciliation report", "admin", ADMIN,
        (Reply(200, "The report.", ReconciliationReport),), ADMIN_ERRORS,
        params=(path_param("reportId", "The report id (`rcn_…`)."),), endpoint=get_report),
)
RECONCILE_ROUTES = web_routes(OPERATIONS)
