"""The edge of the billing and admin API: the services a request is served with, who a billing
call acts for (API key or server HMAC signature), request parsing (JSON bodies, query
parameters, analytics periods) and JSON responses.

Handlers get the running gateway's services from the app's lifespan state (`request.state`),
never from the app object, so no API module imports `gateway.app`. A store failure a handler
does not handle itself (`storage.ports.StoreUnavailable`) is answered by the app's one
exception handler: the `503 store-unavailable` problem.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from gateway import hmac_auth
from gateway.auth import Caller, key_from_headers
from gateway.dashboard.session_auth import session_for
from gateway.problems import BadRequest, NotFound, Unauthorized, validation_problem
from gateway.services import Services
from storage.engine import bonus

NO_STORE = {"cache-control": "no-store"}


def services_for(request: Request) -> Services:
    """The services of the gateway serving `request`: the app's lifespan puts them in the
    lifespan state, which the server copies into every request's `request.state`."""
    services: Services = request.state.services
    return services


def json_response(doc: object, headers: dict[str, str] = NO_STORE, status: int = 200) -> Response:
    """A JSON response (orjson); user data by default, so `Cache-Control: no-store`."""
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json",
                    headers=headers)


async def caller_for(request: Request) -> Caller:
    """The account whose API key signed this request — or, without a key, whose dashboard
    session cookie it carries (gateway.dashboard.session_auth; a write needs the session's CSRF
    token, else CsrfTokenInvalid 403). Raises Unauthorized (401), or StoreUnavailable (503)."""
    s = services_for(request)
    key = key_from_headers(request.headers.get("authorization", "").encode("latin-1") or None,
                           request.headers.get("x-api-key", "").encode("latin-1") or None)
    if key is None:
        session = session_for(request, "account")  # the dashboard's cookie (CSRF on writes)
        if session is not None and session.account_id is not None:
            return Caller(session.account_id, "", "session")
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key'.")
    caller = await s.keys.resolve(key)
    if caller is None:
        raise Unauthorized("Unknown or revoked API key.")
    return caller


async def server_signed(request: Request) -> bool:
    """True when the request carries a valid `X-HMAC-Signature` (a product backend acting for
    any account); False when it carries none. Raises Unauthorized for a bad signature, or
    StoreUnavailable (answered 503) when the nonce store is down."""
    header = request.headers.get("x-hmac-signature")
    if header is None:
        return False
    s = services_for(request)
    if not s.settings.hmac_keys:
        raise Unauthorized("HMAC signatures are not configured on this gateway.")
    await hmac_auth.verify(header, s.settings.hmac_keys, s.nonces, request.method,
                           request.url.path, request.url.query, await request.body())
    return True


BodyT = TypeVar("BodyT", bound=BaseModel)


async def body_and_account(request: Request, model: type[BodyT]) -> tuple[BodyT, str]:
    """(validated JSON body, account it acts for) of a POST: a server-signed request names the
    account in the body's `userId`; an API key acts for its own account (another `userId` is a
    404). Raises Unauthorized, BadRequest (invalid body), NotFound."""
    signed = await server_signed(request)
    caller = None if signed else await caller_for(request)
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


async def own_account(request: Request) -> str:
    """The account a read is for: `{userId}` of the path, else the `userId` query parameter,
    when the request may read it — a server-signed request (any account; it must name one,
    else BadRequest), or the account's own API key (naming none means its own; any other id is
    a 404, so ids cannot be probed)."""
    user_id = request.path_params.get("userId") or request.query_params.get("userId")
    if await server_signed(request):
        if not user_id:
            raise BadRequest("userId is required on a server-signed request.")
        if not await services_for(request).accounts.account_exists(user_id):
            raise NotFound(f"No account {user_id!r}.")
        return user_id
    caller = await caller_for(request)
    if user_id not in (None, "", caller.account_id):
        raise NotFound(f"No account {user_id!r} for this API key.")
    return caller.account_id


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
