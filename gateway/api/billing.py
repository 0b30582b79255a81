"""Billing API read endpoints (SPEC §8): the public catalog and an account's balance.

User data answers `Cache-Control: no-store`; the catalog is public with a strong ETag per
catalog version and currency (`If-None-Match` → 304, `Cache-Control: public, max-age=300`).
An account's own API key reads its own data only: any other account id is a 404, so account
ids cannot be probed.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as WebRoute

from gateway.api.edge import (
    body_and_account,
    int_param,
    json_response,
    own_account,
    period_window,
    services_for,
)
from gateway.balance_view import enhanced_balance
from gateway.problems import BadRequest, NotFound
from gateway.proxy.payment_required import suggestions_for
from policies.catalog import UnknownCurrency, catalog_document
from policies.compiled import Policy
from storage.clock import MS_PER_DAY, MS_PER_SECOND, ceil_seconds, iso_utc, to_ms
from storage.ports import UnknownAccount


async def catalog(request: Request) -> Response:
    """`GET /v1/billing/catalog`: the public catalog in `?currency=` (ETag, 304)."""
    s = services_for(request)
    try:
        doc, etag = catalog_document(s.policy.document.catalog, s.policy.plans,
                                     request.query_params.get("currency"))
    except UnknownCurrency as exc:
        raise BadRequest(f"Unknown currency {exc}; use one of USD, EUR, GBP, EGP, SAR, "
                         "AED.") from None
    headers = {"etag": etag, "cache-control": "public, max-age=300",
               "vary": "accept-encoding"}
    inm = request.headers.get("if-none-match", "")
    if etag in (t.strip() for t in inm.split(",")) or inm.strip() == "*":
        return Response(status_code=304, headers=headers)
    return json_response(doc, headers)


async def balance(request: Request) -> Response:
    """`GET /v1/billing/balance|enhanced-balance/{userId}`: the account's balance."""
    s = services_for(request)
    account_id = await own_account(request)
    try:
        snap = await s.ledger.balance(account_id)
    except UnknownAccount:
        raise NotFound(f"No account {account_id!r}.") from None
    doc = enhanced_balance(snap, s.policy.plans.get(snap.plan_key), s.policy.catalog_version)
    return json_response(doc)


async def events(request: Request) -> Response:
    """`GET /v1/billing/events/{userId}`: ledger entries, newest first, by cursor pages."""
    s = services_for(request)
    account_id = await own_account(request)
    limit = int_param(request, "limit", 50, 1, 200)
    cursor = request.query_params.get("cursor")
    before = None
    if cursor:
        # ASCII digits only, and few enough to stay within the database's 64-bit ids.
        match = re.fullmatch(r"le_([0-9]{1,18})", cursor)
        if match is None:
            raise BadRequest("cursor must be a next_cursor value from a previous page.")
        before = int(match[1])
    rows = await s.ledger.events(account_id, limit + 1, before)
    page = rows[:limit]
    doc = {"events": [event_view(r) for r in page],
           "next_cursor": f"le_{page[-1]['id']}" if len(rows) > limit else None}
    return json_response(doc)


async def usage(request: Request) -> Response:
    """`GET /v1/billing/usage/{userId}?period=`: the account's usage analytics."""
    s = services_for(request)
    account_id = await own_account(request)
    period, start, end = period_window(request)
    rows = await s.ledger.usage_summary(account_id, to_ms(start), to_ms(end))
    return json_response(usage_view(rows, period, start, end))


async def check_batch(request: Request) -> Response:
    """`POST /v1/billing/check-sufficient-batch`: a cumulative preflight of 1–10 calls."""
    s = services_for(request)
    batch, account_id = await body_and_account(request, BatchCheck)
    needs: list[tuple[str, int, dict[str, Any]]] = []
    for i, op in enumerate(batch.operations):
        need, basis = _operation_need(s.policy, op)
        if need is None:
            raise BadRequest(f"operations.{i}.estimate_seconds is required for "
                             f"'{op.operation}' (its estimate depends on the request)")
        needs.append((op.operation, need, basis))
    try:
        snap = await s.ledger.balance(account_id)
    except UnknownAccount:
        raise NotFound(f"No account {account_id!r}.") from None
    available = max(0, snap.available)
    results, running = [], 0
    for name, need, basis in needs:
        running += need
        deficit = max(0, running - available)
        item: dict[str, Any] = {"operation": name, "ok": deficit == 0,
                                "deficit_seconds": ceil_seconds(deficit),
                                "estimate_seconds": ceil_seconds(need),
                                "required_seconds": ceil_seconds(running),
                                "balance_seconds": available // MS_PER_SECOND,
                                "unit": "seconds",
                                **basis}
        if deficit:
            item["suggestions"] = suggestions_for(deficit, s.policy.document.catalog,
                                                  snap.plan_key)
        results.append(item)
    return json_response(results)


BILLING_ROUTES = [
    WebRoute("/v1/billing/check-sufficient-batch", check_batch, methods=["POST"]),
    WebRoute("/v1/billing/catalog", catalog, methods=["GET"]),
    WebRoute("/v1/billing/balance/{userId}", balance, methods=["GET"]),
    WebRoute("/v1/billing/enhanced-balance/{userId}", balance, methods=["GET"]),
    WebRoute("/v1/billing/events/{userId}", events, methods=["GET"]),
    WebRoute("/v1/billing/usage/{userId}", usage, methods=["GET"]),
]


class BatchOperation(BaseModel):
    """One operation of a batch preflight (seeds: BatchOperationRequest)."""

    model_config = ConfigDict(extra="forbid")
    operation: str = Field(min_length=1, max_length=64)
    estimate_seconds: int | None = Field(None, ge=0, le=10_000_000)


class BatchCheck(BaseModel):
    """`POST /v1/billing/check-sufficient-batch` body: 1–10 operations, checked cumulatively."""

    model_config = ConfigDict(extra="forbid")
    userId: str | None = None
    operations: list[BatchOperation] = Field(min_length=1, max_length=10)


def _operation_need(policy: Policy, op: BatchOperation) -> tuple[int | None, dict[str, Any]]:
    """(units one call needs, how that was estimated). The client's estimate wins; else the
    route's fixed or learned estimate with its sample size and confidence."""
    if op.estimate_seconds is not None:
        return op.estimate_seconds * MS_PER_SECOND, {"estimate_source": "client"}
    route = next((r for r in policy.routes if r.operation == op.operation), None)
    if route is None:
        return None, {}
    stats = route.estimator.stats()
    return route.estimator.preflight(), {"estimate_source": stats["kind"],
                                         "confidence": stats["confidence"],
                                         "based_on_samples": stats["samples"]}


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    """A ledger entry as the seeds' BillingEvent: type, seconds (signed, display), reason,
    timestamp (RFC 3339 UTC), metadata — plus `id` and the exact integer `amount_ms`."""
    meta = json.loads(row["metadata_json"]) if row["metadata_json"] else {}
    return {"id": f"le_{row['id']}", "type": row["event_type"],
            "seconds": round(row["delta"] / MS_PER_SECOND, 3), "amount_ms": row["delta"],
            "reason": row["reason"], "timestamp": iso_utc(row["created_at_ms"]),
            "metadata": meta}


def usage_view(
    rows: list[tuple[str, int, int, int]], period: str, start: datetime, end: datetime
) -> dict[str, Any]:
    """The seeds' UsageAnalytics from (operation, day start ms, charged ms, calls) rows:
    seconds are display numbers (3 decimals); `by_operation` maps each operation to its seconds
    (seed 001 divides them by 60), `count_by_operation` to its number of calls (seed 000's
    per-operation `count`); every day of the period appears in daily_trend."""
    by_op: dict[str, int] = {}
    calls: dict[str, int] = {}
    by_day: dict[int, int] = {}
    for op, day, charged, n in rows:
        by_op[op] = by_op.get(op, 0) + charged
        calls[op] = calls.get(op, 0) + n
        by_day[day] = by_day.get(day, 0) + charged
    trend = []
    day_ms = to_ms(start)
    while day_ms < to_ms(end):
        trend.append({"date": iso_utc(day_ms)[:10],
                      "seconds": by_day.get(day_ms, 0) / MS_PER_SECOND})
        day_ms += MS_PER_DAY
    return {"period": period, "from": iso_utc(to_ms(start)), "to": iso_utc(to_ms(end)),
            "total_seconds": sum(by_op.values()) / MS_PER_SECOND,
            "by_operation": {op: ms / MS_PER_SECOND for op, ms in sorted(by_op.items())},
            "count_by_operation": dict(sorted(calls.items())),
            "daily_trend": trend}
