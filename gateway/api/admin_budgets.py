"""Admin API for API-key budgets and seed 003's statistics (issue 10 items 4–5).

- `PATCH /v1/admin/keys/{keyId}`: change a key's spending limits (decimal amounts in the
  deployment's unit; null removes a limit). The key's cache is dropped on this replica at
  once; elsewhere the change applies within GATEWAY_KEY_CACHE_TTL_S.
- `GET /v1/admin/stats/tokens?period=`: seed 003's admin statistics (`getTokenStats`,
  `getModelUsageStats`, `getOperationStats`), in the unit: totals, by model, by operation,
  by API key and by end user.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.admin import KeyLimits, check, guarded, parse_limits
from gateway.api.edge import json_response, period_window
from gateway.api.operations import (
    ADMIN,
    ADMIN_ERRORS,
    PERIOD,
    Operation,
    Reply,
    path_param,
    web_routes,
)
from gateway.api.shapes import PeriodWindow, Shape
from gateway.budgets import limits_to_api
from gateway.problems import NotFound
from policies.units import UnitOfAccount
from storage.clock import iso_utc, to_ms


class KeyLimitsSet(Shape):
    key_id: str
    account_id: str
    unit: str = Field(description="The unit of the limits: `s`, `USD` or `tokens`.")
    limit_day: float | int | None
    limit_month: float | int | None


class StatsGroup(Shape):
    """One group of seed 003's statistics; `charged` in the unit, `charged_units` exact."""

    key: str | None = Field(description="The model, operation, key id or end user (null: "
                                        "none).")
    calls: int = Field(ge=0)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    total_tokens: int = Field(ge=0)
    charged: float | int
    charged_units: int
    unbilled: float | int
    unbilled_units: int


class TokenStats(PeriodWindow):
    """Seed 003's admin statistics across every account, in the deployment's unit."""

    unit: str
    totals: StatsGroup
    by_model: list[StatsGroup]
    by_operation: list[StatsGroup]
    by_key: list[StatsGroup]
    by_end_user: list[StatsGroup]


async def set_key_limits(request: Request) -> Response:
    """`PATCH /v1/admin/keys/{keyId}`: replace a key's limits."""
    s = check(request)
    limits = parse_limits(s.policy.unit, await request.body())
    key_id = request.path_params["keyId"]
    account_id = await guarded(s.accounts.set_key_limits, key_id, limits)
    if account_id is None:
        raise NotFound("No active key with this id.")
    s.keys.forget(account_id)
    return json_response(KeyLimitsSet(key_id=key_id, account_id=account_id,
                                      unit=s.policy.unit.api_name,
                                      **limits_to_api(s.policy.unit, limits)).wire())


def _group(unit: UnitOfAccount, row: dict[str, Any]) -> StatsGroup:
    return StatsGroup(
        key=row["key"], calls=row["calls"], input_tokens=row["input_tokens"],
        output_tokens=row["output_tokens"],
        total_tokens=row["input_tokens"] + row["output_tokens"],
        charged=unit.to_json(row["charged_ms"]), charged_units=row["charged_ms"],
        unbilled=unit.to_json(row["unbilled_ms"]), unbilled_units=row["unbilled_ms"])


async def token_stats(request: Request) -> Response:
    """`GET /v1/admin/stats/tokens?period=`: totals and groups of every account's usage."""
    s = check(request)
    period, start, end = period_window(request)
    unit = s.policy.unit
    groups = {}
    for by in ("model", "operation", "key_id", "end_user"):
        groups[by] = await guarded(s.ledger.usage_stats, to_ms(start), to_ms(end), by)
    total: dict[str, Any] = {"key": None}
    for col in ("calls", "input_tokens", "output_tokens", "charged_ms", "unbilled_ms"):
        total[col] = sum(r[col] for r in groups["operation"])
    return json_response(TokenStats(
        period=period, from_=iso_utc(to_ms(start)), to=iso_utc(to_ms(end)), unit=unit.api_name,
        totals=_group(unit, total),
        by_model=[_group(unit, r) for r in groups["model"]],
        by_operation=[_group(unit, r) for r in groups["operation"]],
        by_key=[_group(unit, r) for r in groups["key_id"]],
        by_end_user=[_group(unit, r) for r in groups["end_user"]]).wire())


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "PATCH", "/v1/admin/keys/{keyId}", "setApiKeyLimits", "Change an API key's limits",
        "admin", ADMIN, (Reply(200, "The key's limits now.", KeyLimitsSet),), ADMIN_ERRORS,
        params=(path_param("keyId", "The key id (`key_…`); unknown or revoked is a 404."),),
        body=KeyLimits, body_required=False,
        description="Limits are decimal amounts in the deployment's unit per UTC day / "
                    "month; live holds count toward them; null removes a limit.",
        endpoint=set_key_limits),
    Operation(
        "GET", "/v1/admin/stats/tokens", "getTokenStats",
        "Usage statistics: totals, by model, operation, key and end user", "admin", ADMIN,
        (Reply(200, "Seed 003's statistics in the unit.", TokenStats),), ADMIN_ERRORS,
        params=(PERIOD,), endpoint=token_stats),
)
ADMIN_BUDGET_ROUTES = web_routes(OPERATIONS)
