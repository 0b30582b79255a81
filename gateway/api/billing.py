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
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.edge import (
    body_and_account,
    int_param,
    json_response,
    own_account,
    period_window,
    services_for,
)
from gateway.api.operations import (
    ACCOUNT_OR_SIGNED,
    PERIOD,
    PUBLIC,
    USER_ERRORS,
    USER_ID,
    Operation,
    Param,
    Reply,
    web_routes,
)
from gateway.api.shapes import BalanceDocument, PeriodWindow, Shape, omitted, timestamp
from gateway.balance_view import balance_document
from gateway.problems import BadRequest
from gateway.proxy.payment_required import suggestions_for
from policies.catalog import UnknownCurrency, catalog_document
from policies.compiled import Policy
from policies.schema import Currency
from policies.units import TIME, UnitKind, UnitOfAccount
from storage.clock import MS_PER_DAY, MS_PER_SECOND, ceil_seconds, iso_utc, to_ms
from storage.engine.buckets import EventType

# --- reply shapes ----------------------------------------------------------------------------


class _Priced(Shape):
    currency: Currency = Field(description="Currency of this item's price: always the "
                                           "document's `currency`.")
    unit_amount_cents: int = Field(ge=0, description="Price in minor units (cents).")
    price: float = Field(ge=0, description="The same amount in major units, for display only.")
    display_price: float = Field(ge=0, description="The same amount in major units (a number, "
                                                   "as `price`), for display only.")
    display_price_text: str = Field(description="Formatted price, e.g. `$5.00`, `€19.00`.")


class CatalogPackage(_Priced):
    """A one-off package and the amount it grants: minutes, credits or tokens (the unit's)."""

    key: str
    name: str
    minutes: int | None = omitted("Minutes it grants (time deployments).", ge=0)
    credits: int | float | None = omitted("Credits it grants, in the unit's currency.", ge=0)
    credits_micros: int | None = omitted("`credits` in micro-units.", ge=0)
    tokens: int | None = omitted("Tokens it grants (tokens deployments).", ge=0)
    unit: str | None = omitted("`USD` or `tokens` (currency and tokens deployments).")
    taxInclusive: bool


class Advisor(Shape):
    eligible: bool


class CatalogSubscription(_Priced):
    """A subscription: minutes per period on `plan`, with the plan's bonus and rollover caps."""

    key: str
    name: str
    plan: str
    minutes: int | None = omitted("Minutes per period (time deployments).", ge=0)
    credits: int | float | None = omitted("Credits per period (currency deployments).", ge=0)
    credits_micros: int | None = omitted("`credits` in micro-units.", ge=0)
    tokens: int | None = omitted("Tokens per period (tokens deployments).", ge=0)
    unit: str | None = omitted("`USD` or `tokens` (currency and tokens deployments).")
    taxInclusive: bool
    advisor: Advisor
    bonusDaily: int | float | None = omitted("Daily bonus of the plan (minutes, or the unit).",
                                             ge=0)
    monthlyBonusCap: int | float | None = omitted("Monthly cap of the bonus (minutes, or the "
                                                  "unit).", ge=0)
    rolloverCap: int | float | None = omitted("What may roll over (minutes, or the unit).", ge=0)


class RolloverPolicy(Shape):
    days: int = Field(ge=0)


class Catalog(Shape):
    """The seeds' PricingCatalog in one currency."""

    version: str = Field(description="Catalog version; part of the ETag.")
    currency: Currency = Field(description="Currency of the document and of every item (USD "
                                           "on fallback).")
    rollover_policy: RolloverPolicy
    subscriptions: list[CatalogSubscription]
    packages: list[CatalogPackage]
    currency_fallback_from: str | None = omitted(
        "The requested currency, when the catalog does not offer it or any item has no price "
        "in it: the whole document is then in USD.")


class BillingEvent(Shape):
    """A ledger entry (the seeds' BillingEvent plus `id` and the exact `amount_ms`)."""

    id: str = Field(pattern=r"^le_[0-9]+$")
    type: EventType
    seconds: float | None = omitted("Signed amount in seconds (3 decimals), for display; "
                                    "time deployments.")
    amount_ms: int | None = omitted("Signed exact amount in ledger units (ms); time "
                                    "deployments.")
    amount: int | float | None = omitted("Signed amount in `unit`; currency and tokens "
                                         "deployments.")
    amount_micros: int | None = omitted("Signed exact amount in micro-units; currency units.")
    unit: str | None = omitted("`USD` or `tokens`; currency and tokens deployments.")
    reason: str
    timestamp: str = timestamp("When the entry was written.")
    metadata: dict[str, Any]


class EventsPage(Shape):
    events: list[BillingEvent] = Field(description="Newest first.")
    next_cursor: str | None = Field(pattern=r"^le_[0-9]+$",
                                    description="`cursor` of the next page; null on the last.")


class TrendDay(Shape):
    date: str = Field(json_schema_extra={"format": "date"})
    seconds: float | None = omitted("Seconds charged that day (time deployments).", ge=0)
    amount: int | float | None = omitted("Charged that day in `unit` (currency, tokens).", ge=0)


class UsageAnalytics(PeriodWindow):
    """The seeds' UsageAnalytics of one account (seconds charged, 3 decimals; in a currency or
    tokens deployment amounts in `unit` instead, `total` with its `total_micros` twin)."""

    total_seconds: float | None = omitted("Seconds charged (time deployments).", ge=0)
    unit: str | None = omitted("`USD` or `tokens` (currency and tokens deployments).")
    total: int | float | None = omitted("Charged in `unit` (currency, tokens).", ge=0)
    total_micros: int | None = omitted("`total` in micro-units (currency units).", ge=0)
    by_operation: dict[str, int | float] = Field(description="Seconds (or amounts in `unit`) "
                                                             "charged per operation.")
    count_by_operation: dict[str, int] = Field(description="Calls settled per operation.")
    daily_trend: list[TrendDay] = Field(description="Every UTC day of the period, oldest first.")


class PackageSuggestion(Shape):
    type: Literal["package"]
    key: str
    minutes: int | None = omitted("Minutes the package grants (time deployments).", ge=0)
    credits: int | float | None = omitted("Credits it grants (currency deployments).", ge=0)
    credits_micros: int | None = omitted("`credits` in micro-units.", ge=0)
    tokens: int | None = omitted("Tokens it grants (tokens deployments).", ge=0)


class UpgradeSuggestion(Shape):
    type: Literal["upgrade"]
    plan: str


Suggestion = PackageSuggestion | UpgradeSuggestion


class BatchCheckItem(Shape):
    """One operation's verdict (seed 001's BatchOperationResult, with what it was checked
    against)."""

    operation: str
    ok: bool = Field(description="The balance covers this and every earlier operation.")
    deficit_seconds: int | None = omitted("Cumulative shortfall up to this operation.", ge=0)
    estimate_seconds: int | None = omitted("This operation's estimate.", ge=0)
    required_seconds: int | None = omitted("Sum of the estimates up to this one.", ge=0)
    balance_seconds: int | None = omitted("The available balance checked against (whole "
                                          "seconds, rounded down).", ge=0)
    deficit: int | float | None = omitted("`deficit_seconds` in `unit` (currency, tokens).", ge=0)
    deficit_micros: int | None = omitted("Exact twin (currency units).", ge=0)
    estimate: int | float | None = omitted("`estimate_seconds` in `unit`.", ge=0)
    estimate_micros: int | None = omitted("Exact twin (currency units).", ge=0)
    required: int | float | None = omitted("`required_seconds` in `unit`.", ge=0)
    required_micros: int | None = omitted("Exact twin (currency units).", ge=0)
    balance: int | float | None = omitted("`balance_seconds` in `unit` (exact).", ge=0)
    balance_micros: int | None = omitted("Exact twin (currency units).", ge=0)
    unit: str = Field(description="`seconds` (time: the `*_seconds` members), else `USD` or "
                                  "`tokens` (the plain members).")
    estimate_source: Literal["client", "fixed", "learned"]
    confidence: Literal["high", "medium", "low", "fixed"] | None = omitted(
        "How sure the route's estimate is (not for client estimates).")
    based_on_samples: int | None = omitted("Samples behind a learned estimate.", ge=0)
    suggestions: list[Suggestion] | None = omitted("What to buy to cover the deficit.")


class BatchCheckResult(RootModel[Annotated[list[BatchCheckItem],
                                           Field(min_length=1, max_length=10)]]):
    """The bare array of seed 001's `BatchOperationResult[]`, one per operation, in order."""


async def catalog(request: Request) -> Response:
    """`GET /v1/billing/catalog`: the public catalog in `?currency=` (ETag, 304)."""
    s = services_for(request)
    try:
        doc, etag = catalog_document(s.policy.document.catalog, s.policy.plans,
                                     request.query_params.get("currency"), s.policy.unit)
    except UnknownCurrency as exc:
        raise BadRequest(f"Unknown currency {exc}; use one of USD, EUR, GBP, EGP, SAR, "
                         "AED.") from None
    headers = {"etag": etag, "cache-control": "public, max-age=300",
               "vary": "accept-encoding"}
    inm = request.headers.get("if-none-match", "")
    if etag in (t.strip() for t in inm.split(",")) or inm.strip() == "*":
        return Response(status_code=304, headers=headers)
    return json_response(Catalog.model_validate(doc).wire(), headers)


async def balance(request: Request) -> Response:
    """`GET /v1/billing/balance|enhanced-balance/{userId}`: the account's balance."""
    s = services_for(request)
    account_id = await own_account(request)
    snap = await s.ledger.balance(account_id)
    doc = balance_document(snap, s.policy.plans.get(snap.plan_key), s.policy.catalog_version,
                           s.policy.unit)
    return json_response(BalanceDocument.of(doc).wire())


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
    doc = EventsPage(events=[event_view(r, s.policy.unit) for r in page],
                     next_cursor=f"le_{page[-1]['id']}" if len(rows) > limit else None)
    return json_response(doc.wire())


async def usage(request: Request) -> Response:
    """`GET /v1/billing/usage/{userId}?period=`: the account's usage analytics."""
    s = services_for(request)
    account_id = await own_account(request)
    period, start, end = period_window(request)
    key_id, end_user = request.query_params.get("key_id"), request.query_params.get("end_user")
    if (key_id and len(key_id) > 40) or (end_user and len(end_user) > 256):
        raise BadRequest("key_id or end_user too long.")
    rows = await s.ledger.usage_summary(account_id, to_ms(start), to_ms(end), key_id or None,
                                        end_user or None)
    return json_response(usage_view(rows, period, start, end, s.policy.unit))


async def check_batch(request: Request) -> Response:
    """`POST /v1/billing/check-sufficient-batch`: a cumulative preflight of 1–10 calls."""
    s = services_for(request)
    batch, account_id = await body_and_account(request, BatchCheck)
    needs: list[tuple[str, int, dict[str, Any]]] = []
    unit = s.policy.unit
    for i, op in enumerate(batch.operations):
        need, basis = _operation_need(s.policy, op, i)
        if need is None:
            field = "estimate_seconds" if unit.kind is UnitKind.TIME else "estimate"
            raise BadRequest(f"operations.{i}.{field} is required for "
                             f"'{op.operation}' (its estimate depends on the request)")
        needs.append((op.operation, need, basis))
    snap = await s.ledger.balance(account_id)
    available = max(0, snap.available)
    results, running = [], 0
    for name, need, basis in needs:
        running += need
        deficit = max(0, running - available)
        if deficit:
            basis = {**basis, "suggestions": suggestions_for(
                deficit, s.policy.document.catalog, snap.plan_key, unit)}
        if unit.kind is UnitKind.TIME:
            amounts: dict[str, Any] = dict(
                deficit_seconds=ceil_seconds(deficit), estimate_seconds=ceil_seconds(need),
                required_seconds=ceil_seconds(running),
                balance_seconds=available // MS_PER_SECOND, unit="seconds")
        else:
            amounts = {**unit.json_fields("deficit", deficit), **unit.json_fields("estimate", need),
                       **unit.json_fields("required", running),
                       **unit.json_fields("balance", available), "unit": unit.api_name}
        results.append(BatchCheckItem(operation=name, ok=deficit == 0, **amounts, **basis))
    return json_response(BatchCheckResult(results).model_dump(mode="json", exclude_unset=True))


class BatchOperation(BaseModel):
    """One operation of a batch preflight (seeds: BatchOperationRequest)."""

    model_config = ConfigDict(extra="forbid")
    operation: str = Field(min_length=1, max_length=64)
    estimate_seconds: int | None = Field(None, ge=0, le=10_000_000)
    estimate: Decimal | None = Field(None, ge=0, le=10**9, allow_inf_nan=False, description=(
        "The client's estimate in the unit (currency and tokens deployments)."))


class BatchCheck(BaseModel):
    """`POST /v1/billing/check-sufficient-batch` body: 1–10 operations, checked cumulatively."""

    model_config = ConfigDict(extra="forbid")
    userId: str | None = None
    operations: list[BatchOperation] = Field(min_length=1, max_length=10)


def _operation_need(
    policy: Policy, op: BatchOperation, i: int
) -> tuple[int | None, dict[str, Any]]:
    """(units one call needs, how that was estimated). The client's estimate wins (seconds in
    time deployments, `estimate` in the unit elsewhere — the other is a 400); else the route's
    fixed or learned estimate with its sample size and confidence."""
    unit = policy.unit
    wrong = op.estimate if unit.kind is UnitKind.TIME else op.estimate_seconds
    if wrong is not None:
        field = "estimate" if unit.kind is UnitKind.TIME else "estimate_seconds"
        raise BadRequest(f"operations.{i}.{field}: this deployment counts {unit.api_name}")
    if op.estimate_seconds is not None:
        return op.estimate_seconds * MS_PER_SECOND, {"estimate_source": "client"}
    if op.estimate is not None:
        try:
            return unit.from_api(op.estimate, round_up=True), {"estimate_source": "client"}
        except ValueError as exc:
            raise BadRequest(f"operations.{i}.estimate: {exc}") from None
    route = next((r for r in policy.routes if r.operation == op.operation), None)
    if route is None:
        return None, {}
    stats = route.estimator.stats()
    return route.estimator.preflight(), {"estimate_source": stats["kind"],
                                         "confidence": stats["confidence"],
                                         "based_on_samples": stats["samples"]}


def event_view(row: dict[str, Any], unit: UnitOfAccount = TIME) -> BillingEvent:
    """A ledger entry as the seeds' BillingEvent: type, seconds (signed, display), reason,
    timestamp (RFC 3339 UTC), metadata — plus `id` and the exact integer `amount_ms`; in a
    currency or tokens deployment `amount` (+ `amount_micros`) and `unit` instead of them."""
    meta = json.loads(row["metadata_json"]) if row["metadata_json"] else {}
    delta = int(row["delta"])
    amounts: dict[str, Any] = (
        {"seconds": round(delta / MS_PER_SECOND, 3), "amount_ms": delta}
        if unit.kind is UnitKind.TIME
        else {**unit.json_fields("amount", delta), "unit": unit.api_name})
    return BillingEvent(id=f"le_{row['id']}", type=row["event_type"], **amounts,
                        reason=row["reason"], timestamp=iso_utc(row["created_at_ms"]),
                        metadata=meta)


def usage_view(
    rows: list[tuple[str, int, int, int]], period: str, start: datetime, end: datetime,
    unit: UnitOfAccount = TIME,
) -> dict[str, Any]:
    """The seeds' UsageAnalytics from (operation, day start ms, charged ms, calls) rows:
    seconds are display numbers (3 decimals); `by_operation` maps each operation to its seconds
    (seed 001 divides them by 60), `count_by_operation` to its number of calls (seed 000's
    per-operation `count`); every day of the period appears in daily_trend. In a currency or
    tokens deployment the amounts are in `unit` (`total`, `by_operation`, `daily_trend[].amount`).
    """
    by_op: dict[str, int] = {}
    calls: dict[str, int] = {}
    by_day: dict[int, int] = {}
    for op, day, charged, n in rows:
        by_op[op] = by_op.get(op, 0) + charged
        calls[op] = calls.get(op, 0) + n
        by_day[day] = by_day.get(day, 0) + charged
    trend = []
    day_ms = to_ms(start)
    timed = unit.kind is UnitKind.TIME
    while day_ms < to_ms(end):
        charged = by_day.get(day_ms, 0)
        trend.append(TrendDay(date=iso_utc(day_ms)[:10], seconds=charged / MS_PER_SECOND)
                     if timed else TrendDay(date=iso_utc(day_ms)[:10],
                                            amount=unit.to_json(charged)))
        day_ms += MS_PER_DAY
    if not timed:
        return UsageAnalytics(
            period=period, from_=iso_utc(to_ms(start)), to=iso_utc(to_ms(end)),
            unit=unit.api_name, **unit.json_fields("total", sum(by_op.values())),
            by_operation={op: unit.to_json(n) for op, n in sorted(by_op.items())},
            count_by_operation=dict(sorted(calls.items())), daily_trend=trend).wire()
    return UsageAnalytics(
        period=period, from_=iso_utc(to_ms(start)), to=iso_utc(to_ms(end)),
        total_seconds=sum(by_op.values()) / MS_PER_SECOND,
        by_operation={op: ms / MS_PER_SECOND for op, ms in sorted(by_op.items())},
        count_by_operation=dict(sorted(calls.items())), daily_trend=trend).wire()


# --- routes ----------------------------------------------------------------------------------

_CATALOG_HEADERS = {
    "ETag": {"required": True, "description": "Strong ETag per catalog version and currency.",
             "schema": {"type": "string", "pattern": '^".+"$'}},
    "Cache-Control": {"required": True,
                      "schema": {"type": "string", "const": "public, max-age=300"}},
    "Vary": {"required": True, "schema": {"type": "string", "const": "accept-encoding"}},
}

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", "/v1/billing/catalog", "getCatalog", "The public pricing catalog", "billing",
        PUBLIC,
        (Reply(200, "The catalog in the requested currency.", Catalog,
               headers=_CATALOG_HEADERS),
         Reply(304, "Not modified: `If-None-Match` names the current ETag (or is `*`).",
               headers=_CATALOG_HEADERS)),
        (BadRequest,),
        params=(
            Param("currency", "query",
                  {"type": "string", "enum": ["USD", "EUR", "GBP", "EGP", "SAR", "AED"],
                   "default": "USD"},
                  "Case-insensitive. A currency the catalog does not offer, or that some item "
                  "has no price in, falls back to USD for the whole document with "
                  "`currency_fallback_from`; an unknown code is a 400."),
            Param("If-None-Match", "header", {"type": "string"},
                  "ETags of a cached copy (comma-separated) or `*`: a match answers 304."),
        ),
        description="Packages and subscriptions with integer prices (`unit_amount_cents`), "
                    "all in the document's `currency`; `display_price` is the amount in major "
                    "units (a number), `display_price_text` it formatted. The ETag is per "
                    "resulting document (version, requested currency, content).",
        endpoint=catalog),
    Operation(
        "GET", "/v1/billing/balance/{userId}", "getBalance", "An account's balance", "billing",
        ACCOUNT_OR_SIGNED,
        (Reply(200, "The seeds' EnhancedBalance (time) or UnitBalance (currency, tokens).",
               BalanceDocument),),
        USER_ERRORS, params=(USER_ID,), endpoint=balance),
    Operation(
        "GET", "/v1/billing/enhanced-balance/{userId}", "getEnhancedBalance",
        "An account's balance (seed 000's decided path)", "billing", ACCOUNT_OR_SIGNED,
        (Reply(200, "The same document as `GET /v1/billing/balance/{userId}`.",
               BalanceDocument),),
        USER_ERRORS, params=(USER_ID,), endpoint=balance),
    Operation(
        "GET", "/v1/billing/events/{userId}", "listEvents", "An account's ledger entries",
        "billing", ACCOUNT_OR_SIGNED, (Reply(200, "One page, newest first.", EventsPage),),
        USER_ERRORS,
        params=(
            USER_ID,
            Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200,
                                     "default": 50}, "Page size (decimal digits only)."),
            Param("cursor", "query", {"type": "string", "pattern": "^le_[0-9]{1,18}$"},
                  "`next_cursor` of the previous page; anything else is a 400."),
        ), endpoint=events),
    Operation(
        "GET", "/v1/billing/usage/{userId}", "getUsage", "An account's usage analytics",
        "billing", ACCOUNT_OR_SIGNED,
        (Reply(200, "Seconds charged (and calls) by operation, seconds by day.",
               UsageAnalytics),),
        USER_ERRORS, params=(
            USER_ID, PERIOD,
            Param("key_id", "query", {"type": "string", "maxLength": 40},
                  "Only calls made with this API key (`key_…`)."),
            Param("end_user", "query", {"type": "string", "maxLength": 256},
                  "Only calls made for this end user.")), endpoint=usage),
    Operation(
        "POST", "/v1/billing/check-sufficient-batch", "checkSufficientBatch",
        "Preflight 1–10 operations against the balance", "billing", ACCOUNT_OR_SIGNED,
        (Reply(200, "The bare array of per-operation verdicts (cumulative), in request order; "
                    "nothing is held.", BatchCheckResult),),
        USER_ERRORS, body=BatchCheck,
        description="With an API key `userId` may be omitted (another account's id is a 404); "
                    "a server-signed request must name it. Without `estimate_seconds` the "
                    "route's fixed or learned estimate is used; an operation whose estimate "
                    "depends on the request body needs `estimate_seconds` (400 otherwise).",
        endpoint=check_batch),
)
BILLING_ROUTES = web_routes(OPERATIONS)
