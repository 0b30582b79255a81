"""The OpenAPI document at /openapi.json is the billing and admin API as the code serves it: every
billing/admin route of the app is in it and nothing else, and schemathesis fuzzes each operation
of a running gateway against it with real credentials — no 5xx, and every status, content type,
body and header as documented."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from gateway.api.openapi import (
    OPENAPI_PATH,
    OPERATIONS,
    Operation,
    build_document,
    openapi_document,
)
from gateway.dashboard.pages import DASHBOARD_PAGES
from gateway.hmac_auth import header_for
from tests.e2e.helpers import assert_problem, auth, chat_body, db_path, encode
from tests.fakes.upstream import FakeUpstream
from tests.production._support import create_database, drop_database
from tests.support import RunningGateway, start_gateway

ADMIN_TOKEN = "o" * 40
WEBHOOK_SECRET = "whsec_openapi_test"
HMAC_SECRET = "h" * 40
HMAC_KEYS = f"k1:{HMAC_SECRET}"
# Checkouts and the webhook need Stripe: documented, not fuzzed here (tests/e2e/test_purchases.py).
# The live stream never ends, so no single call of it can be validated.
NOT_FUZZED = ["purchasePackage", "subscriptionCheckout", "stripeWebhook", "streamBillingEvents",
              "streamOwnBillingEvents",
              # Stripe-backed (cards, portal, subscription changes): test_billing_surface.py and
              # test_subscription_management.py drive them against the Stripe double.
              "listPaymentMethods", "attachPaymentMethod", "createSetupIntent",
              "setDefaultPaymentMethod", "detachPaymentMethod", "openCustomerPortal",
              "cancelSubscription", "reactivateSubscription", "changeSubscription"]
MAX_EXAMPLES = 40  # per operation, positive and negative cases together
CREDENTIAL_HEADERS = {"authorization", "x-api-key", "x-hmac-signature"}
# The HTTP message's own framing, which httpx writes from the request itself: a junk value here
# (negative cases add random headers, e.g. `transfer-encoding: 8a`) is a malformed HTTP message,
# answered by the server's HTTP parser (uvicorn: a plain-text 400, connection closed) before any
# route exists to answer with a problem document — outside the API this document describes.
FRAMING_HEADERS = {"transfer-encoding", "content-length", "host", "connection"}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance]


@dataclass
class Target:
    """A gateway with an account that has history, and ids worth aiming path parameters at."""

    gw: RunningGateway
    account: str
    key: str
    other_account: str
    spare_key_ids: list[str]


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory,
           upstream: FakeUpstream) -> Iterator[Target]:
    env = {"OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-upstream-openai",
           "ANTHROPIC_BASE_URL": upstream.url, "ANTHROPIC_API_KEY": "sk-upstream-anthropic",
           "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
           "GATEWAY_HMAC_KEYS": HMAC_KEYS}
    gw = start_gateway(tmp_path_factory.mktemp("openapi"), env)
    try:
        account, key = gw.ledger.funded(600_000, plan="free")
        for model in ("gpt-fake", "gpt-fake-2"):  # usage by model and operation, consumption
            r = httpx.post(gw.url + "/v1/chat/completions",
                           content=encode(chat_body(model=model)),
                           headers={**auth(key), "content-type": "application/json"})
            assert r.status_code == 200, r.text
        other = gw.ledger.account("payg")
        admin = httpx.Client(base_url=gw.url, headers=auth(ADMIN_TOKEN))
        with admin:
            spare = [admin.post(f"/v1/admin/accounts/{other}/keys").json()["key_id"]
                     for _ in range(3)]
        yield Target(gw, account, key, other, spare)
    finally:
        gw.stop()


@pytest.fixture(scope="module")
def api_schema(target: Target) -> Any:
    """The document as the running gateway serves it (loading validates it as OpenAPI 3.1)."""
    return schemathesis.openapi.from_url(target.gw.url + OPENAPI_PATH)


def _credential(op: Operation, target: Target) -> dict[str, str]:
    """Real credentials by the operation's security: the admin token, the account's own key."""
    if "adminToken" in op.security:
        return auth(ADMIN_TOKEN)
    return auth(target.key) if "apiKey" in op.security else {}


# Schemathesis drives Hypothesis directly here (one pytest item per operation of the table):
# its pytest plugin's lazy `from_fixture` schemas do not run under pytest 9.2.
@pytest.mark.parametrize("op", [op for op in OPERATIONS if op.operation_id not in NOT_FUZZED],
                         ids=lambda op: op.operation_id)
def test_every_operation_answers_as_its_document_says(op: Operation, target: Target,
                                                      api_schema: Any) -> None:
    operation = api_schema.find_operation_by_id(op.operation_id)
    cases = st.one_of(operation.as_strategy(GenerationMode.POSITIVE),
                      operation.as_strategy(GenerationMode.NEGATIVE))
    # Random ids mostly meet the 404 branch; aim path parameters at real ids as well.
    known = {"userId": [target.account],
             "accountId": [target.account, target.other_account],
             "keyId": target.spare_key_ids}
    headers = _credential(op, target)

    @given(case=cases, data=st.data())
    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def fuzz(case: Any, data: st.DataObject) -> None:
        for name, ids in known.items():
            if case.path_parameters and name in case.path_parameters:
                case.path_parameters[name] = data.draw(
                    st.sampled_from([case.path_parameters[name], *ids]), label=name)
        # Schemathesis fills every security header with junk at once (the 401 branch); most
        # cases present the real credential alone instead, to reach the handlers' other answers.
        for name in [h for h in case.headers or {} if h.lower() in FRAMING_HEADERS]:
            del case.headers[name]
        real = headers and data.draw(st.sampled_from([True, True, True, False]),
                                     label="real credential")
        if real:
            for name in [h for h in case.headers or {} if h.lower() in CREDENTIAL_HEADERS]:
                del case.headers[name]
        case.call_and_validate(headers=headers if real else None, checks=CHECKS, timeout=10)

    fuzz()


# Web routes that are not part of the billing and admin API (ops endpoints, docs).
# ... and the dashboard's HTML pages and static files (gateway/dashboard: clients of the API).
NOT_API = {"/healthz", "/readyz", "/metrics", "/problems/{slug}", OPENAPI_PATH,
           *DASHBOARD_PAGES}


def _app_routes(gw: RunningGateway) -> set[tuple[str, str]]:
    """(method, path) of every Starlette route of the app outside NOT_API; anything that is not a
    plain Route (a Mount, say) shows up with method `*`, so it cannot slip past the comparison."""
    out = set()
    for route in gw.app.web.routes:
        path = getattr(route, "path", repr(route))
        if path in NOT_API:
            continue
        methods = (route.methods or set()) - {"HEAD"} if isinstance(route, Route) else {"*"}
        out |= {(method, path) for method in methods}
    return out


# (method, path) of routes whose handler lands before its entry in gateway.api.openapi.OPERATIONS;
# remove each when it is documented. Empty: every billing and admin route is documented.
NOT_DOCUMENTED_YET: set[tuple[str, str]] = set()


def test_the_document_lists_exactly_the_billing_and_admin_routes_of_the_app(target):
    documented = {(method.upper(), path)
                  for path, item in openapi_document()["paths"].items() for method in item}
    assert documented == {(op.method, op.path) for op in OPERATIONS}
    assert not documented & NOT_DOCUMENTED_YET, "documented now: drop it from NOT_DOCUMENTED_YET"
    assert _app_routes(target.gw) - NOT_DOCUMENTED_YET == documented


def test_the_document_is_public_and_cacheable(target):
    r = httpx.get(target.gw.url + OPENAPI_PATH)
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "public, max-age=300"
    doc = r.json()
    assert doc == openapi_document() and doc["openapi"].startswith("3.1.")
    schemes = doc["components"]["securitySchemes"]
    assert {"type": "apiKey", "in": "header", "name": "X-HMAC-Signature"}.items() <= \
        schemes["hmacSignature"].items()
    assert {"type": "http", "scheme": "bearer"}.items() <= schemes["adminToken"].items()
    webhook = doc["paths"]["/v1/billing/webhooks/stripe"]["post"]
    assert {"name": "Stripe-Signature", "in": "header", "required": True}.items() <= \
        webhook["parameters"][0].items()
    catalog = doc["paths"]["/v1/billing/catalog"]["get"]["responses"]
    assert "304" in catalog and catalog["400"]["content"].keys() == {"application/problem+json"}


def test_every_problem_status_of_an_operation_names_its_problem_types():
    for path, item in openapi_document()["paths"].items():
        for method, op in item.items():
            for status, response in op["responses"].items():
                if int(status) >= 400:
                    assert "application/problem+json" in response["content"], (method, path)
                    assert "`" in response["description"], (method, path, status)


def test_a_path_parameter_missing_from_the_table_is_refused():
    broken = replace(OPERATIONS[1], params=())
    with pytest.raises(ValueError, match="path parameters"):
        build_document((broken,))


# --- inputs that once were server errors ------------------------------------------------------
# Found by fuzzing this document; each is now refused as a 400 problem before it reaches Python's
# int() or the database.


@pytest.mark.parametrize("path", [
    # str.isdigit() is True for '²', which int() refuses
    pytest.param("/v1/billing/events/{account}?limit=%C2%B2", id="events-limit-superscript"),
    pytest.param("/v1/admin/accounts?limit=%C2%B2", id="admin-accounts-limit-superscript"),
    # int() refuses 4300+ digits; 10 digits are out of range anyway
    pytest.param("/v1/billing/events/{account}?limit=" + "1" * 4301, id="events-limit-4301-digits"),
    pytest.param("/v1/billing/events/{account}?limit=0000000050", id="events-limit-10-digits"),
    pytest.param("/v1/billing/events/{account}?cursor=le_%C2%B2", id="events-cursor-superscript"),
    # beyond int64: OverflowError on SQLite, DataError on PostgreSQL
    pytest.param("/v1/billing/events/{account}?cursor=le_" + "9" * 19,
                 id="events-cursor-19-digits"),
    pytest.param("/v1/billing/events/{account}?cursor=le_" + "9" * 20,
                 id="events-cursor-20-digits"),
])
def test_a_limit_or_cursor_of_anything_but_a_few_ascii_digits_is_a_400(path, target):
    url = target.gw.url + path.format(account=target.account)
    r = httpx.get(url, headers=auth(ADMIN_TOKEN if "/admin/" in path else target.key))
    doc = assert_problem(r, 400, "bad-request")
    assert doc["detail"].startswith(("limit", "cursor")), doc


def test_the_largest_cursor_and_limit_in_range_are_served(target):
    r = httpx.get(f"{target.gw.url}/v1/billing/events/{target.account}",
                  params={"limit": "200", "cursor": "le_" + "9" * 18}, headers=auth(target.key))
    assert r.status_code == 200, r.text
    assert r.json()["events"]


@pytest.mark.parametrize("where", ["query", "header"])
def test_a_last_event_id_of_non_ascii_digits_is_a_400(where, target):
    url = f"{target.gw.url}/v1/billing/stream/{target.account}"
    headers: dict[str, Any] = auth(target.key)
    if where == "header":
        headers["last-event-id"] = "²".encode("latin-1")
    else:
        url += "?lastEventId=%C2%B2"
    with httpx.stream("GET", url, headers=headers, timeout=5) as r:
        assert r.status_code == 400, r.status_code


def _stripe_signed(payload: bytes) -> dict[str, str]:
    """Headers of a webhook delivery signed the way Stripe signs (`t=…,v1=…`)."""
    ts = str(int(time.time()))
    sig = hmac.new(WEBHOOK_SECRET.encode(), ts.encode() + b"." + payload,
                   hashlib.sha256).hexdigest()
    return {"stripe-signature": f"t={ts},v1={sig}", "content-type": "application/json"}


def _recorded_stripe_events(gw: RunningGateway) -> list[str]:
    with sqlite3.connect(db_path(gw.ledger)) as conn:
        return [r[0] for r in conn.execute("SELECT event_id FROM stripe_events ORDER BY 1")]


@pytest.mark.parametrize("payload", [
    pytest.param(b'{"id": "evt_nodata", "type": "checkout.session.completed"}',
                 id="without-data"),
    pytest.param(b'{"id": "evt_noobject", "type": "checkout.session.completed", "data": {}}',
                 id="without-data-object"),
    pytest.param(b'{"id": "evt_listobject", "type": "invoice.paid", "data": {"object": [1]}}',
                 id="data-object-not-an-object"),
    pytest.param(b'{"type": "charge.refunded", "data": {"object": {"id": "ch_1"}}}',
                 id="without-id"),
    pytest.param(b'{"id": "evt_badcreated", "type": "invoice.paid", "created": "soon", '
                 b'"data": {"object": {"id": "in_1"}}}', id="created-not-a-number"),
    pytest.param(b"[1]", id="array"),
    pytest.param(b'"evt_1"', id="string"),
    pytest.param(b"null", id="null"),
])
def test_a_signed_body_that_is_not_a_stripe_event_is_a_400_and_records_nothing(payload, target):
    before = _recorded_stripe_events(target.gw)
    r = httpx.post(target.gw.url + "/v1/billing/webhooks/stripe", content=payload,
                   headers=_stripe_signed(payload))
    doc = assert_problem(r, 400, "bad-request")
    assert doc["detail"] == "The body is not a Stripe event."
    assert _recorded_stripe_events(target.gw) == before


def test_a_signed_event_of_a_type_not_handled_is_acknowledged_and_recorded(target):
    payload = (b'{"id": "evt_openapi_other", "object": "event", "type": "customer.created", '
               b'"created": 1700000000, "data": {"object": {"id": "cus_openapi"}}}')
    r = httpx.post(target.gw.url + "/v1/billing/webhooks/stripe", content=payload,
                   headers=_stripe_signed(payload))
    assert r.status_code == 200, r.text
    assert r.json() == {"received": True, "outcome": "ignored"}
    assert "evt_openapi_other" in _recorded_stripe_events(target.gw)


@pytest.fixture(scope="module")
def pg_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    """A gateway on a fresh PostgreSQL database (skips, or fails under CI, without one)."""
    name, url = create_database()
    gw = start_gateway(tmp_path_factory.mktemp("openapi-pg"),
                       {"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, "GATEWAY_HMAC_KEYS": HMAC_KEYS},
                       database_url=url)
    try:
        yield gw
    finally:
        gw.stop()
        drop_database(name)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def either_store(request: pytest.FixtureRequest) -> RunningGateway:
    """The SQLite-backed target, then the PostgreSQL-backed gateway: both answer alike."""
    if request.param == "sqlite":
        return request.getfixturevalue("target").gw
    return request.getfixturevalue("pg_gateway")


def _signed(method: str, path: str, body: bytes = b"") -> dict[str, str]:
    """An `X-HMAC-Signature` header of a product backend for this request."""
    return {"x-hmac-signature": header_for("k1", HMAC_SECRET, method, unquote(path), "", body,
                                           secrets.token_urlsafe(16))}


# PostgreSQL cannot store U+0000 in text (asyncpg's CharacterNotInRepertoireError was a 500;
# SQLite stores it): the gateway refuses it at the edge, in the URL and in JSON bodies.
@pytest.mark.parametrize(("method", "path"), [
    pytest.param("GET", "/v1/admin/accounts/a%00b", id="admin-account-id"),
    pytest.param("GET", "/v1/admin/accounts?cursor=a%00b", id="admin-list-cursor"),
    pytest.param("GET", "/v1/admin/accounts?plan=a%00b", id="admin-list-plan"),
    pytest.param("POST", "/v1/admin/accounts/a%00b/keys", id="admin-create-key"),
    pytest.param("DELETE", "/v1/admin/keys/a%00b", id="admin-revoke-key"),
    pytest.param("GET", "/v1/billing/balance/a%00b", id="signed-balance-user-id"),
    pytest.param("GET", "/v1/billing/auto-topup/a%00b", id="signed-auto-topup-user-id"),
    pytest.param("GET", "/v1/billing/balance/{account}?x=%00", id="signed-balance-query"),
])
def test_a_nul_in_the_path_or_query_is_a_400(method, path, either_store):
    path = path.format(account=either_store.ledger.account())
    headers = auth(ADMIN_TOKEN) if path.startswith("/v1/admin/") else _signed(method, path)
    r = httpx.request(method, either_store.url + path, headers=headers)
    doc = assert_problem(r, 400, "bad-request")
    assert "NUL" in doc["detail"]


NUL = "a\x00b"


@pytest.mark.parametrize(("path", "body"), [
    pytest.param("/v1/admin/accounts/{account}/grants",
                 {"seconds": 1, "reason": NUL, "idempotency_key": "nul-grant-1"},
                 id="admin-grant-reason"),
    pytest.param("/v1/admin/accounts/{account}/adjustments",
                 {"seconds": 1, "reason": NUL, "idempotency_key": "nul-adjust-1"},
                 id="admin-adjustment-reason"),
    pytest.param("/v1/admin/accounts", {"plan": NUL}, id="admin-new-account-plan"),
    pytest.param("/v1/billing/check-sufficient-batch",
                 {"userId": NUL, "operations": [{"operation": "chat"}]},
                 id="signed-batch-user-id"),
    pytest.param("/v1/billing/packages/purchase", {"userId": NUL, "package_key": "starter"},
                 id="signed-purchase-user-id"),
])
def test_a_nul_in_a_json_body_is_a_400_and_changes_nothing(path, body, either_store):
    account = either_store.ledger.account()
    path = path.format(account=account)
    raw = orjson.dumps(body)  # the NUL as JSON writes it: \u0000
    assert b"\\u0000" in raw
    headers = {"content-type": "application/json",
               **(auth(ADMIN_TOKEN) if path.startswith("/v1/admin/")
                  else _signed("POST", path, raw))}
    before = either_store.ledger.balance(account).version
    r = httpx.post(either_store.url + path, content=raw, headers=headers)
    doc = assert_problem(r, 400, "bad-request")
    assert "NUL" in doc["detail"]
    assert either_store.ledger.balance(account).version == before


def test_a_raw_nul_byte_in_a_json_body_is_a_400(either_store):
    path = f"/v1/admin/accounts/{either_store.ledger.account()}/grants"
    raw = b'{"seconds": 1, "reason": "a\x00b", "idempotency_key": "nul-grant-raw"}'
    r = httpx.post(either_store.url + path, content=raw,
                   headers={**auth(ADMIN_TOKEN), "content-type": "application/json"})
    assert "NUL" in assert_problem(r, 400, "bad-request")["detail"]


def test_an_escaped_backslash_before_u0000_is_an_ordinary_string(either_store):
    account = either_store.ledger.account()
    reason = "path C:\\u0000 is fine"  # a backslash, then the text u0000: no NUL
    r = httpx.post(f"{either_store.url}/v1/admin/accounts/{account}/grants",
                   json={"seconds": 1, "reason": reason, "idempotency_key": "escaped-nul-1"},
                   headers=auth(ADMIN_TOKEN))
    assert r.status_code == 201, r.text
