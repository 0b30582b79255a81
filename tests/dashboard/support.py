"""Helpers of the dashboard tests: a gateway with an admin token, and signing in over HTTP the
way the browser's form does (the login CSRF cookie and field, then the session cookie)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import httpx

from tests.e2e.helpers import auth

ADMIN_TOKEN = "t" * 40


@contextlib.contextmanager
def sign_in(base_url: str, kind: str, credential: str) -> Iterator[httpx.Client]:
    """An httpx client holding a dashboard session (`kind` "account" with an API key, "admin"
    with the admin token), closed on leaving the `with`. Raises AssertionError when sign-in
    fails."""
    with httpx.Client(base_url=base_url, timeout=10, follow_redirects=False) as client:
        page = "/dashboard" if kind == "account" else "/admin"
        form = client.get(page)
        match = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
        assert form.status_code == 200 and match, form.text[:500]
        field = "api_key" if kind == "account" else "admin_token"
        r = client.post(page + "/login", data={"csrf_token": match.group(1), field: credential})
        assert r.status_code == 303, r.text[:500]
        yield client


def new_account(base_url: str, minutes: int = 0) -> tuple[str, str]:
    """(account id, API key) of a new account made through the admin API, with `minutes` of
    gift credit."""
    with httpx.Client(base_url=base_url, headers=auth(ADMIN_TOKEN), timeout=10) as admin:
        account = admin.post("/v1/admin/accounts", json={}).json()["account_id"]
        key = admin.post(f"/v1/admin/accounts/{account}/keys").json()["key"]
        if minutes:
            r = admin.post(f"/v1/admin/accounts/{account}/grants",
                           json={"minutes": minutes, "idempotency_key": f"seed-{account}"})
            assert r.status_code == 201, r.text
    return account, key


def csrf_of(client: httpx.Client, page: str) -> str:
    """The CSRF token a signed-in page carries (`data-csrf` on its body)."""
    match = re.search(r'data-csrf="([^"]+)"', client.get(page).text)
    assert match, "no CSRF token on the page"
    return match.group(1)
