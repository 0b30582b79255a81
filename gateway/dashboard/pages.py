"""The dashboard's pages (issue 12): `/dashboard` (an account's billing pages, signed in with an
API key) and `/admin` (the operator console, signed in with the admin token).

Signing in exchanges the credential for a server-side session (storage port
`DashboardSessions`): an opaque id in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` behind
TLS) and a CSRF token the page's scripts send on writes. The browser never keeps the API key, and
the session can never make proxied calls (gateway.dashboard.session_auth). Sign-out ends the
session server-side; so does its expiry (`ACCOUNT_SESSION_S`, `ADMIN_SESSION_S`).

Pages are Jinja2 templates (autoescaped) with small ES modules that read the public billing and
admin API (gateway/dashboard/static). Every page answers with a strict Content-Security-Policy
(scripts and styles from this origin only, no inline script), `X-Frame-Options: DENY` and
`Cache-Control: no-store`. The sign-in forms carry a login CSRF token (double submit: a
`SameSite=Strict` cookie and a form field).
"""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from gateway.api.edge import services_for
from gateway.dashboard.session_auth import ACCOUNT_COOKIE, ADMIN_COOKIE, SCOPE_KEY, cookie_value
from gateway.problems import NotFound
from policies.schema import SUPPORTED_CURRENCIES
from storage.ports import DashboardSession, SessionKind, StoreUnavailable

ACCOUNT_SESSION_S = 8 * 3600  # an account page session lives 8 h from sign-in
ADMIN_SESSION_S = 3600  # the console's, 1 h
LOGIN_COOKIE = "gw_login"
STATIC_PATH = "/dashboard/static"
_HERE = Path(__file__).parent
_MAX_FORM_BYTES = 4096
_MAX_CREDENTIAL = 256

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PAGE_HEADERS = {
    "content-security-policy": CSP,
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cache-control": "no-store",
}

_templates = Environment(loader=FileSystemLoader(_HERE / "templates"),
                         autoescape=select_autoescape(default=True, default_for_string=True),
                         auto_reload=False)


def render(template: str, status: int = 200, **context: Any) -> Response:
    """The page `template` rendered with `context` (every value escaped by Jinja2), with the
    dashboard's security headers."""
    body = _templates.get_template(template).render(static=STATIC_PATH, **context)
    return Response(body, status_code=status, media_type="text/html; charset=utf-8",
                    headers=PAGE_HEADERS)


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")


def _session(request: Request, kind: SessionKind) -> DashboardSession | None:
    """The session the gateway attached to this request (gateway.app → attach_session)."""
    session: DashboardSession | None = request.scope.get(SCOPE_KEY)
    return session if session is not None and session.kind == kind else None


async def _form(request: Request) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body, first value of each field (bounded)."""
    raw = await request.body()
    if len(raw) > _MAX_FORM_BYTES:
        return {}
    fields = parse_qs(raw.decode("utf-8", "replace"), max_num_fields=10)
    return {k: v[0] for k, v in fields.items() if v}


def _login_page(request: Request, kind: SessionKind, error: str | None = None,
                status: int = 200) -> Response:
    token = secrets.token_urlsafe(24)
    response = render("login.html", status=status, kind=kind, csrf_token=token, error=error,
                      action="/dashboard/login" if kind == "account" else "/admin/login")
    _cookie(response, request, LOGIN_COOKIE, token, 3600)
    return response


def _login_token_ok(request: Request, form: dict[str, str]) -> bool:
    expected = cookie_value(request.scope.get("headers", []), LOGIN_COOKIE) or ""
    presented = form.get("csrf_token", "")
    return bool(expected) and hmac.compare_digest(expected.encode(), presented.encode())


async def _sign_in(request: Request, kind: SessionKind, account_id: str | None,
                   target: str, key_id: str | None = None) -> Response:
    s = services_for(request)
    assert s.sessions is not None
    ttl = ACCOUNT_SESSION_S if kind == "account" else ADMIN_SESSION_S
    session_id, _ = await s.sessions.open_session(kind, account_id, ttl, key_id)
    response = RedirectResponse(target, status_code=303, headers={"cache-control": "no-store"})
    _cookie(response, request, ACCOUNT_COOKIE if kind == "account" else ADMIN_COOKIE,
            session_id, ttl)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


async def _sign_out(request: Request, kind: SessionKind, target: str) -> Response:
    session = _session(request, kind)
    form = await _form(request)
    name = ACCOUNT_COOKIE if kind == "account" else ADMIN_COOKIE
    if session is not None:
        if not hmac.compare_digest(form.get("csrf_token", "").encode(),
                                   session.csrf_token.encode()):
            return render("message.html", status=403, title="Sign-out refused",
                          message="The form's CSRF token did not match this session.")
        s = services_for(request)
        assert s.sessions is not None
        await s.sessions.end_session(cookie_value(request.scope["headers"], name) or "")
    response = RedirectResponse(target, status_code=303, headers={"cache-control": "no-store"})
    response.delete_cookie(name, path="/")
    return response


# --- the account pages -----------------------------------------------------------------------


async def dashboard(request: Request) -> Response:
    """`GET /dashboard`: the account's billing page, or the sign-in form."""
    session = _session(request, "account")
    if session is None:
        return _login_page(request, "account")
    s = services_for(request)
    return render("account.html", account_id=session.account_id, csrf_token=session.csrf_token,
                  unit=s.policy.unit.api_name, currencies=SUPPORTED_CURRENCIES,
                  expires_at_ms=session.expires_at_ms)


async def dashboard_login(request: Request) -> Response:
    """`POST /dashboard/login` (form: `api_key`, `csrf_token`): an account session, or the form
    again with the reason."""
    form = await _form(request)
    if not _login_token_ok(request, form):
        return _login_page(request, "account", "The sign-in form expired; try again.", 403)
    key = form.get("api_key", "").strip()
    if not key or len(key) > _MAX_CREDENTIAL:
        return _login_page(request, "account", "Enter an API key.", 400)
    try:
        caller = await services_for(request).keys.resolve(key)
    except StoreUnavailable:
        return _login_page(request, "account", "The billing store is unreachable; retry.", 503)
    if caller is None:
        return _login_page(request, "account", "Unknown or revoked API key.", 401)
    # The session remembers its key: revoking the key ends the session (storage adapters).
    return await _sign_in(request, "account", caller.account_id, "/dashboard",
                          caller.api_key_id)


async def dashboard_logout(request: Request) -> Response:
    """`POST /dashboard/logout` (form: `csrf_token`): ends the session server-side."""
    return await _sign_out(request, "account", "/dashboard")


# --- the operator console ----------------------------------------------------------------------


def _console_enabled(request: Request) -> None:
    if not services_for(request).settings.admin_token:
        raise NotFound("No route for this path.")  # no admin token: no admin API, no console


async def console(request: Request) -> Response:
    """`GET /admin`: the operator console, or its sign-in form (404 without an admin token)."""
    _console_enabled(request)
    session = _session(request, "admin")
    if session is None:
        return _login_page(request, "admin")
    s = services_for(request)
    return render("admin.html", csrf_token=session.csrf_token, unit=s.policy.unit.api_name,
                  expires_at_ms=session.expires_at_ms)


async def console_login(request: Request) -> Response:
    """`POST /admin/login` (form: `admin_token`, `csrf_token`): an admin session."""
    _console_enabled(request)
    form = await _form(request)
    if not _login_token_ok(request, form):
        return _login_page(request, "admin", "The sign-in form expired; try again.", 403)
    token = services_for(request).settings.admin_token or ""
    presented = form.get("admin_token", "").strip()[:_MAX_CREDENTIAL]
    if not presented or not hmac.compare_digest(presented.encode(), token.encode()):
        return _login_page(request, "admin", "That is not the admin token.", 401)
    return await _sign_in(request, "admin", None, "/admin")


async def console_logout(request: Request) -> Response:
    """`POST /admin/logout` (form: `csrf_token`)."""
    _console_enabled(request)
    return await _sign_out(request, "admin", "/admin")


DASHBOARD_ROUTES: list[BaseRoute] = [
    Route("/dashboard", dashboard, methods=["GET"]),
    Route("/dashboard/login", dashboard_login, methods=["POST"]),
    Route("/dashboard/logout", dashboard_logout, methods=["POST"]),
    Route("/admin", console, methods=["GET"]),
    Route("/admin/login", console_login, methods=["POST"]),
    Route("/admin/logout", console_logout, methods=["POST"]),
    Mount(STATIC_PATH, app=StaticFiles(directory=_HERE / "static"), name="dashboard-static"),
]
DASHBOARD_PAGES = frozenset(getattr(r, "path", "") for r in DASHBOARD_ROUTES)
"""Paths of the pages and the static mount: HTML for people, not API (not in the OpenAPI)."""
