"""Problem `type` URLs (RFC 9457 §3.1.1) are absolute, built from GATEWAY_PUBLIC_URL or the
configured listen address — never from the request's Host header — and dereference to the
type's documentation: JSON by default, an HTML page for a browser, every value escaped."""

from __future__ import annotations

import html
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.problems import problem_types
from tests.e2e.helpers import assert_problem, auth, chat_body, encode
from tests.support import RunningGateway, start_gateway

HOSTILE = "evil.example:666"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_a_hostile_host_header_never_reaches_a_problem_type(gateway):
    _account, key = gateway.ledger.funded(0)
    origin = f"http://127.0.0.1:{gateway.settings.port}"
    hostile = {"host": HOSTILE}
    answers = [
        (httpx.get(gateway.url + "/v1/billing/balance/acct_x", headers=hostile), 401),
        (httpx.get(gateway.url + "/no/such/path", headers=hostile), 404),
        (httpx.post(gateway.url + "/v1/chat/completions", content=encode(chat_body()),
                    headers={**hostile, **auth(key), "content-type": "application/json"}), 402),
        (httpx.get(gateway.url + "/v1/billing/catalog?currency=%00", headers=hostile), 400),
    ]
    for resp, status in answers:
        assert resp.status_code == status, resp.text
        assert resp.json()["type"].startswith(origin + "/problems/"), resp.json()
        assert "evil" not in resp.text


@pytest.fixture
def public_gateway(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[RunningGateway]:
    gw = start_gateway(tmp_path, {**upstream_env,
                                  "GATEWAY_PUBLIC_URL": "https://billing.example.com/"})
    try:
        yield gw
    finally:
        gw.stop()


def test_gateway_public_url_is_the_base_of_every_problem_type(public_gateway):
    r = httpx.get(public_gateway.url + "/v1/billing/balance/acct_x", headers={"host": HOSTILE})
    doc = assert_problem(r, 401, "unauthorized")
    assert doc["type"] == "https://billing.example.com/problems/unauthorized"
    page = httpx.get(public_gateway.url + "/problems/unauthorized").json()
    assert page["type"] == doc["type"]


def test_every_problem_type_documents_its_own_type_uri_as_json(gateway):
    base = f"http://127.0.0.1:{gateway.settings.port}/problems/"
    for slug, cls in problem_types().items():
        r = httpx.get(gateway.url + "/problems/" + slug)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.headers["vary"].lower() == "accept"
        doc = r.json()
        assert doc["type"] == base + slug  # what the problems of this type carry
        assert (doc["slug"], doc["title"], doc["status"]) == (slug, cls.title, cls.status)
        assert len(doc["description"]) > 10


def test_a_browser_gets_the_documentation_as_an_escaped_html_page(gateway):
    r = httpx.get(gateway.url + "/problems/idempotency-key-reused",
                  headers={"accept": BROWSER_ACCEPT})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == "default-src 'none'"
    page = r.text
    assert page.startswith("<!doctype html>")
    uri = f"http://127.0.0.1:{gateway.settings.port}/problems/idempotency-key-reused"
    assert f"<code>{uri}</code>" in page and "<dd>422</dd>" in page
    assert html.escape("Idempotency key reused with another request") in page


def test_an_unknown_problem_type_is_a_404_problem(gateway):
    for accept in ("application/json", BROWSER_ACCEPT):
        r = httpx.get(gateway.url + "/problems/%3Cscript%3Ealert(1)%3C%2Fscript%3E",
                      headers={"accept": accept})
        assert_problem(r, 404, "not-found")  # JSON even for a browser: nothing to render
