"""Provider cost endpoints (issue 10 item 3; seed 002's cost records and summaries).

- `GET /v1/billing/costs/{userId}`: the account's cost records (seed 002 `CostRecordResponse`),
  newest first, by cursor pages; `from`/`to` (RFC 3339 or a date; default this UTC month),
  `key_id=` and `end_user=` filters.
- `GET /v1/billing/costs/{userId}/summary`: seed 002 `CostSummaryResponse` by provider/model.
- `GET /v1/admin/costs/summary?period=day|month`: every account, by provider and model, with
  the provider cost, what was charged (in the unit) and the margin.
- `GET /v1/admin/costs/daily?period=day|month`: the same totals per UTC day (console chart).

Provider cost is the operator's business: the account's own API key reads these only when the
policy says `expose_provider_cost: true` (otherwise a 404, as if absent); server-signed (HMAC)
and admin callers always may. Costs are USD decimal numbers (at most 6 decimals: the stored
micro-units exactly).
"""

from __future__ import annotations

import hmac
import re
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.admin import check
from gateway.api.edge import int_param, json_response, own_account, server_signed, services_for
from gateway.api.operations import (
    ACCOUNT_OR_SIGNED,
    ADMIN,
    ADMIN_ERRORS,
    USER_ERRORS,
    USER_ID,
    Operation,
    Param,
    Reply,
    web_routes,
)
from gateway.api.shapes import Shape
from gateway.problems import BadRequest, NotFound
from policies.units import UnitKind, UnitOfAccount
from storage.clock import MS_PER_DAY, iso_utc, to_ms
from storage.engine import bonus
from storage.ports import CostDay, CostGroup, CostQuery

USD = UnitOfAccount(UnitKind.CURRENCY, "USD")
_CURSOR = re.compile(r"c_([0-9]{1,15})_([A-Za-z0-9_]{1,40})")


class CostRecord(Shape):
    """Seed 002's CostRecordResponse (plus `end_user`, `key_id`); costs in USD, null when the
    price source did not know the model (`cost_reason` says why)."""

    id: str = Field(description="The usage record's id (the request id).")
    task_id: str = Field(description="The request id (`x-request-id`).")
    agent_id: str | None = Field(description="Always null (seed 002 field).")
    sandbox_id: str | None = Field(description="Always null (seed 002 field).")
    billing_account_id: str | None = Field(description="The account.")
    provider: str
    model: str
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)
    prompt_cost: float | None = Field(ge=0, description="USD.")
    completion_cost: float | None = Field(ge=0, description="USD.")
    total_cost: float | None = Field(ge=0, description="USD.")
    total_cost_micros: int | None = Field(ge=0, description="The exact cost, USD micro-units.")
    cost_reason: str | None = Field(description="Why the cost is null (`unknown-model`, …).")
    price_version: str | None = Field(description="genai-prices data version used.")
    end_user: str | None
    key_id: str | None
    recorded_at: str | None


class CostsPage(Shape):
    records: list[CostRecord]
    next_cursor: str | None = Field(description="Pass as `cursor` for older records.")


class CostBreakdownItem(Shape):
    provider: str
    model: str
    cost: float = Field(ge=0, description="USD of the priced calls.")
    tokens: int = Field(ge=0)
    records: int = Field(ge=0)
    unpriced_records: int = Field(ge=0, description="Calls whose cost is unknown (not in cost).")


class CostSummary(Shape):
    """Seed 002's CostSummaryResponse."""

    scope_type: str = Field(description="`account`, `key`, `end_user` or `system`.")
    scope_id: str | None
    total_cost: float = Field(ge=0, description="USD.")
    total_cost_micros: int = Field(ge=0)
    total_tokens: int = Field(ge=0)
    record_count: int = Field(ge=0)
    breakdown: list[CostBreakdownItem]


class AdminCostGroup(Shape):
    provider: str
    model: str
    calls: int = Field(ge=0)
    unpriced_calls: int = Field(ge=0)
    prompt_tokens: int = Field(ge=0)
    completion_tokens: int = Field(ge=0)
    provider_cost_usd: float = Field(ge=0)
    charged: int | float = Field(description="Charged, in the deployment's unit (`unit`).")
    charged_units: int = Field(description="Charged, ledger units (exact).")
    charged_usd: float | None = Field(description="Charged in USD (USD deployments), else null.")
    margin_usd: float | None = Field(description="charged_usd − provider_cost_usd, or null.")


class AdminCostSummary(Shape):
    period: Literal["day", "month"]
    from_: str = Field(alias="from")
    to: str
    unit: str = Field(description="The unit `charged` is in: `s`, `USD` or `tokens`.")
    provider_cost_usd: float
    charged: int | float
    charged_usd: float | None
    margin_usd: float | None
    by_model: list[AdminCostGroup]


class AdminCostDay(Shape):
    day: str = Field(description="The UTC day, `YYYY-MM-DD`.")
    calls: int = Field(ge=0)
    provider_cost_usd: float = Field(ge=0, description="Provider cost of the day's priced calls.")
    charged: int | float = Field(description="Charged, in the deployment's unit (`unit`).")
    charged_usd: float | None = Field(description="Charged in USD (USD deployments), else null.")
    margin_usd: float | None = Field(description="charged_usd − provider_cost_usd, or null.")


class AdminCostDaily(Shape):
    unit: str = Field(description="The unit `charged` is in: `s`, `USD` or `tokens`.")
    from_: str = Field(alias="from")
    to: str
    days: list[AdminCostDay] = Field(
        description="Every UTC day of the window, oldest first (zeros on days without calls).")


def _usd(micros: int | None) -> float | None:
    return None if micros is None else float(USD.to_api(micros))


def _instant(raw: str, name: str) -> datetime:
    try:
        if len(raw) == 10:
            d = date.fromisoformat(raw)
            return datetime(d.year, d.month, d.day, tzinfo=UTC)
        value = datetime.fromisoformat(raw)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise BadRequest(f"{name} must be an RFC 3339 time or a date (YYYY-MM-DD).") from None


async def _query(request: Request) -> tuple[CostQuery, str]:
    """The cost query of a billing request and its scope type; checks who may read it."""
    params = request.query_params
    if len(params.get("from", "")) > 40 or len(params.get("to", "")) > 40:
        raise BadRequest("from/to: too long")
    now = datetime.now(UTC)
    start = _instant(params["from"], "from") if "from" in params else bonus.month_start(now)
    end = _instant(params["to"], "to") if "to" in params else bonus.day_end(now)
    if end <= start or end - start > timedelta(days=400):
        raise BadRequest("to must be after from, at most 400 days later.")
    key_id, end_user = params.get("key_id"), params.get("end_user")
    if (key_id and len(key_id) > 40) or (end_user and len(end_user) > 256):
        raise BadRequest("key_id or end_user too long.")
    s = services_for(request)
    if _privileged(request):
        account_id = request.path_params["userId"]
        if not await s.accounts.account_exists(account_id):
            raise NotFound(f"No account {account_id!r}.")
    else:
        account_id = await own_account(request)
        if not s.policy.document.expose_provider_cost and not await server_signed(request):
            raise NotFound("Provider costs are not exposed to API keys on this deployment.")
    scope = "end_user" if end_user else "key" if key_id else "account"
    return CostQuery(account_id, to_ms(start), to_ms(end), key_id or None,
                     end_user or None), scope


def _privileged(request: Request) -> bool:
    """True when the request carries the admin credential."""
    token = services_for(request).settings.admin_token
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    return token is not None and token != "" and scheme.lower() == "bearer" \
        and hmac.compare_digest(presented.encode(), token.encode())


def _record(r: dict[str, Any]) -> CostRecord:
    prompt, completion = int(r["input_tokens"]), int(r["output_tokens"])
    return CostRecord(
        id=r["id"], task_id=r["id"], agent_id=None, sandbox_id=None,
        billing_account_id=r["account_id"],
        provider=r["provider"], model=r["model"] or "", prompt_tokens=prompt,
        completion_tokens=completion, total_tokens=prompt + completion,
        prompt_cost=_usd(r["prompt_cost"]), completion_cost=_usd(r["completion_cost"]),
        total_cost=_usd(r["total_cost"]), total_cost_micros=r["total_cost"],
        cost_reason=r["cost_reason"], price_version=r["price_version"], end_user=r["end_user"],
        key_id=r["key_id"], recorded_at=iso_utc(int(r["created_at_ms"])))


async def cost_records(request: Request) -> Response:
    """`GET /v1/billing/costs/{userId}`: cost records, newest first, cursor pages."""
    query, _scope = await _query(request)
    limit = int_param(request, "limit", 50, 1, 200)
    after = None
    cursor = request.query_params.get("cursor")
    if cursor:
        match = _CURSOR.fullmatch(cursor)
        if match is None:
            raise BadRequest("cursor must be a next_cursor value from a previous page.")
        after = (int(match[1]), match[2])
    rows = await services_for(request).ledger.cost_records(query, limit + 1, after)
    page = rows[:limit]
    last = page[-1] if len(rows) > limit else None
    return json_response(CostsPage(
        records=[_record(r) for r in page],
        next_cursor=f"c_{last['created_at_ms']}_{last['id']}" if last else None).wire())


def _breakdown(groups: list[CostGroup]) -> list[CostBreakdownItem]:
    return [CostBreakdownItem(provider=g.provider, model=g.model, cost=_usd(g.cost) or 0.0,
                              tokens=g.prompt_tokens + g.completion_tokens, records=g.calls,
                              unpriced_records=g.unpriced) for g in groups]


async def cost_summary(request: Request) -> Response:
    """`GET /v1/billing/costs/{userId}/summary`: cost by provider and model."""
    query, scope = await _query(request)
    groups = await services_for(request).ledger.cost_summary(query)
    total = sum(g.cost for g in groups)
    scope_id = query.end_user if scope == "end_user" else query.key_id if scope == "key" \
        else query.account_id
    return json_response(CostSummary(
        scope_type=scope, scope_id=scope_id, total_cost=_usd(total) or 0.0,
        total_cost_micros=total,
        total_tokens=sum(g.prompt_tokens + g.completion_tokens for g in groups),
        record_count=sum(g.calls for g in groups), breakdown=_breakdown(groups)).wire())


def _admin_window(request: Request) -> tuple[str, datetime, datetime]:
    """`?period=day|month` (default month) → (period, start, end): today or this calendar
    month in UTC, ending at the end of today. Raises BadRequest for any other period."""
    period = request.query_params.get("period", "month")
    if period not in ("day", "month"):
        raise BadRequest("period must be 'day' or 'month'.")
    now = datetime.now(UTC)
    start = bonus.day_start(now) if period == "day" else bonus.month_start(now)
    return period, start, bonus.day_end(now)


async def admin_cost_summary(request: Request) -> Response:
    """`GET /v1/admin/costs/summary?period=day|month`: system-wide cost, charge and margin by
    provider and model, from the daily cost rollup."""
    s = check(request)
    period, start, end = _admin_window(request)
    groups = await s.ledger.cost_summary(CostQuery(None, to_ms(start), to_ms(end)))
    unit = s.policy.unit
    usd_unit = unit.kind is UnitKind.CURRENCY and unit.currency == "USD"

    def charged_usd(units: int) -> float | None:
        return _usd(units) if usd_unit else None

    def margin(units: int, cost: int) -> float | None:
        return _usd(units - cost) if usd_unit else None

    rows = [AdminCostGroup(
        provider=g.provider, model=g.model, calls=g.calls, unpriced_calls=g.unpriced,
        prompt_tokens=g.prompt_tokens, completion_tokens=g.completion_tokens,
        provider_cost_usd=_usd(g.cost) or 0.0, charged=unit.to_json(g.charged),
        charged_units=g.charged, charged_usd=charged_usd(g.charged),
        margin_usd=margin(g.charged, g.cost)) for g in groups]
    cost, charged = sum(g.cost for g in groups), sum(g.charged for g in groups)
    return json_response(AdminCostSummary(
        period=period, from_=iso_utc(to_ms(start)), to=iso_utc(to_ms(end)),
        unit=unit.api_name, provider_cost_usd=_usd(cost) or 0.0,
        charged=unit.to_json(charged), charged_usd=charged_usd(charged),
        margin_usd=margin(charged, cost), by_model=rows).wire())


async def admin_cost_daily(request: Request) -> Response:
    """`GET /v1/admin/costs/daily?period=day|month`: system-wide provider cost, charge and
    margin per UTC day of today or this calendar month (every day up to today, zeros where
    nothing was called), from the daily cost rollup. USD
    members are decimal numbers; `charged_usd`/`margin_usd` are null unless the unit is USD."""
    s = check(request)
    _period, start, end = _admin_window(request)
    rolled = {d.day_ms: d for d in await s.ledger.cost_by_day(None, to_ms(start), to_ms(end))}
    # every day of the window, zeros where nothing was called (a chart's x axis stays linear)
    days = [rolled.get(day) or CostDay(day, 0, 0, 0)
            for day in range(to_ms(start), to_ms(end), MS_PER_DAY)]
    unit = s.policy.unit
    usd_unit = unit.kind is UnitKind.CURRENCY and unit.currency == "USD"
    return json_response(AdminCostDaily(
        unit=unit.api_name, from_=iso_utc(to_ms(start)), to=iso_utc(to_ms(end)),
        days=[AdminCostDay(
            day=iso_utc(d.day_ms)[:10], calls=d.calls, provider_cost_usd=_usd(d.cost) or 0.0,
            charged=unit.to_json(d.charged),
            charged_usd=_usd(d.charged) if usd_unit else None,
            margin_usd=_usd(d.charged - d.cost) if usd_unit else None) for d in days]).wire())


_WINDOW = (
    Param("from", "query", {"type": "string", "maxLength": 40},
          "Start (RFC 3339, or a date = its 00:00 UTC); default this UTC month's start."),
    Param("to", "query", {"type": "string", "maxLength": 40},
          "End, exclusive; default tomorrow 00:00 UTC. At most 400 days after `from`."),
    Param("key_id", "query", {"type": "string", "maxLength": 40},
          "Only calls made with this API key (`key_…`)."),
    Param("end_user", "query", {"type": "string", "maxLength": 256},
          "Only calls made for this end user."),
)
_WHO = ("Provider cost is shown to the account's own API key only when the policy sets "
        "`expose_provider_cost: true` (else 404); server-signed and admin callers always.")

_PERIOD = Param("period", "query", {"type": "string", "enum": ["day", "month"], "default": "month"},
                "`day`: today (UTC); `month`: this calendar month (UTC).")

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", "/v1/billing/costs/{userId}", "getCostRecords", "Provider cost per call",
        "billing", (*ACCOUNT_OR_SIGNED, *ADMIN),
        (Reply(200, "Cost records, newest first (seed 002 CostRecordResponse).", CostsPage),),
        USER_ERRORS,
        params=(USER_ID, *_WINDOW,
                Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200,
                                         "default": 50}, "Page size."),
                Param("cursor", "query", {"type": "string", "maxLength": 60},
                      "`next_cursor` of the previous page.")),
        description=_WHO, endpoint=cost_records),
    Operation(
        "GET", "/v1/billing/costs/{userId}/summary", "getCostSummary",
        "Provider cost by provider and model", "billing", (*ACCOUNT_OR_SIGNED, *ADMIN),
        (Reply(200, "Seed 002 CostSummaryResponse.", CostSummary),), USER_ERRORS,
        params=(USER_ID, *_WINDOW),
        description=_WHO + " Without filters it reads the daily cost rollup (UTC days).",
        endpoint=cost_summary),
    Operation(
        "GET", "/v1/admin/costs/summary", "getAdminCostSummary",
        "System-wide provider cost, charges and margin", "admin", ADMIN,
        (Reply(200, "By provider and model, from the daily rollup.", AdminCostSummary),),
        ADMIN_ERRORS,
        params=(_PERIOD,),
        endpoint=admin_cost_summary),
    Operation(
        "GET", "/v1/admin/costs/daily", "getAdminCostDaily",
        "System-wide provider cost, charges and margin per UTC day", "admin", ADMIN,
        (Reply(200, "Per UTC day with calls, from the daily rollup.", AdminCostDaily),),
        ADMIN_ERRORS,
        params=(_PERIOD,),
        endpoint=admin_cost_daily),
)
COSTS_ROUTES = web_routes(OPERATIONS)
