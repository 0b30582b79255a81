"""The OpenAPI 3.1 document of the billing and admin API, served at `GET /openapi.json`.

The document is generated from one declarative table, `OPERATIONS`: each `Operation` names its
method and path, who may call it, its parameters, the pydantic model of its request body (the
handler's own model), its success replies (models in gateway/api/api_models.py) and the problem
types it can answer with (classes of gateway/problems.py; grouped by status into
`application/problem+json` responses whose `type` must end in one of their slugs). Adding an
endpoint is one more `Operation(...)` in the table.

tests/e2e/test_openapi.py keeps the table honest: it fails when a billing or admin route of the
app is missing here or listed here without a route, and it fuzzes every operation of a running
gateway with schemathesis against this document (statuses, content types, bodies, headers).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as WebRoute

from gateway.api import api_models as m
from gateway.api.admin import Adjustment, Grant, NewAccount
from gateway.api.auto_topup import AutoTopUpSettings
from gateway.api.billing import BatchCheck
from gateway.api.models import ModelList
from gateway.api.payments import PurchaseRequest, SubscriptionCheckoutRequest
from gateway.problems import (
    BadRequest,
    BadWebhookSignature,
    GatewayError,
    IdempotencyKeyReused,
    NotFound,
    PayloadTooLarge,
    PaymentProviderError,
    PaymentsNotConfigured,
    StoreUnavailableProblem,
    Unauthorized,
)

OPENAPI_PATH = "/openapi.json"
_REF = "#/components/schemas/{model}"
_PROBLEM = "application/problem+json"

# --- the vocabulary of the table -------------------------------------------------------------

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "apiKey": {
        "type": "http", "scheme": "bearer", "bearerFormat": "gw_<43 url-safe characters>",
        "description": "The account's own API key, `Authorization: Bearer gw_…`: reads and acts "
                       "for that account only (any other account id is a 404, so ids cannot be "
                       "probed). Unknown or revoked keys are a 401.",
    },
    "apiKeyHeader": {
        "type": "apiKey", "in": "header", "name": "X-API-Key",
        "description": "The same API key in `X-API-Key` (`Authorization: Bearer` wins when both "
                       "are sent).",
    },
    "hmacSignature": {
        "type": "apiKey", "in": "header", "name": "X-HMAC-Signature",
        "description": "Server-to-server signature of a product backend, acting for any account "
                       "(path `userId`, or `userId` in a POST body): `keyId=<id>, ts=<unix s>, "
                       "nonce=<16–64 url-safe chars>, sig=<hex HMAC-SHA256>` over "
                       "`METHOD\\nPATH\\nSORTED_QUERY\\nSHA256_HEX(BODY)\\nTS\\nNONCE` with a "
                       "secret of `GATEWAY_HMAC_KEYS`. The timestamp must be within ±300 s; each "
                       "nonce is accepted once; a bad signature is a 401 (see "
                       "gateway/hmac_auth.py).",
    },
    "adminToken": {
        "type": "http", "scheme": "bearer",
        "description": "`Authorization: Bearer <GATEWAY_ADMIN_TOKEN>` (≥ 32 characters, compared "
                       "in constant time). Without a configured token the admin API answers 404 "
                       "as if absent.",
    },
}
ACCOUNT_OR_SIGNED = ("apiKey", "apiKeyHeader", "hmacSignature")
API_KEY = ("apiKey", "apiKeyHeader")
ADMIN = ("adminToken",)
PUBLIC: tuple[str, ...] = ()

NO_STORE = {"Cache-Control": {"required": True, "description": "User data is never cached.",
                              "schema": {"type": "string", "const": "no-store"}}}
_PROBLEM_HEADERS = {"Cache-Control": {"required": True, "description": "Problems are never cached.",
                                      "schema": {"type": "string", "const": "no-store"}}}
_CATALOG_HEADERS = {
    "ETag": {"required": True, "description": "Strong ETag per catalog version and currency.",
             "schema": {"type": "string", "pattern": '^".+"$'}},
    "Cache-Control": {"required": True,
                      "schema": {"type": "string", "const": "public, max-age=300"}},
    "Vary": {"required": True, "schema": {"type": "string", "const": "accept-encoding"}},
}


@dataclass(frozen=True, slots=True)
class Param:
    """A path, query or header parameter; `schema` is JSON Schema (a dict)."""

    name: str
    where: Literal["path", "query", "header"]
    schema: Mapping[str, Any]
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Reply:
    """A success (or 3xx) response: status, body model, media type, headers (header name →
    OpenAPI header object). Without a model the response has no body, unless the media type is
    not JSON: then the body is documented as text (e.g. `text/event-stream`, described in
    `description`)."""

    status: int
    description: str
    model: type[BaseModel] | None = None
    media_type: str = "application/json"
    headers: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: NO_STORE)


@dataclass(frozen=True, slots=True)
class Operation:
    """One endpoint. `security` lists alternatives (names in SECURITY_SCHEMES; () = public);
    `errors` are the problem classes the handler can raise, each documented under its status."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
    path: str
    operation_id: str
    summary: str
    tag: str
    security: tuple[str, ...]
    replies: tuple[Reply, ...]
    errors: tuple[type[GatewayError], ...]
    params: tuple[Param, ...] = ()
    body: type[BaseModel] | None = None
    body_required: bool = True
    description: str = ""


def path_param(name: str, description: str) -> Param:
    """A required path segment (any non-empty string without `/`)."""
    return Param(name, "path", {"type": "string", "minLength": 1}, description, required=True)


USER_ID = path_param("userId", "The account id (`acct_…`). With an API key only the key's own "
                               "account: any other id is a 404.")
ACCOUNT_ID = path_param("accountId", "The account id (`acct_…`).")
PERIOD = Param("period", "query", {"type": "string", "enum": ["day", "week", "month"],
                                   "default": "month"},
               "`day`: today (UTC); `week`: the last 7 UTC days including today; `month`: this "
               "calendar month (UTC). Anything else is a 400.")
_STREAM_DESCRIPTION = """\
The account's changes as Server-Sent Events, until the client disconnects. Each event has
`event: <type>`, `id: <the account's event number>` (increasing) and `data: <one JSON object>`;
a comment line is sent every `GATEWAY_STREAM_KEEPALIVE_S` seconds (15 by default), and the
opening snapshot or `history.truncated` carries `retry: 3000` (reconnect after 3 s).

Without `Last-Event-ID` the stream opens with a `balance.updated` snapshot (`reason`
`snapshot`) whose `id` is the account's current event number, then sends every newer event.
With `Last-Event-ID: N` (or `?lastEventId=N`) it first replays the logged events after N from
the bounded log; it starts with `history.truncated` when some of those were already pruned (or
N is not an id of this account's stream). The `balance.updated` of each settled call (`reason`
`consumption`) is sent live only: a stream that missed some (on a replay, or after a lost live
message) gets one fresh `balance.updated` snapshot carrying the current id instead — balance
is state, the newest wins.

Seconds are whole seconds rounded down; times are RFC 3339 UTC with whole seconds. Event types
and their `data`:

- `balance.updated`: `total_seconds`, `paid_seconds`, `bonus_seconds`, `available_seconds` (as
  in the balance's `totals`: `bonus_seconds` is the daily buckets', `paid_seconds` every other
  bucket's, welcome and gift included) and `reason`, what changed it: a ledger entry type
  (`consumption`, `package_credit`, `subscription_credit`, `daily_bonus`, `welcome_bonus`,
  `gift_credit`, `adjustment`, `expiry`, `rollover_discard`) or `snapshot`.
- `bucket.created`: `bucket_id`, `source` (`subscription`, `package`, `daily`, `welcome`,
  `gift`), `seconds`, `expires_at` (null: never expires).
- `rollover.created`: `bucket_id`, `seconds`, `expires_at`, `from_bucket` (the subscription
  bucket whose unused time it carries).
- `credit.applied`: `type` (the ledger entry type), `seconds`, `reason`, `bucket_id`, and
  `debt_netted_seconds` when part of the credit paid off overdraft.
- `bucket.expired`: `bucket_id`, `source`, `seconds` (what was left); at expiry also
  `expired_at` and `rolled_over_seconds`, when a rollover is discarded (downgrade,
  cancellation) `reason` instead.
- `package.fulfilled`: `package_key`, `minutes`, `session_id` (the Checkout Session),
  `operation_id` (null unless bought to unblock a call).
- `resume.ready`: `operation_id`, `instance` (`urn:op:<operation_id>`, the 402's `instance`),
  `package_key`: the blocked call can be retried with its `X-Resume-Token`.
- `history.truncated` (no `id`): `last_event_id`, `oldest_available_id`; refetch the balance.

Not for caching or buffering: `Cache-Control: no-store`, `X-Accel-Buffering: no`."""

_STREAM_REPLIES = (
    Reply(200, "An endless `text/event-stream` (see the operation's description).",
          media_type="text/event-stream",
          headers={**NO_STORE, "X-Accel-Buffering": {
              "description": "Asks reverse proxies not to buffer the stream.",
              "schema": {"type": "string", "const": "no"}}}),)
_STREAM_PARAMS = (
    Param("Last-Event-ID", "header", {"type": "string", "pattern": "^[0-9]{0,18}$"},
          "The `id` of the last event received: the stream resumes after it. Sent by "
          "EventSource on reconnection; anything but an id is a 400."),
    Param("lastEventId", "query", {"type": "string", "pattern": "^[0-9]{0,18}$"},
          "The same, for clients that cannot set headers (the header wins)."),
)

# BadRequest everywhere: the gateway refuses a NUL (`%00`) in any path or query (gateway/app.py).
_USER_ERRORS = (BadRequest, Unauthorized, NotFound, StoreUnavailableProblem)
_ADMIN_ERRORS = (BadRequest, Unauthorized, NotFound, StoreUnavailableProblem)

# --- the table -------------------------------------------------------------------------------

OPERATIONS: tuple[Operation, ...] = (
    # gateway.api.billing
    Operation(
        "GET", "/v1/billing/catalog", "getCatalog", "The public pricing catalog", "billing",
        PUBLIC,
        (Reply(200, "The catalog in the requested currency.", m.Catalog,
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
                    "resulting document (version, requested currency, content)."),
    Operation(
        "GET", "/v1/billing/balance/{userId}", "getBalance", "An account's balance", "billing",
        ACCOUNT_OR_SIGNED, (Reply(200, "The seeds' EnhancedBalance.", m.EnhancedBalance),),
        _USER_ERRORS, params=(USER_ID,)),
    Operation(
        "GET", "/v1/billing/enhanced-balance/{userId}", "getEnhancedBalance",
        "An account's balance (seed 000's decided path)", "billing", ACCOUNT_OR_SIGNED,
        (Reply(200, "The same document as `GET /v1/billing/balance/{userId}`.",
               m.EnhancedBalance),),
        _USER_ERRORS, params=(USER_ID,)),
    Operation(
        "GET", "/v1/billing/events/{userId}", "listEvents", "An account's ledger entries",
        "billing", ACCOUNT_OR_SIGNED, (Reply(200, "One page, newest first.", m.EventsPage),),
        _USER_ERRORS,
        params=(
            USER_ID,
            Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 200,
                                     "default": 50}, "Page size (decimal digits only)."),
            Param("cursor", "query", {"type": "string", "pattern": "^le_[0-9]{1,18}$"},
                  "`next_cursor` of the previous page; anything else is a 400."),
        )),
    Operation(
        "GET", "/v1/billing/usage/{userId}", "getUsage", "An account's usage analytics",
        "billing", ACCOUNT_OR_SIGNED,
        (Reply(200, "Seconds charged (and calls) by operation, seconds by day.",
               m.UsageAnalytics),),
        _USER_ERRORS, params=(USER_ID, PERIOD)),
    Operation(
        "POST", "/v1/billing/check-sufficient-batch", "checkSufficientBatch",
        "Preflight 1–10 operations against the balance", "billing", ACCOUNT_OR_SIGNED,
        (Reply(200, "The bare array of per-operation verdicts (cumulative), in request order; "
                    "nothing is held.", m.BatchCheckResult),),
        _USER_ERRORS, body=BatchCheck,
        description="With an API key `userId` may be omitted (another account's id is a 404); "
                    "a server-signed request must name it. Without `estimate_seconds` the "
                    "route's fixed or learned estimate is used; an operation whose estimate "
                    "depends on the request body needs `estimate_seconds` (400 otherwise)."),
    # gateway.api.payments
    Operation(
        "POST", "/v1/billing/packages/purchase", "purchasePackage",
        "Start a Stripe Checkout for a package", "payments", ACCOUNT_OR_SIGNED,
        (Reply(200, "The Checkout Session to redirect the buyer to.", m.PurchaseResult),),
        (*_USER_ERRORS, PaymentProviderError, PaymentsNotConfigured),
        body=PurchaseRequest,
        description="`package_key` must be in the catalog and `currency` one of USD EUR GBP "
                    "EGP SAR AED (case-insensitive; else 400); the charge is in the currency "
                    "the catalog shows for it (USD with `currency_fallback_from` when the "
                    "catalog falls back). `operation_id` (a 402's "
                    "`instance`) lets the live stream announce the blocked call as resumable "
                    "once the webhook credits the package."),
    Operation(
        "POST", "/v1/billing/webhooks/stripe", "stripeWebhook", "Stripe event receiver",
        "payments", PUBLIC,
        (Reply(200, "Acknowledged (also for duplicates and event types not handled).",
               m.WebhookAck, headers={}),),
        (BadRequest, BadWebhookSignature, PaymentsNotConfigured, StoreUnavailableProblem),
        params=(Param("Stripe-Signature", "header", {"type": "string"},
                      "Stripe's signature (`t=…,v1=…`) of the raw body with "
                      "STRIPE_WEBHOOK_SECRET.", required=True),),
        body=m.StripeEvent,
        description="Called by Stripe. `checkout.session.completed` (paid) credits the "
                    "package exactly once, also when redelivered or out of order; a 503 makes "
                    "Stripe redeliver later. A correctly signed body that is not an event (no "
                    "`id`, `type` or `data.object`) is a 400 and records nothing."),
    Operation(
        "POST", "/v1/billing/subscriptions/checkout", "subscriptionCheckout",
        "Start a Stripe Checkout for a monthly subscription", "payments", ACCOUNT_OR_SIGNED,
        (Reply(200, "The Checkout Session to redirect the buyer to.",
               m.SubscriptionCheckoutResult),),
        (*_USER_ERRORS, PaymentProviderError, PaymentsNotConfigured),
        body=SubscriptionCheckoutRequest,
        description="`subscription_key` must be in the catalog and `currency` one of USD EUR "
                    "GBP EGP SAR AED (case-insensitive; else 400). The plan changes, and the "
                    "period's minutes are credited, when Stripe's `checkout.session.completed` "
                    "and `invoice.paid` arrive at the webhook."),
    # gateway.api.auto_topup
    Operation(
        "GET", "/v1/billing/auto-topup/{userId}", "getAutoTopUp",
        "An account's auto top-up settings", "payments", ACCOUNT_OR_SIGNED,
        (Reply(200, "The settings and the state of the last attempt.", m.AutoTopUp),),
        _USER_ERRORS, params=(USER_ID,)),
    Operation(
        "PUT", "/v1/billing/auto-topup/{userId}", "setAutoTopUp",
        "Set an account's auto top-up", "payments", ACCOUNT_OR_SIGNED,
        (Reply(200, "The saved settings.", m.AutoTopUp),),
        _USER_ERRORS, params=(USER_ID,), body=AutoTopUpSettings,
        description="When a settlement leaves the account below `threshold_minutes`, the "
                    "gateway charges the saved payment method off-session for `package_key` "
                    "(one pending attempt per account; the credit follows Stripe's "
                    "`payment_intent.succeeded`; declines back off). `package_key` must be in "
                    "the catalog and `currency` offered by it (else 400). Enabling needs "
                    "`payment_method_id` and `customer_id`, in this body or saved earlier "
                    "(else 400); omitted ones keep their saved values. An enabled account "
                    "already below its threshold is topped up at once."),
    # gateway.api.stream
    Operation(
        "GET", "/v1/billing/stream/{userId}", "streamBillingEvents",
        "An account's live billing events (Server-Sent Events)", "billing", ACCOUNT_OR_SIGNED,
        _STREAM_REPLIES, _USER_ERRORS, params=(USER_ID, *_STREAM_PARAMS),
        description=_STREAM_DESCRIPTION),
    Operation(
        "GET", "/v1/billing/stream", "streamOwnBillingEvents",
        "The caller's live billing events (seed 000's decided path)", "billing",
        ACCOUNT_OR_SIGNED, _STREAM_REPLIES, _USER_ERRORS,
        params=(Param("userId", "query", {"type": "string", "minLength": 1},
                      "The account (`acct_…`): required on a server-signed request; with an "
                      "API key it may be omitted (the key's own account) and any other id is "
                      "a 404."),
                *_STREAM_PARAMS),
        description="`GET /v1/billing/stream/{userId}` for the API key's own account, or for "
                    "`?userId=` on a server-signed request.\n\n" + _STREAM_DESCRIPTION),
    # gateway.api.admin
    Operation(
        "POST", "/v1/admin/accounts", "createAccount", "Create an account", "admin", ADMIN,
        (Reply(201, "Created (welcome bonus applied).", m.AccountCreated),),
        _ADMIN_ERRORS, body=NewAccount, body_required=False,
        description="`plan` defaults to the policy's default plan; an unknown plan is a 400."),
    Operation(
        "GET", "/v1/admin/accounts", "listAccounts", "List accounts", "admin", ADMIN,
        (Reply(200, "One page, ordered by account id.", m.AccountsPage),),
        _ADMIN_ERRORS,
        params=(
            Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500,
                                     "default": 50}, "Page size (decimal digits only)."),
            Param("cursor", "query", {"type": "string"},
                  "`next_cursor` of the previous page: accounts with greater ids follow."),
            Param("plan", "query", {"type": "string"}, "Only accounts on this plan."),
        )),
    Operation(
        "GET", "/v1/admin/accounts/{accountId}", "getAccount", "An account with its keys",
        "admin", ADMIN, (Reply(200, "Balance and API keys (never the keys themselves).",
                               m.AccountDetail),),
        _ADMIN_ERRORS, params=(ACCOUNT_ID,)),
    Operation(
        "POST", "/v1/admin/accounts/{accountId}/keys", "createApiKey", "Create an API key",
        "admin", ADMIN, (Reply(201, "The new key, shown once.", m.KeyCreated),),
        _ADMIN_ERRORS, params=(ACCOUNT_ID,)),
    Operation(
        "DELETE", "/v1/admin/keys/{keyId}", "revokeApiKey", "Revoke an API key", "admin", ADMIN,
        (Reply(200, "Revoked; it stops working at once on this replica, elsewhere within "
                    "GATEWAY_KEY_CACHE_TTL_S.", m.KeyRevoked),),
        _ADMIN_ERRORS,
        params=(path_param("keyId", "The key id (`key_…`); an unknown or already revoked "
                                    "key is a 404."),)),
    Operation(
        "POST", "/v1/admin/accounts/{accountId}/grants", "grantCredit", "Credit time", "admin",
        ADMIN,
        (Reply(201, "Credited.", m.GrantApplied),
         Reply(200, "Replayed: this idempotency key was already applied.", m.GrantApplied)),
        (*_ADMIN_ERRORS, IdempotencyKeyReused), params=(ACCOUNT_ID,), body=Grant,
        description="Exactly one of `seconds` or `minutes`. `gift` never expires; `package` "
                    "expires with the catalog's package expiry. The same request again with "
                    "its `idempotency_key` answers the original result (200, `replayed`); the "
                    "key reused for another amount, source or reason is a 422."),
    Operation(
        "POST", "/v1/admin/accounts/{accountId}/adjustments", "adjustBalance",
        "Signed correction", "admin", ADMIN,
        (Reply(201, "Applied.", m.AdjustmentApplied),
         Reply(200, "Replayed: this idempotency key was already applied.",
               m.AdjustmentApplied)),
        (*_ADMIN_ERRORS, IdempotencyKeyReused), params=(ACCOUNT_ID,), body=Adjustment,
        description="Positive credits a gift bucket; negative takes balance back in burn "
                    "order, never below zero (`unrecovered_ms` is what was missing). The same "
                    "request again with its `idempotency_key` answers the original result "
                    "(200, `replayed`); the key reused for another amount or reason (or by a "
                    "grant) is a 422."),
    Operation(
        "GET", "/v1/admin/stats/usage", "getUsageStats", "Usage by model and by operation",
        "admin", ADMIN, (Reply(200, "Totals across every account.", m.UsageStats),),
        _ADMIN_ERRORS, params=(PERIOD,)),
    # gateway.api.models
    Operation(
        "GET", "/v1/models", "listModels", "The models this gateway prices", "models", API_KEY,
        (Reply(200, "OpenAI's model list format.", ModelList),),
        (BadRequest, Unauthorized, StoreUnavailableProblem),
        description="The model names priced on the policy's token-metered routes, each once: "
                    "exact price keys, and patterns whose only wildcard is a trailing `*` as "
                    "their prefix (`gpt-4o-mini*` → `gpt-4o-mini`); `owned_by` is the upstream "
                    "of the first route pricing it, `created` is 0. A policy route for `GET "
                    "/v1/models` (proxying an upstream) takes precedence over this endpoint."),
)

_TAGS = [
    {"name": "billing", "description": "An account's catalog, balance, history and preflight."},
    {"name": "payments", "description": "Package and subscription purchases through Stripe "
                                         "Checkout, auto top-up, the Stripe webhook."},
    {"name": "admin", "description": "Operator endpoints (GATEWAY_ADMIN_TOKEN)."},
    {"name": "models", "description": "Model discovery for OpenAI-compatible clients."},
]

# --- generation ------------------------------------------------------------------------------


def build_document(operations: tuple[Operation, ...] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1 document (a JSON-ready dict) of `operations`. Raises ValueError when an
    operation's path template and path parameters disagree or two operations collide."""
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (m.Problem, "serialization")]
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        models.extend((r.model, "serialization") for r in op.replies if r.model is not None)
    refs, defs = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry = paths.setdefault(op.path, {})
        if op.method.lower() in entry:
            raise ValueError(f"{op.method} {op.path} is declared twice")
        entry[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AI metering gateway: billing and admin API",
            "version": "1",
            "description": "Billing reads, batch preflight, package purchases and the operator "
                           "API of the metering gateway (SPEC §8). Errors are RFC 9457 problem "
                           "documents whose `type` dereferences to `/problems/<slug>`. The "
                           "metered AI routes themselves are the upstreams' APIs and are not "
                           "described here; `GET /v1/models` lists the models they price. Any "
                           "path or query holding a NUL character (`%00`) is a 400; a request "
                           "body over GATEWAY_MAX_BODY_BYTES (1 MiB by default) is a 413, "
                           "refused while it is read.",
        },
        "tags": _TAGS,
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
    }


def _operation(op: Operation, refs: Mapping[tuple[Any, str], Any]) -> dict[str, Any]:
    in_path = set(re.findall(r"{(\w+)}", op.path))
    declared = {p.name for p in op.params if p.where == "path"}
    if in_path != declared:
        raise ValueError(f"{op.method} {op.path}: path parameters {sorted(declared)} do not "
                         f"match the template {sorted(in_path)}")
    doc: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.description:
        doc["description"] = op.description
    doc["tags"] = [op.tag]
    doc["security"] = [{name: []} for name in op.security]
    if op.params:
        doc["parameters"] = [{"name": p.name, "in": p.where, "required": p.required,
                              "description": p.description, "schema": dict(p.schema)}
                             for p in op.params]
    if op.body is not None:
        doc["requestBody"] = {"required": op.body_required, "content": {
            "application/json": {"schema": refs[(op.body, "validation")]}}}
    responses: dict[str, Any] = doc.setdefault("responses", {})
    for reply in op.replies:
        out: dict[str, Any] = {"description": reply.description}
        if reply.headers:
            out["headers"] = {k: dict(v) for k, v in reply.headers.items()}
        if reply.model is not None:
            out["content"] = {reply.media_type: {
                "schema": refs[(reply.model, "serialization")]}}
        elif reply.media_type != "application/json":
            out["content"] = {reply.media_type: {"schema": {"type": "string"}}}
        responses[str(reply.status)] = out
    by_status: dict[int, list[type[GatewayError]]] = {}
    # Every body is bounded while read (gateway/body_limit.py: GATEWAY_MAX_BODY_BYTES).
    errors = (*op.errors, PayloadTooLarge) if op.body is not None else op.errors
    for cls in dict.fromkeys(errors):
        by_status.setdefault(cls.status, []).append(cls)
    for status, classes in sorted(by_status.items()):
        responses[str(status)] = _problem_response(status, classes)
    return doc


def _problem_response(status: int, classes: list[type[GatewayError]]) -> dict[str, Any]:
    """A problem response whose `type` must end in one of the classes' slugs."""
    slugs = sorted({c.slug for c in classes})
    assert all(re.fullmatch(r"[a-z-]+", s) for s in slugs), slugs
    lines = [f"`{c.slug}`: {' '.join((c.__doc__ or c.title).split())}" for c in classes]
    schema = {"allOf": [
        {"$ref": _REF.format(model="Problem")},
        {"properties": {"status": {"const": status},
                        "type": {"pattern": f"/problems/({'|'.join(slugs)})$"}}},
    ]}
    return {"description": " ".join(lines), "headers": dict(_PROBLEM_HEADERS),
            "content": {_PROBLEM: {"schema": schema}}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document of `OPERATIONS`, built on first use and cached for the process (shared:
    treat it as read-only)."""
    return build_document()


@functools.cache
def _document_bytes() -> bytes:
    return orjson.dumps(openapi_document())


def openapi_route() -> WebRoute:
    """`GET /openapi.json`: the document, public, `Cache-Control: public, max-age=300`."""

    async def serve(_request: Request) -> Response:
        return Response(_document_bytes(), media_type="application/json",
                        headers={"cache-control": "public, max-age=300"})

    return WebRoute(OPENAPI_PATH, serve, methods=["GET"])
