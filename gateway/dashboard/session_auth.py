"""Dashboard sessions as a credential of the billing and admin API (issue 12).

A signed-in browser holds an opaque session id in an `HttpOnly`, `SameSite=Strict` cookie
(`gw_session` for the account pages, `gw_admin` for the console; `Secure` behind TLS). The
gateway resolves it server-side (storage port `DashboardSessions`) before the web app runs —
never on the proxy's path: the proxy authenticates API keys from headers only, so a session can
never make a proxied (money-spending) call. A request that carries an explicit credential
(`Authorization`, `X-API-Key`, `X-HMAC-Signature`) is judged by it alone.

Writes with a session need its CSRF token in `X-CSRF-Token` (OWASP's synchronizer token
pattern); reads (GET, HEAD) do not, so `EventSource` works with the cookie alone.
"""

from __future__ import annotations

import hmac
import logging
from http.cookies import CookieError, SimpleCookie
from typing import Any

from starlette.requests import Request

from gateway.problems import CsrfTokenInvalid
from storage.ports import DashboardSession, DashboardSessions, SessionKind, StoreUnavailable

ACCOUNT_COOKIE = "gw_session"
ADMIN_COOKIE = "gw_admin"
SCOPE_KEY = "gateway.dashboard_session"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_EXPLICIT = (b"authorization", b"x-api-key", b"x-hmac-signature")
log = logging.getLogger("gateway.dashboard")


def cookie_value(headers: list[tuple[bytes, bytes]], name: str) -> str | None:
    """The value of cookie `name` in the request's `Cookie` headers, or None."""
    for key, raw in headers:
        if key != b"cookie":
            continue
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw.decode("latin-1"))
        except CookieError:
            continue
        morsel = jar.get(name)
        if morsel is not None and morsel.value:
            return morsel.value
    return None


async def attach_session(scope: dict[str, Any], sessions: DashboardSessions) -> None:
    """Resolve the dashboard session cookie of a billing/admin API request into
    `scope[SCOPE_KEY]` (an admin session only under `/v1/admin/` and the console's `/admin`, an
    account session elsewhere).
    Does nothing when the request carries an explicit credential or no cookie; a store outage
    leaves the request without a session (it then answers 401 like any unauthenticated one)."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
    if any(k in _EXPLICIT for k, _ in headers):
        return
    path = scope["path"]
    admin = path.startswith("/v1/admin/") or path == "/admin" or path.startswith("/admin/")
    sid = cookie_value(headers, ADMIN_COOKIE if admin else ACCOUNT_COOKIE)
    if sid is None:
        return
    try:
        session = await sessions.find_session(sid)
    except StoreUnavailable:
        log.warning("dashboard session lookup failed: store unavailable")
        return
    if session is not None and session.kind == ("admin" if admin else "account"):
        scope[SCOPE_KEY] = session


def session_for(request: Request, kind: SessionKind) -> DashboardSession | None:
    """The request's dashboard session of `kind`, or None. For a write (not GET/HEAD/OPTIONS)
    the `X-CSRF-Token` header must equal the session's token (compared in constant time), else
    CsrfTokenInvalid (403) — nothing is applied."""
    session: DashboardSession | None = request.scope.get(SCOPE_KEY)
    if session is None or session.kind != kind:
        return None
    if request.method not in SAFE_METHODS:
        presented = request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(presented.encode(), session.csrf_token.encode()):
            raise CsrfTokenInvalid("A write with a dashboard session needs the session's CSRF "
                                   "token in the X-CSRF-Token header.")
    return session
