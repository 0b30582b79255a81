"""Admin endpoints (SPEC §8): accounts, API keys, grants and adjustments, usage statistics.

Every route needs `Authorization: Bearer <GATEWAY_ADMIN_TOKEN>` (compared in constant time);
without a configured token the admin API answers 404 as if absent. Bodies are validated with
pydantic; amounts are whole seconds or minutes on the wire, ledger units (ms) inside; every
money-moving call takes an `idempotency_key` so a retried request applies once: the same request
again answers the original result (`replayed: true`, 200), the key reused for a request with a
different effect is a 422 `idempotency-key-reused` that applies nothing.
"""

from __future__ import annotations

import hmac
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.edge import int_param, json_body, json_response, period_window, services_for
from gateway.api.operations import (
    ADMIN,
    ADMIN_ERRORS,
    PERIOD,
    Operation,
    Param,
    Reply,
    path_param,
    web_routes,
)
from gateway.api.shapes import (
    DATE_TIME,
    BalanceDocument,
    PeriodWindow,
    Shape,
    omitted,
    timestamp,
)
from gateway.balance_view import balance_document
from gateway.budgets import limits_from_api, limits_to_api
from gateway.dashboard.session_auth import session_for
from gateway.problems import BadRequest, IdempotencyKeyReused, NotFound, Unauthorized
from gateway.services import Services
from policies.units import UnitKind, UnitOfAccount
from storage.clock import MS_PER_DAY, MS_PER_MINUTE, MS_PER_SECOND, iso_utc, now_ms, to_ms
from storage.engine.buckets import EventType, Source
from storage.engine.budgets import Limits
from storage.ports import IdempotencyConflict

_KEY = r"^[A-Za-z0-9:_.-]{8,200}$"


class NewAccount(BaseModel):
    model_config = ConfigDict(extra="forbid")
    plan: str | None = None


class Grant(BaseModel):
    """A credit of exactly one amount — `seconds` or `minutes` (time deployments), `amount`
    (decimal, currency deployments) or `tokens` (tokens deployments) — gift (never expires) or
    package (catalog package expiry)."""

    # The model validator's rule, stated in the JSON Schema too (for the OpenAPI document).
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["seconds"], "properties": {"seconds": {"type": "integer"}}},
        {"required": ["minutes"], "properties": {"minutes": {"type": "integer"}}},
        {"required": ["amount"], "properties": {"amount": {"type": "number"}}},
        {"required": ["tokens"], "properties": {"tokens": {"type": "integer"}}}]})
    seconds: int | None = Field(None, gt=0, le=600_000_000)
    minutes: int | None = Field(None, gt=0, le=10_000_000)
    amount: Decimal | None = Field(None, gt=0, le=10_000_000, allow_inf_nan=False,
                                   description="In the currency (at most 6 decimals).")
    tokens: int | None = Field(None, gt=0, le=10**12)
    source: Literal["gift", "package"] = "gift"
    reason: str = Field("admin grant", max_length=500)
    idempotency_key: str = Field(pattern=_KEY)

    @model_validator(mode="after")
    def _one_amount(self) -> Grant:
        given = [v for v in (self.seconds, self.minutes, self.amount, self.tokens)
                 if v is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of seconds, minutes, amount or tokens")
        return self

    def units(self, unit: UnitOfAccount) -> int:
        """Ledger units of the amount. Raises BadRequest for an amount of another unit than
        the deployment's, or one finer than its ledger unit."""
        if unit.kind is UnitKind.TIME and (self.seconds or self.minutes):
            return (self.seconds or 0) * MS_PER_SECOND + (self.minutes or 0) * MS_PER_MINUTE
        if unit.kind is UnitKind.CURRENCY and self.amount is not None:
            try:
                return unit.from_api(self.amount)
            except ValueError as exc:
                raise BadRequest(f"amount: {exc}") from None
        if unit.kind is UnitKind.TOKENS and self.tokens is not None:
            return self.tokens
        want = {UnitKind.TIME: "seconds or minutes", UnitKind.CURRENCY: "amount",
                UnitKind.TOKENS: "tokens"}[unit.kind]
        raise BadRequest(f"this deployment counts {unit.api_name}: give {want}")


class Adjustment(BaseModel):
    """A signed correction in the deployment's unit — whole `seconds` (time), a decimal
    `amount` (currency, at most 6 decimals) or whole `tokens` (tokens): positive credits a gift
    bucket, negative takes balance back in burn order (never below zero)."""

    # Exactly one amount (the handler checks it is the deployment's); zero is refused (400).
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["seconds"]}, {"required": ["amount"]}, {"required": ["tokens"]}]})
    seconds: int | None = Field(None, ge=-600_000_000, le=600_000_000,
                                json_schema_extra={"not": {"const": 0}})
    amount: Decimal | None = Field(None, ge=-10_000_000, le=10_000_000, allow_inf_nan=False,
                                   description="In the currency (at most 6 decimals).")
    tokens: int | None = Field(None, ge=-10**12, le=10**12)
    reason: str = Field(min_length=1, max_length=500)
    idempotency_key: str = Field(pattern=_KEY)

    @model_validator(mode="after")
    def _one_amount(self) -> Adjustment:
        if sum(v is not None for v in (self.seconds, self.amount, self.tokens)) != 1:
            raise ValueError("give exactly one of seconds, amount or tokens")
        return self

    def units(self, unit: UnitOfAccount) -> int:
        """Signed ledger units of the correction. Raises BadRequest for zero, an amount of
        another unit than the deployment's, or one finer than its ledger unit."""
        field, value = next((f, v) for f, v in (("seconds", self.seconds),
                                                 ("amount", self.amount),
                                                 ("tokens", self.tokens)) if v is not None)
        want = {UnitKind.TIME: "seconds", UnitKind.CURRENCY: "amount",
                UnitKind.TOKENS: "tokens"}[unit.kind]
        if field != want:
            raise BadRequest(f"this deployment counts {unit.api_name}: give {want}")
        if value == 0:
            raise BadRequest(f"{field}: an adjustment must not be zero")
        if unit.kind is UnitKind.TIME:
            return int(value) * MS_PER_SECOND
        try:
            return unit.from_api(value)
        except ValueError as exc:
            raise BadRequest(f"{field}: {exc}") from None


# --- reply shapes ----------------------------------------------------------------------------


class KeyLimits(BaseModel):
    """Spending limits of an API key, decimal amounts in the deployment's unit (seconds,
    USD or tokens) per UTC day and per UTC month; null or absent = no limit."""

    model_config = ConfigDict(extra="forbid")
    limit_day: Decimal | None = Field(None, ge=0, le=Decimal(10) ** 12)
    limit_month: Decimal | None = Field(None, ge=0, le=Decimal(10) ** 12)


def parse_limits(unit: UnitOfAccount, raw: bytes) -> Limits:
    """The ledger-unit Limits of a KeyLimits body (empty: none). Raises BadRequest."""
    body = json_body(KeyLimits, raw or b"{}")
    try:
        return limits_from_api(unit, body.limit_day, body.limit_month)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


class AccountCreated(Shape):
    account_id: str
    plan_key: str


class AccountSummary(Shape):
    account_id: str
    plan_key: str
    subscription_status: str
    created_at: str = timestamp("When the account was created.")


class AccountsPage(Shape):
    accounts: list[AccountSummary] = Field(description="Ordered by account id.")
    next_cursor: str | None = Field(description="`cursor` of the next page (an account id); "
                                                "null on the last.")


class ApiKeyInfo(Shape):
    key_id: str
    prefix: str = Field(description="The first 10 characters of the key.")
    limit_day: float | int | None = Field(None, description="Spending limit per UTC day, in "
                                                            "the unit; null = none.")
    limit_month: float | int | None = Field(None, description="Per UTC month; null = none.")
    created_at: str = timestamp("When the key was created.")
    revoked_at: str | None = Field(description="When it was revoked; null while active.",
                                   json_schema_extra=DATE_TIME)


class AccountDetail(Shape):
    account_id: str
    balance: BalanceDocument
    api_keys: list[ApiKeyInfo]


class KeyCreated(Shape):
    key_id: str
    key: str = Field(pattern=r"^gw_", description="The API key; shown once, stored only hashed.")
    note: str


class KeyRevoked(Shape):
    revoked: str = Field(description="The key id.")


class GrantApplied(Shape):
    bucket_id: str | None = Field(description="The credited bucket (the original one on a "
                                               "replay).")
    amount_ms: int = Field(gt=0, description="Ledger units credited (ms of AI time; "
                                            "micro-units or tokens in those deployments).")
    amount: int | float | None = omitted("The amount in `unit` (currency and tokens deployments).")
    amount_micros: int | None = omitted("`amount` in micro-units (currency units).")
    unit: str | None = omitted("`USD` or `tokens` (currency and tokens deployments).")
    replayed: bool = Field(description="The same request was already applied under this "
                                       "idempotency key: this is its original result (200).")


class AdjustmentApplied(Shape):
    amount_ms: int = Field(description="Signed ledger units applied (credit > 0, take-back < "
                                       "0; ms of AI time, micro-units or tokens).")
    replayed: bool = Field(description="The same request was already applied under this "
                                       "idempotency key: this is its original result (200).")
    unrecovered_ms: int = Field(ge=0, description="Ledger units a take-back could not find.")
    amount: int | float | None = omitted("The signed amount applied in `unit` (currency and tokens "
                                   "deployments).")
    amount_micros: int | None = omitted("`amount` in micro-units (currency units).")
    unrecovered: int | float | None = omitted("What a take-back could not find, in `unit`.", ge=0)
    unrecovered_micros: int | None = omitted("`unrecovered` in micro-units.", ge=0)
    unit: str | None = omitted("`USD` or `tokens` (currency and tokens deployments).")


class UsageGroup(Shape):
    key: str | None = Field(description="The model or operation (null: model unknown).")
    calls: int = Field(ge=0)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    charged_ms: int = Field(ge=0, description="Ledger units charged (ms of AI time; "
                                              "micro-units or tokens in those deployments).")
    unbilled_ms: int = Field(ge=0, description="Ledger units served but not charged.")
    charged: int | float | None = omitted("`charged_ms` in `unit` (currency and tokens "
                                    "deployments).", ge=0)
    charged_micros: int | None = omitted("`charged` in micro-units (currency units).", ge=0)
    unbilled: int | float | None = omitted("`unbilled_ms` in `unit` (currency and tokens "
                                     "deployments).", ge=0)
    unbilled_micros: int | None = omitted("`unbilled` in micro-units (currency units).", ge=0)


class UsageStats(PeriodWindow):
    """Usage across every account, grouped by model and by operation."""

    by_model: list[UsageGroup]
    by_operation: list[UsageGroup]
    unit: str | None = omitted("`USD` or `tokens` (currency and tokens deployments).")


def usage_groups(rows: list[dict[str, Any]], unit: UnitOfAccount) -> list[dict[str, Any]]:
    """Store usage groups (ledger units) with their amounts in the unit added in a currency or
    tokens deployment (`charged`, `unbilled` + `_micros` twins); time rows are unchanged."""
    if unit.kind is UnitKind.TIME:
        return rows
    return [{**r, **unit.json_fields("charged", int(r["charged_ms"])),
             **unit.json_fields("unbilled", int(r["unbilled_ms"]))} for r in rows]


def _body(model: type[BaseModel], raw: bytes) -> Any:
    return json_body(model, raw or b"{}")


def check(request: Request) -> Services:
    """The services, once the request carries the admin credential or, without an
    `Authorization` header, an admin dashboard session (a write needs its CSRF token, else
    CsrfTokenInvalid 403). Raises NotFound (no admin token configured: the admin API is
    absent) or Unauthorized."""
    s = services_for(request)
    token = s.settings.admin_token
    if not token:
        raise NotFound("No route for this path.")
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if not scheme and session_for(request, "admin") is not None:  # the console's cookie
        return s
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(),
                                                             token.encode()):
        raise Unauthorized("This endpoint needs the admin credential.")
    return s


async def guarded(fn: Any, *args: Any) -> Any:
    """`await fn(*args)` with IdempotencyConflict as the 422 `idempotency-key-reused` problem
    (UnknownAccount → 404 is the app's one handler)."""
    try:
        return await fn(*args)
    except IdempotencyConflict:
        raise IdempotencyKeyReused(
            "This idempotency_key was already used for a different request (amount, "
            "source, reason or kind); nothing was applied. Resend the original request "
            "unchanged, or use a new key.") from None


async def create_account(request: Request) -> Response:
    """`POST /v1/admin/accounts`: a new account on `plan` (default plan)."""
    s = check(request)
    body = _body(NewAccount, await request.body())
    key = body.plan or s.policy.document.default_plan
    plan = s.policy.plans.get(key)
    if plan is None:
        raise BadRequest(f"plan: unknown plan {key!r}")
    account_id = await guarded(s.accounts.create_account, plan)
    return json_response(AccountCreated(account_id=account_id, plan_key=key).wire(), status=201)


async def list_accounts(request: Request) -> Response:
    """`GET /v1/admin/accounts`: accounts by id, cursor pages, optionally of one plan or (`q`)
    whose id contains a fragment."""
    s = check(request)
    limit = int_param(request, "limit", 50, 1, 500)
    query, plan = request.query_params.get("q"), request.query_params.get("plan")
    cursor = request.query_params.get("cursor")
    if query:  # the console's account search (issue 12)
        if plan is not None or len(query) > 100:
            raise BadRequest("q: at most 100 characters, and not together with plan.")
        assert s.console is not None
        rows = await s.console.search_accounts(query, limit + 1, cursor)
    else:
        rows = await guarded(s.accounts.list_accounts, limit + 1, cursor, plan)
    page = rows[:limit]
    accounts = [AccountSummary(account_id=r["id"], plan_key=r["plan_key"],
                               subscription_status=r["subscription_status"],
                               created_at=iso_utc(r["created_at_ms"])) for r in page]
    return json_response(AccountsPage(
        accounts=accounts, next_cursor=page[-1]["id"] if len(rows) > limit else None).wire())


async def get_account(request: Request) -> Response:
    """`GET /v1/admin/accounts/{accountId}`: an account's balance and API keys."""
    s = check(request)
    account_id = request.path_params["accountId"]
    snap = await guarded(s.ledger.balance, account_id)
    keys = await guarded(s.accounts.account_keys, account_id)
    balance = balance_document(snap, s.policy.plans.get(snap.plan_key), s.policy.catalog_version,
                               s.policy.unit)
    return json_response(AccountDetail(
        account_id=account_id,
        balance=BalanceDocument.of(balance),
        api_keys=[ApiKeyInfo(key_id=k["id"], prefix=k["prefix"],
                             **limits_to_api(s.policy.unit, Limits(k["limit_day"],
                                                                   k["limit_month"])),
                             created_at=iso_utc(k["created_at_ms"]),
                             revoked_at=iso_utc(k["revoked_at_ms"]) if k["revoked_at_ms"]
                             else None) for k in keys]).wire())


async def create_key(request: Request) -> Response:
    """`POST /v1/admin/accounts/{accountId}/keys`: a new API key (shown once), optionally with
    spending limits (body: KeyLimits)."""
    s = check(request)
    limits = parse_limits(s.policy.unit, await request.body())
    key_id, key = await guarded(s.accounts.create_api_key, request.path_params["accountId"],
                                limits)
    return json_response(KeyCreated(key_id=key_id, key=key,
                                    note="shown once; stored only hashed").wire(), status=201)


async def revoke_key(request: Request) -> Response:
    """`DELETE /v1/admin/keys/{keyId}`: revoke a key (this process forgets it at once)."""
    s = check(request)
    if not await guarded(s.accounts.revoke_api_key, request.path_params["keyId"]):
        raise NotFound("No active key with this id.")
    s.keys.forget()  # stop serving the key from this process's cache at once
    return json_response(KeyRevoked(revoked=request.path_params["keyId"]).wire())


async def grant(request: Request) -> Response:
    """`POST /v1/admin/accounts/{accountId}/grants`: credit a gift or package bucket."""
    s = check(request)
    body: Grant = _body(Grant, await request.body())
    source = Source(body.source)
    expires = None
    if source is Source.PACKAGE:
        expires = now_ms() + s.policy.document.catalog.package_expiry_days * MS_PER_DAY
    unit = s.policy.unit
    result = await guarded(s.ledger.grant, request.path_params["accountId"], source,
                           body.units(unit), "admin:" + body.idempotency_key, expires,
                           body.reason)
    extra: dict[str, Any] = ({} if unit.kind is UnitKind.TIME else
                             {**unit.json_fields("amount", result.amount),
                              "unit": unit.api_name})
    return json_response(GrantApplied(bucket_id=result.bucket_id, amount_ms=result.amount,
                                      replayed=result.replayed, **extra).wire(),
                         status=200 if result.replayed else 201)


async def adjust(request: Request) -> Response:
    """`POST /v1/admin/accounts/{accountId}/adjustments`: a signed correction."""
    s = check(request)
    body: Adjustment = _body(Adjustment, await request.body())
    account_id = request.path_params["accountId"]
    key = "admin:" + body.idempotency_key
    unit = s.policy.unit
    units = body.units(unit)
    if units > 0:
        result = await guarded(s.ledger.grant, account_id, Source.GIFT, units,
                               key, None, body.reason, None, EventType.ADJUSTMENT)
        applied = result.amount
    else:
        result = await guarded(s.ledger.adjust_down, account_id, -units, key, body.reason)
        applied = -result.amount
    unrecovered = int(result.metadata.get("unrecovered", 0))
    extra: dict[str, Any] = ({} if unit.kind is UnitKind.TIME else
                             {**unit.json_fields("amount", applied),
                              **unit.json_fields("unrecovered", unrecovered),
                              "unit": unit.api_name})
    return json_response(AdjustmentApplied(
        amount_ms=applied, replayed=result.replayed, unrecovered_ms=unrecovered,
        **extra).wire(), status=200 if result.replayed else 201)


async def usage_stats(request: Request) -> Response:
    """`GET /v1/admin/stats/usage?period=`: usage of all accounts by model and operation."""
    s = check(request)
    period, start, end = period_window(request)
    by_model = await guarded(s.ledger.usage_stats, to_ms(start), to_ms(end), "model")
    by_op = await guarded(s.ledger.usage_stats, to_ms(start), to_ms(end), "operation")
    unit = s.policy.unit
    extra: dict[str, Any] = {} if unit.kind is UnitKind.TIME else {"unit": unit.api_name}
    return json_response(UsageStats(
        period=period, from_=iso_utc(to_ms(start)), to=iso_utc(to_ms(end)),
        by_model=usage_groups(by_model, unit), by_operation=usage_groups(by_op, unit),
        **extra).wire())


ACCOUNT_ID = path_param("accountId", "The account id (`acct_…`).")

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST", "/v1/admin/accounts", "createAccount", "Create an account", "admin", ADMIN,
        (Reply(201, "Created (welcome bonus applied).", AccountCreated),),
        ADMIN_ERRORS, body=NewAccount, body_required=False,
        description="`plan` defaults to the policy's default plan; an unknown plan is a 400.",
        endpoint=create_account),
    Operation(
        "GET", "/v1/admin/accounts", "listAccounts", "List accounts", "admin", ADMIN,
        (Reply(200, "One page, ordered by account id.", AccountsPage),),
        ADMIN_ERRORS,
        params=(
            Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500,
                                     "default": 50}, "Page size (decimal digits only)."),
            Param("cursor", "query", {"type": "string"},
                  "`next_cursor` of the previous page: accounts with greater ids follow."),
            Param("plan", "query", {"type": "string"}, "Only accounts on this plan."),
            Param("q", "query", {"type": "string", "maxLength": 100},
                  "Only accounts whose id contains this (case-insensitive); not with `plan`."),
        ), endpoint=list_accounts),
    Operation(
        "GET", "/v1/admin/accounts/{accountId}", "getAccount", "An account with its keys",
        "admin", ADMIN, (Reply(200, "Balance and API keys (never the keys themselves).",
                               AccountDetail),),
        ADMIN_ERRORS, params=(ACCOUNT_ID,), endpoint=get_account),
    Operation(
        "POST", "/v1/admin/accounts/{accountId}/keys", "createApiKey", "Create an API key",
        "admin", ADMIN, (Reply(201, "The new key, shown once.", KeyCreated),),
        ADMIN_ERRORS, params=(ACCOUNT_ID,), body=KeyLimits, body_required=False,
        description="Optional spending limits in the deployment's unit (per UTC day / month).",
        endpoint=create_key),
    Operation(
        "DELETE", "/v1/admin/keys/{keyId}", "revokeApiKey", "Revoke an API key", "admin", ADMIN,
        (Reply(200, "Revoked; it stops working at once on this replica, elsewhere within "
                    "GATEWAY_KEY_CACHE_TTL_S.", KeyRevoked),),
        ADMIN_ERRORS,
        params=(path_param("keyId", "The key id (`key_…`); an unknown or already revoked "
                                    "key is a 404."),), endpoint=revoke_key),
    Operation(
        "POST", "/v1/admin/accounts/{accountId}/grants", "grantCredit", "Credit time", "admin",
        ADMIN,
        (Reply(201, "Credited.", GrantApplied),
         Reply(200, "Replayed: this idempotency key was already applied.", GrantApplied)),
        (*ADMIN_ERRORS, IdempotencyKeyReused), params=(ACCOUNT_ID,), body=Grant,
        description="Exactly one of `seconds` or `minutes`. `gift` never expires; `package` "
                    "expires with the catalog's package expiry. The same request again with "
                    "its `idempotency_key` answers the original result (200, `replayed`); the "
                    "key reused for another amount, source or reason is a 422.",
        endpoint=grant),
    Operation(
        "POST", "/v1/admin/accounts/{accountId}/adjustments", "adjustBalance",
        "Signed correction", "admin", ADMIN,
        (Reply(201, "Applied.", AdjustmentApplied),
         Reply(200, "Replayed: this idempotency key was already applied.",
               AdjustmentApplied)),
        (*ADMIN_ERRORS, IdempotencyKeyReused), params=(ACCOUNT_ID,), body=Adjustment,
        description="Positive credits a gift bucket; negative takes balance back in burn "
                    "order, never below zero (`unrecovered_ms` is what was missing). The same "
                    "request again with its `idempotency_key` answers the original result "
                    "(200, `replayed`); the key reused for another amount or reason (or by a "
                    "grant) is a 422.",
        endpoint=adjust),
    Operation(
        "GET", "/v1/admin/stats/usage", "getUsageStats", "Usage by model and by operation",
        "admin", ADMIN, (Reply(200, "Totals across every account.", UsageStats),),
        ADMIN_ERRORS, params=(PERIOD,), endpoint=usage_stats),
)
ADMIN_ROUTES = web_routes(OPERATIONS)
