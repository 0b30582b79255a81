"""Dashboard sessions over HTTP (issue 12), without a browser: sign-in exchanges an API key or
the admin token for an HttpOnly SameSite=Strict session cookie; the cookie reads the account's
billing API (and the admin API for the console) but never reaches the proxy; writes need the
session's CSRF token; sign-out ends the session server-side; the pages carry the strict CSP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dashboard.support import ADMIN_TOKEN, csrf_of, new_account, sign_in
from tests.e2e.helpers import assert_problem, auth, chat_body, encode
from tests.support import RunningGateway, start_gateway


@pytest.fixture
def gw(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[RunningGateway]:
    gateway = start_gateway(tmp_path, {**upstream_env, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
                                       "GATEWAY_UNBILLED_PATH": str(tmp_path / "unbilled.jsonl")})
    try:
        yield gateway
    finally:
        gateway.stop()


def test_pages_carry_the_strict_headers_and_a_login_csrf_cookie(gw: RunningGateway) -> None:
    r = httpx.get(gw.url + "/dashboard")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    cookie = r.headers["set-cookie"].lower()
    assert "gw_login=" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    assert "<script>" not in r.text  # no inline script: modules only, from this origin


def test_sign_in_needs_the_login_csrf_token_and_a_live_key(gw: RunningGateway) -> None:
    _account, key = new_account(gw.url)
    r = httpx.post(gw.url + "/dashboard/login", data={"api_key": key, "csrf_token": "forged"})
    assert r.status_code == 403 and "gw_session" not in r.headers.get("set-cookie", "")
    with pytest.raises(AssertionError), sign_in(gw.url, "account", "gw_not_a_key"):
        pass


def test_the_session_reads_billing_but_never_calls_the_proxy(gw: RunningGateway) -> None:
    account, key = new_account(gw.url, minutes=5)
    with sign_in(gw.url, "account", key) as client:
        cookie = client.cookies.jar
        set_cookie = next(c for c in cookie if c.name == "gw_session")
        assert set_cookie.has_nonstandard_attr("HttpOnly") and not set_cookie.secure
        assert set_cookie.value.startswith("ds_") and key not in set_cookie.value

        balance = client.get(f"/v1/billing/balance/{account}")
        api = httpx.get(gw.url + f"/v1/billing/balance/{account}", headers=auth(key))
        assert balance.status_code == 200
        assert balance.json()["totals"] == api.json()["totals"]
        assert client.get("/v1/billing/balance/acct_someone_else").status_code == 404

        proxied = client.post("/v1/chat/completions", content=encode(chat_body()),
                              headers={"content-type": "application/json"})
        assert_problem(proxied, 401, "unauthorized")
        assert client.get("/v1/admin/accounts").status_code == 401  # not an admin session


def test_writes_need_the_csrf_token(gw: RunningGateway) -> None:
    account, key = new_account(gw.url)
    with sign_in(gw.url, "account", key) as client:
        settings = {"enabled": False, "threshold_minutes": 5, "package_key": "mini"}
        refused = client.put(f"/v1/billing/auto-topup/{account}", json=settings)
        assert_problem(refused, 403, "csrf-token-invalid")
        assert client.get(f"/v1/billing/auto-topup/{account}").json()["configured"] is False
        token = csrf_of(client, "/dashboard")
        ok = client.put(f"/v1/billing/auto-topup/{account}", json=settings,
                        headers={"x-csrf-token": token})
        assert ok.status_code == 200, ok.text


def test_sign_out_ends_the_session_server_side(gw: RunningGateway) -> None:
    account, key = new_account(gw.url)
    with sign_in(gw.url, "account", key) as client:
        stolen = client.cookies["gw_session"]
        refused = client.post("/dashboard/logout", data={"csrf_token": "wrong"})
        assert refused.status_code == 403
        r = client.post("/dashboard/logout", data={"csrf_token": csrf_of(client, "/dashboard")})
        assert r.status_code == 303
        replay = httpx.get(gw.url + f"/v1/billing/balance/{account}",
                           cookies={"gw_session": stolen})
        assert_problem(replay, 401, "unauthorized")


def test_revoking_the_key_ends_the_sessions_opened_with_it(gw: RunningGateway) -> None:
    account, _ = new_account(gw.url)
    with httpx.Client(base_url=gw.url, headers=auth(ADMIN_TOKEN), timeout=10) as admin:
        made = admin.post(f"/v1/admin/accounts/{account}/keys").json()
        other_key = admin.post(f"/v1/admin/accounts/{account}/keys").json()["key"]
        with sign_in(gw.url, "account", made["key"]) as doomed, \
                sign_in(gw.url, "account", other_key) as kept:
            assert doomed.get(f"/v1/billing/balance/{account}").status_code == 200
            assert admin.delete(f"/v1/admin/keys/{made['key_id']}").status_code in (200, 204)
            assert_problem(doomed.get(f"/v1/billing/balance/{account}"), 401, "unauthorized")
            page = doomed.get("/dashboard")  # the page asks to sign in again
            assert page.status_code == 200 and 'name="api_key"' in page.text
            assert kept.get(f"/v1/billing/balance/{account}").status_code == 200


def test_the_console_session_serves_the_admin_api_and_its_endpoints(gw: RunningGateway) -> None:
    account, _key = new_account(gw.url)
    assert httpx.get(gw.url + "/admin").status_code == 200
    with sign_in(gw.url, "admin", ADMIN_TOKEN) as console:
        assert console.get(f"/v1/billing/balance/{account}").status_code == 401  # not an account
        page = console.get("/v1/admin/accounts", params={"q": account[5:].upper()}).json()
        assert [a["account_id"] for a in page["accounts"]] == [account]

        policy = console.get("/v1/admin/policy").json()
        assert policy["last_reload_error"] is None and policy["unit"] == "s"
        assert policy["files"][0]["modified_at"].endswith("Z")
        unbilled = console.get("/v1/admin/unbilled").json()
        assert unbilled["count"] == 0 and unbilled["calls"] == [] and unbilled["error"] is None
        daily = console.get("/v1/admin/stats/daily", params={"period": "week"}).json()
        assert len(daily["days"]) == 7 and daily["unit"] == "s"

        grant = {"minutes": 1, "idempotency_key": "console-test-1"}
        assert_problem(console.post(f"/v1/admin/accounts/{account}/grants", json=grant), 403,
                       "csrf-token-invalid")
        token = csrf_of(console, "/admin")
        r = console.post(f"/v1/admin/accounts/{account}/grants", json=grant,
                         headers={"x-csrf-token": token})
        assert r.status_code == 201, r.text


def test_the_console_is_absent_without_an_admin_token(tmp_path: Path,
                                                      upstream_env: dict[str, str]) -> None:
    gateway = start_gateway(tmp_path, upstream_env)
    try:
        assert httpx.get(gateway.url + "/admin").status_code == 404
        assert httpx.get(gateway.url + "/dashboard").status_code == 200
    finally:
        gateway.stop()
