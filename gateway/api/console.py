"""Admin endpoints the operator console needs and no other API serves (issue 12): the policy in
force, calls waiting in the unbilled spool, and usage per UTC day. The console (gateway/dashboard)
is a client of these like any operator tool; account search is `q` on `GET /v1/admin/accounts`.

Auth as every admin endpoint (`gateway.api.admin.check`: the admin token, or the console's admin
session). Amounts are ledger units (`*_ms` for AI time) plus the unit's API amount.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.admin import check
from gateway.api.edge import int_param, json_response, period_window
from gateway.api.operations import ADMIN, ADMIN_ERRORS, PERIOD, Operation, Param, Reply, web_routes
from gateway.api.shapes import DATE_TIME, PeriodWindow, Shape
from gateway.unbilled import UnbilledSpool
from storage.clock import MS_PER_DAY, MS_PER_SECOND, iso_utc, to_ms

# --- reply shapes ----------------------------------------------------------------------------


class PolicyFile(Shape):
    path: str
    modified_at: str | None = Field(description="The file's modification time; null when it "
                                                "cannot be read now.", json_schema_extra=DATE_TIME)


class PolicyStatus(Shape):
    """The policy this process serves and the outcome of the last reload."""

    files: list[PolicyFile] = Field(description="The policy files, merged in this order.")
    catalog_version: str
    default_plan: str
    unit: str = Field(description="The API unit of account: `s`, a currency code or `tokens`.")
    plans: list[str]
    routes: int = Field(ge=0, description="Number of proxied routes.")
    last_reload_error: str | None = Field(
        description="Why the last reload failed (the last good policy is still served); null "
                    "when the last load succeeded.")


class UnbilledCall(Shape):
    request_id: str
    account_id: str
    operation: str
    model: str | None
    charge_ms: int = Field(ge=0, description="What settlement will charge, ledger units.")


class UnbilledCalls(Shape):
    """Calls served while the store was unreachable, waiting in the spool for
    `gateway reconcile` (shared by the processes that use the same spool file)."""

    spool_path: str
    count: int = Field(ge=0, description="Entries in the spool.")
    total_ms: int = Field(ge=0, description="Σ charge_ms of every entry.")
    calls: list[UnbilledCall] = Field(description="The first `limit` entries, oldest first.")
    error: str | None = Field(description="A malformed line that stopped the read (the "
                                          "figures cover the lines before it); null if none.")


class UsageDay(Shape):
    date: str = Field(description="The UTC day, `YYYY-MM-DD`.")
    calls: int = Field(ge=0)
    charged_ms: int = Field(ge=0, description="Charged, ledger units.")
    charged: int | float = Field(ge=0, description="Charged, in the API's unit (`unit`).")


class OperationUsage(Shape):
    operation: str
    calls: int = Field(ge=0)
    charged_ms: int = Field(ge=0, description="Charged, ledger units.")
    charged: int | float = Field(ge=0, description="Charged, in the API's unit (`unit`).")


class DailyUsage(PeriodWindow):
    """Usage of every account per UTC day of the period (zero days included) and per operation,
    from the daily rollup written at settlement (flat in history size)."""

    unit: str
    days: list[UsageDay]
    by_operation: list[OperationUsage] = Field(description="Totals of the period per operation, "
                                                           "by operation name.")


# --- handlers ----------------------------------------------------------------------------------


def _modified(path: Path) -> str | None:
    try:
        return iso_utc(int(path.stat().st_mtime * MS_PER_SECOND))
    except OSError:
        return None


async def policy_status(request: Request) -> Response:
    """`GET /v1/admin/policy`: files, versions and the last reload error."""
    s = check(request)
    p = s.policy
    return json_response(PolicyStatus(
        files=[PolicyFile(path=str(f), modified_at=_modified(f))
               for f in s.settings.policy_paths],
        catalog_version=p.catalog_version, default_plan=p.document.default_plan,
        unit=p.unit.api_name, plans=sorted(p.plans), routes=len(p.routes),
        last_reload_error=s.policy_error).wire())


def _read_spool(spool: UnbilledSpool, limit: int) -> dict[str, Any]:
    count = total = 0
    calls: list[UnbilledCall] = []
    error = None
    entries = spool.entries()
    try:
        for record, charge, _rule, _hold in entries:
            count += 1
            total += charge
            if len(calls) < limit:
                calls.append(UnbilledCall(request_id=record.request_id,
                                          account_id=record.account_id,
                                          operation=record.operation, model=record.model,
                                          charge_ms=max(0, charge)))
    except ValueError as exc:
        error = str(exc)
    except OSError as exc:
        error = f"{spool.path}: cannot be read ({exc.strerror})"
    return {"count": count, "total_ms": max(0, total), "calls": calls, "error": error}


async def unbilled_calls(request: Request) -> Response:
    """`GET /v1/admin/unbilled`: the spool of calls waiting for reconciliation."""
    s = check(request)
    limit = int_param(request, "limit", 50, 1, 500)
    found = await asyncio.to_thread(_read_spool, s.unbilled, limit)  # a file read, off the loop
    return json_response(UnbilledCalls(spool_path=str(s.unbilled.path), **found).wire())


async def usage_by_day(request: Request) -> Response:
    """`GET /v1/admin/stats/daily`: calls and charges per UTC day, all accounts."""
    s = check(request)
    period, start, end = period_window(request)
    assert s.console is not None
    start_ms, end_ms = to_ms(start), to_ms(end)
    per_day: dict[int, list[int]] = {}
    per_op: dict[str, list[int]] = {}
    for day, operation, calls, charged in await s.console.usage_by_day(start_ms, end_ms):
        for total in (per_day.setdefault(day, [0, 0]), per_op.setdefault(operation, [0, 0])):
            total[0] += calls
            total[1] += charged
    unit = s.policy.unit
    days = []
    for day in itertools.takewhile(lambda d: d < end_ms,
                                   itertools.count(start_ms, MS_PER_DAY)):
        calls, charged = per_day.get(day, (0, 0))
        days.append(UsageDay(date=iso_utc(day)[:10], calls=calls, charged_ms=charged,
                             charged=unit.to_json(charged)))
    by_op = [OperationUsage(operation=op, calls=calls, charged_ms=charged,
                            charged=unit.to_json(charged))
             for op, (calls, charged) in sorted(per_op.items())]
    return json_response(DailyUsage(period=period, from_=iso_utc(start_ms), to=iso_utc(end_ms),
                                    unit=unit.api_name, days=days, by_operation=by_op).wire())


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", "/v1/admin/policy", "getPolicyStatus", "The policy in force", "admin", ADMIN,
        (Reply(200, "Files, versions, unit, plans and the last reload error.", PolicyStatus),),
        ADMIN_ERRORS,
        description="The policy files are re-read when they change; a file that fails to load "
                    "leaves the last good policy in force and its error in "
                    "`last_reload_error` (also in /readyz).",
        endpoint=policy_status),
    Operation(
        "GET", "/v1/admin/unbilled", "listUnbilledCalls",
        "Calls waiting for reconciliation", "admin", ADMIN,
        (Reply(200, "The unbilled spool's entries (oldest first) and totals.", UnbilledCalls),),
        ADMIN_ERRORS,
        params=(Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500,
                                         "default": 50}, "Entries listed (all are counted)."),),
        description="Calls served while the store was unreachable; `gateway reconcile` settles "
                    "them (idempotently by request id).",
        endpoint=unbilled_calls),
    Operation(
        "GET", "/v1/admin/stats/daily", "getDailyUsage", "Usage per UTC day and operation",
        "admin", ADMIN,
        (Reply(200, "Every UTC day of the period, oldest first, and each operation's totals.",
               DailyUsage),),
        ADMIN_ERRORS, params=(PERIOD,), endpoint=usage_by_day),
)
CONSOLE_ROUTES = web_routes(OPERATIONS)

__all__ = ["CONSOLE_ROUTES", "OPERATIONS"]
