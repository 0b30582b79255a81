"""How an API module declares its routes: one `Operation` per route, next to its handler, naming
method, path, handler, who may call it, parameters, the pydantic model of the request body (the
model the handler validates with), the success replies (the models the handler builds its
responses with) and the problem types it can answer with (classes of gateway/problems.py).

`web_routes(operations)` turns a module's declarations into its Starlette routes, and
gateway/api/openapi.py assembles the OpenAPI document from the same declarations, so a path is
written down once. Adding an endpoint is one more `Operation(...)` in its module's `OPERATIONS`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as WebRoute

from gateway.problems import (
    BadRequest,
    GatewayError,
    NotFound,
    StoreUnavailableProblem,
    Unauthorized,
)

Handler = Callable[[Request], Awaitable[Response]]

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
    "dashboardSession": {
        "type": "apiKey", "in": "cookie", "name": "gw_session",
        "description": "The account pages' session (`/dashboard` sign-in with an API key): the "
                       "account's own data, like its key; a write needs the session's CSRF "
                       "token in `X-CSRF-Token` (else 403 `csrf-token-invalid`). Never accepted "
                       "by proxied routes.",
    },
    "adminSession": {
        "type": "apiKey", "in": "cookie", "name": "gw_admin",
        "description": "The operator console's session (`/admin` sign-in with the admin "
                       "token); a write needs its CSRF token in `X-CSRF-Token`.",
    },
}
ACCOUNT_OR_SIGNED = ("apiKey", "apiKeyHeader", "hmacSignature", "dashboardSession")
API_KEY = ("apiKey", "apiKeyHeader")
ADMIN = ("adminToken", "adminSession")
PUBLIC: tuple[str, ...] = ()

NO_STORE = {"Cache-Control": {"required": True, "description": "User data is never cached.",
                              "schema": {"type": "string", "const": "no-store"}}}

# BadRequest everywhere: the gateway refuses a NUL (`%00`) in any path or query (gateway/app.py).
USER_ERRORS = (BadRequest, Unauthorized, NotFound, StoreUnavailableProblem)
ADMIN_ERRORS = (BadRequest, Unauthorized, NotFound, StoreUnavailableProblem)


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
    """One endpoint: its route (`method`, `path`, `endpoint`) and its documentation. `security`
    lists alternatives (names in SECURITY_SCHEMES; () = public); `errors` are the problem classes
    the handler can raise, each documented under its status."""

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
    endpoint: Handler | None = None


def web_routes(operations: Sequence[Operation]) -> list[WebRoute]:
    """The Starlette routes of `operations`, in order (one route per operation). Raises
    ValueError for an operation without an endpoint."""
    routes = []
    for op in operations:
        if op.endpoint is None:
            raise ValueError(f"{op.method} {op.path} has no endpoint")
        routes.append(WebRoute(op.path, op.endpoint, methods=[op.method]))
    return routes


def path_param(name: str, description: str) -> Param:
    """A required path segment (any non-empty string without `/`)."""
    return Param(name, "path", {"type": "string", "minLength": 1}, description, required=True)


USER_ID = path_param("userId", "The account id (`acct_…`). With an API key only the key's own "
                               "account: any other id is a 404.")
PERIOD = Param("period", "query", {"type": "string", "enum": ["day", "week", "month"],
                                   "default": "month"},
               "`day`: today (UTC); `week`: the last 7 UTC days including today; `month`: this "
               "calendar month (UTC). Anything else is a 400.")
