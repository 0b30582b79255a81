"""Billing API read endpoints (SPEC §8): the public catalog and an account's balance.

User data answers `Cache-Control: no-store`; the catalog is public with a strong ETag per
catalog version and currency (`If-None-Match` → 304, `Cache-Control: public, max-age=300`).
An account's own API key reads its own data only: any other account id is a 404, so account
ids cannot be probed.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as WebRoute

from gateway import hmac_auth
from gateway.auth import Caller, key_from_headers
from gateway.balance_view import enhanced_balance
from gateway.problems import (
    BadRequest,
    NotFound,
    StoreUnavailableProblem,
    Unauthorized,
    validation_problem,
)
from gateway.proxy.payment_required import ceil_seconds, suggestions_for
from policies.catalog import UnknownCurrency, catalog_document
from policies.compiled import Policy
from storage import bonus
from storage.ports import StoreUnavailable, UnknownAccount
from storage.sql.ledger import to_ms
from storage.timestamps import iso_utc

if TYPE_CHECKING:
    from gateway.app import Gateway

NO_STORE = {"cache-control": "no-store"}


def json_response(doc: object, headers: dict[str, str] = NO_STORE, status: int = 200) -> Response:
    """A JSON response (orjson); user data by default, so `Cache-Control: no-store`."""
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json",
                    headers=headers)


async def caller_for(gw: Gateway, request: Request) -> Caller:
    """The account whose API key signed this request. Raises Unauthorized (401) or
    StoreUnavailableProblem (503)."""
    s = gw.services
    assert s is not None
    key = key_from_headers(request.headers.get("authorization", "").encode("latin-1") or None,
                           request.headers.get("x-api-key", "").encode("latin-1") or None)
    if key is None:
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key'.")
    try:
        caller = await s.keys.resolve(key)
    except StoreUnavailable as exc:
        raise StoreUnavailableProblem("The key store is unreachable; retry shortly.") from exc
    if caller is None:
        raise Unauthorized("Unknown or revoked API key.")
    return caller


async def server_signed(gw: Gateway, request: Request) -> bool:
    """True when the request carries a valid `X-HMAC-Signature` (a product backend acting for
    any account); False when it carries none. Raises Unauthorized for a bad signature."""
    header = request.headers.get("x-hmac-signature")
    if header is None:
        return False
    s = gw.services
    assert s is not None
    if not s.settings.hmac_keys:
        raise Unauthorized("HMAC signatures are not configured on this gateway.")
    try:
        await hmac_auth.verify(header, s.settings.hmac_keys, s.nonces, request.method,
                               request.url.path, request.url.query, await request.body())
    except StoreUnavailable as exc:
        raise StoreUnavailableProblem("The nonce store is unreachable; retry shortly.") from exc
    return True


BodyT = TypeVar("BodyT", bound=BaseModel)


async def body_and_account(
    gw: Gateway, request: Request, model: type[BodyT]
) -> tuple[BodyT, str]:
    """(validated JSON body, account it acts for) of a POST: a server-signed request names the
    account in the body's `userId`; an API key acts for its own account (another `userId` is a
    404). Raises Unauthorized, BadRequest (invalid body), NotFound."""
    signed = await server_signed(gw, request)
    caller = None if signed else await caller_for(gw, request)
    body = json_body(model, await request.body())
    user_id = getattr(body, "userId", None)
    if caller is not None:
        if user_id not in (None, caller.account_id):
            raise NotFound(f"No account {user_id!r} for this API key.")
        return body, caller.account_id
    if user_id is None:
        raise BadRequest("userId is required on a server-signed request.")
    return body, str(user_id)


# A JSON string escape of U+0000 (`\u0000` after an even run of backslashes, i.e. not itself
# escaped) or a raw NUL byte.
_NUL = re.compile(rb"\x00|(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)


def json_body(model: type[BodyT], raw: bytes) -> BodyT:
    """`raw` validated as `model`. Raises BadRequest for invalid JSON or fields, and for a NUL
    character anywhere in it: PostgreSQL cannot store one in text, so it is refused at the edge
    (on every store, so both answer alike)."""
    if _NUL.search(raw):
        raise BadRequest("body: strings must not contain the NUL character (U+0000).")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise validation_problem(exc) from None


async def own_account(gw: Gateway, request: Request) -> str:
    """The account a read is for: `{userId}` of the path, else the `userId` query parameter,
    when the request may read it — a server-signed request (any account; it must name one,
    else BadRequest), or the account's own API key (naming none means its own; any other id is
    a 404, so ids cannot be probed)."""
    user_id = request.path_params.get("userId") or request.query_params.get("userId")
    if await server_signed(gw, request):
        if not user_id:
            raise BadRequest("userId is required on a server-signed request.")
        s = gw.services
        assert s is not None
        try:
            exists = await s.ledger.account_exists(user_id)
        except StoreUnavailable as exc:
            raise StoreUnavailableProblem("The billing store is unreachable.") from exc
        if not exists:
            raise NotFound(f"No account {user_id!r}.")
        return user_id
    caller = await caller_for(gw, request)
    if user_id not in (None, "", caller.account_id):
        raise NotFound(f"No account {user_id!r} for this API key.")
    return caller.account_id


def billing_routes(gw: Gateway) -> list[WebRoute]:
    """The Starlette routes of the billing read API."""

    async def catalog(request: Request) -> Response:
        s = gw.services
        assert s is not None
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
        s = gw.services
        assert s is not None
        account_id = await own_account(gw, request)
        try:
            snap = await s.ledger.balance(account_id)
        except UnknownAccount:
            raise NotFound(f"No account {account_id!r}.") from None
        except StoreUnavailable as exc:
            raise StoreUnavailableProblem("The billing store is unreachable.") from exc
        doc = enhanced_balance(snap, s.policy.plans.get(snap.plan_key), s.policy.catalog_version)
        return json_response(doc)

    async def events(request: Request) -> Response:
        s = gw.services
        assert s is not None
        account_id = await own_account(gw, request)
        limit = int_param(request, "limit", 50, 1, 200)
        cursor = request.query_params.get("cursor")
        before = None
        if cursor:
            # ASCII digits only, and few enough to stay within the database's 64-bit ids.
            match = re.fullmatch(r"le_([0-9]{1,18})", cursor)
            if match is None:
                raise BadRequest("cursor must be a next_cursor value from a previous page.")
            before = int(match[1])
        try:
            rows = await s.ledger.events(account_id, limit + 1, before)
        except StoreUnavailable as exc:
            raise StoreUnavailableProblem("The billing store is unreachable.") from exc
        page = rows[:limit]
        doc = {"events": [event_view(r) for r in page],
               "next_cursor": f"le_{page[-1]['id']}" if len(rows) > limit else None}
        return json_response(doc)

    async def usage(request: Request) -> Response:
        s = gw.services
        assert s is not None
        account_id = await own_account(gw, request)
        period, start, end = period_window(request)
        try:
            rows = await s.ledger.usage_summary(account_id, to_ms(start), to_ms(end))
        except StoreUnavailable as exc:
            raise StoreUnavailableProblem("The billing store is unreachable.") from exc
        return json_response(usage_view(rows, period, start, end))

    async def check_batch(request: Request) -> Response:
        s = gw.services
        assert s is not None
        batch, account_id = await body_and_account(gw, request, BatchCheck)
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
        except StoreUnavailable as exc:
            raise StoreUnavailableProblem("The billing store is unreachable.") from exc
        available = max(0, snap.available)
        results, running = [], 0
        for name, need, basis in needs:
            running += need
            deficit = max(0, running - available)
            item: dict[str, Any] = {"operation": name, "ok": deficit == 0,
                                    "deficit_seconds": ceil_seconds(deficit),
                                    "estimate_seconds": ceil_seconds(need),
                                    "required_seconds": ceil_seconds(running),
                                    "balance_seconds": available // 1000, "unit": "seconds",
                                    **basis}
            if deficit:
                item["suggestions"] = suggestions_for(deficit, s.policy.document.catalog,
                                                      snap.plan_key)
            results.append(item)
        return json_response(results)

    return [
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
        return op.estimate_seconds * 1000, {"estimate_source": "client"}
    route = next((r for r in policy.routes if r.operation == op.operation), None)
    if route is None:
        return None, {}
    stats = route.estimator.stats()
    return route.estimator.preflight(), {"estimate_source": stats["kind"],
                                         "confidence": stats["confidence"],
                                         "based_on_samples": stats["samples"]}


PERIODS = ("day", "week", "month")


def period_bounds(period: str, now: datetime) -> tuple[datetime, datetime]:
    """(UTC start, exclusive end = tomorrow 00:00 UTC) of `period` as of `now`: `day` today,
    `week` the last 7 UTC days including today, `month` this calendar month (seed 000's
    daily/weekly/monthly analytics)."""
    end = bonus.day_end(now)
    if period == "day":
        return bonus.day_start(now), end
    if period == "week":
        return end - timedelta(days=7), end
    return bonus.month_start(now), end


def period_window(
    request: Request, now: datetime | None = None
) -> tuple[str, datetime, datetime]:
    """(`period` query value, its UTC start, its end) of `period_bounds` for `day`, `week` or
    `month` (the default), as of `now` (default: the current time). Raises BadRequest for
    anything else."""
    period = request.query_params.get("period", "month")
    if period not in PERIODS:
        raise BadRequest("period must be 'day', 'week' or 'month'.")
    start, end = period_bounds(period, now or datetime.now(UTC))
    return period, start, end


def int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    """Integer query parameter `name` within low..high (default when absent). Raises
    BadRequest for anything but 1–9 ASCII digits in range (`str.isdigit` would also pass `²`
    and digit strings too long for `int`)."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if re.fullmatch(r"[0-9]{1,9}", raw) is None or not low <= int(raw) <= high:
        raise BadRequest(f"{name} must be an integer within {low}..{high}.")
    return int(raw)


def event_view(row: dict[str, Any]) -> dict[str, Any]:
    """A ledger entry as the seeds' BillingEvent: type, seconds (signed, display), reason,
    timestamp (RFC 3339 UTC), metadata — plus `id` and the exact integer `amount_ms`."""
    meta = json.loads(row["metadata_json"]) if row["metadata_json"] else {}
    return {"id": f"le_{row['id']}", "type": row["event_type"],
            "seconds": round(row["delta"] / 1000, 3), "amount_ms": row["delta"],
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
        trend.append({"date": iso_utc(day_ms)[:10], "seconds": by_day.get(day_ms, 0) / 1000})
        day_ms += 86_400_000
    return {"period": period, "from": iso_utc(to_ms(start)), "to": iso_utc(to_ms(end)),
            "total_seconds": sum(by_op.values()) / 1000,
            "by_operation": {op: ms / 1000 for op, ms in sorted(by_op.items())},
            "count_by_operation": dict(sorted(calls.items())),
            "daily_trend": trend}
