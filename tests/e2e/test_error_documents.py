"""Every answer of the gateway to a failure is a problem document, never plain text: a dead
pooled PostgreSQL connection is a 503 `store-unavailable` (and the next request works), Stripe
answering with a Checkout Session id already recorded is not a server error, and any unexpected
exception — in the billing API or on a proxied call — is a 500 `internal-error` carrying the
request id it was logged with, and nothing of the exception itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from gateway.auth import KeyCache
from gateway.proxy.upstream import UpstreamResponse
from storage.ports import StoreUnavailable
from tests.e2e.helpers import REQUEST_ID_RE, assert_problem, auth, chat_body, encode
from tests.e2e.stripe_support import _mock_checkout
from tests.production._support import PG_ADMIN_URL, create_database, drop_database
from tests.support import RunningGateway, start_gateway

SECRET = "a secret detail of the failure"


def assert_internal_error(resp: httpx.Response) -> dict[str, Any]:
    """A 500 `internal-error` problem naming the request id it was logged with."""
    doc = assert_problem(resp, 500, "internal-error")
    assert REQUEST_ID_RE.match(doc["request_id"]), doc
    assert resp.headers["x-request-id"] == doc["request_id"]
    assert doc["request_id"] in doc["detail"]
    assert SECRET not in resp.text and "Traceback" not in resp.text
    return doc


# ---- a dead pooled PostgreSQL connection ----------------------------------------------------


@pytest.fixture
def pg_gateway(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[tuple[RunningGateway,
                                                                               str]]:
    """A gateway on a fresh PostgreSQL database (its maintenance loop idle), and the name of
    that database."""
    name, url = create_database()
    gw = start_gateway(tmp_path, {**upstream_env, "GATEWAY_MAINTENANCE_S": "3600"},
                       database_url=url)
    try:
        yield gw, name
    finally:
        gw.stop()
        drop_database(name)


async def _terminate_backends(database: str) -> int:
    """pg_terminate_backend every connection to `database`, waiting until each is gone."""
    import asyncpg

    admin = make_url(PG_ADMIN_URL).set(drivername="postgresql")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False))
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid, 5000)) "
            "FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", database))
    finally:
        await conn.close()


@pytest.mark.postgres
def test_a_dead_pooled_connection_is_a_503_problem_and_the_next_request_works(pg_gateway):
    gw, database = pg_gateway
    account, key = gw.ledger.funded(60_000)
    balance = f"{gw.url}/v1/billing/balance/{account}"
    assert httpx.get(balance, headers=auth(key)).status_code == 200  # connections now pooled
    assert asyncio.run(_terminate_backends(database)) >= 1

    dead = httpx.get(balance, headers=auth(key))
    # One pool serves both the request path and Core (storage/sql/engine.py): the request path
    # drops pooled connections asyncpg already knows are closed before using one, so the call
    # after the outage may be answered at once; a dead connection met mid-call is a 503 problem.
    if dead.status_code != 200:
        assert_problem(dead, 503, "store-unavailable")
    again = httpx.get(balance, headers=auth(key))
    assert again.status_code == 200, again.text
    assert again.json()["totals"]["total_seconds"] == 60


# ---- Stripe answering with a session id already recorded ------------------------------------


def test_a_checkout_session_id_returned_twice_is_never_a_server_error(shop):
    gw, router = shop
    _account, key = gw.ledger.funded(0)
    _mock_checkout(router, "cs_test_same")  # Stripe answers every create with this session
    buy = {"package_key": "mini", "currency": "USD"}
    first = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key), json=buy)
    again = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key), json=buy)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json() == first.json()  # the same purchase, recorded once

    _other, other_key = gw.ledger.funded(0)
    r = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(other_key), json=buy)
    doc = assert_problem(r, 502, "payment-provider-error")
    assert "another purchase" in doc["detail"]


# ---- unexpected exceptions -----------------------------------------------------------------


def _raise(exc: BaseException) -> Any:
    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise exc

    return boom


def test_an_unexpected_error_in_the_billing_api_is_a_500_problem_with_the_request_id(
    gateway, monkeypatch
):
    monkeypatch.setattr("gateway.api.billing.catalog_document", _raise(RuntimeError(SECRET)))
    assert_internal_error(httpx.get(gateway.url + "/v1/billing/catalog"))


def test_a_store_failure_no_handler_translated_is_a_503_problem(gateway, monkeypatch):
    monkeypatch.setattr("gateway.api.billing.catalog_document",
                        _raise(StoreUnavailable(SECRET)))
    r = httpx.get(gateway.url + "/v1/billing/catalog")
    assert_problem(r, 503, "store-unavailable")
    assert SECRET not in r.text


def test_an_unexpected_error_on_a_proxied_call_is_a_500_problem_with_the_request_id(
    gateway, monkeypatch
):
    _account, key = gateway.ledger.funded(60_000)

    async def boom(*_args: Any) -> Any:
        raise RuntimeError(SECRET)

    monkeypatch.setattr(KeyCache, "resolve", boom)
    r = httpx.post(gateway.url + "/v1/chat/completions", content=encode(chat_body()),
                   headers={**auth(key), "content-type": "application/json"})
    doc = assert_internal_error(r)
    assert doc["instance"] == f"urn:op:{doc['request_id']}"
    assert r.headers["x-gateway-operation"]


def test_an_unexpected_error_after_a_stream_started_ends_the_connection_not_a_second_answer(
    gateway, monkeypatch
):
    account, key = gateway.ledger.funded(600_000)

    async def broken_chunks(self: UpstreamResponse) -> Any:
        yield b'data: {"choices": []}\n\n'
        raise RuntimeError(SECRET)

    monkeypatch.setattr(UpstreamResponse, "iter_chunks", broken_chunks)
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        with client.stream("POST", "/v1/chat/completions",
                           content=encode(chat_body(stream=True)),
                           headers={**auth(key), "content-type": "application/json"}) as r:
            assert r.status_code == 200  # the answer had started: no problem document now
            with pytest.raises(httpx.RemoteProtocolError):
                r.read()  # the connection is dropped: the client sees an incomplete body
    assert gateway.ledger.totals(account)["holds"] == 0  # settled for what was delivered
    monkeypatch.undo()
    ok = httpx.post(gateway.url + "/v1/chat/completions", content=encode(chat_body()),
                    headers={**auth(key), "content-type": "application/json"})
    assert ok.status_code == 200


def test_an_unexpected_error_after_admission_releases_the_hold_and_records_the_call(
    gateway, monkeypatch
):
    account, key = gateway.ledger.funded(600_000)

    def boom(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError(SECRET)

    # after the hold, before upstream:
    monkeypatch.setattr("gateway.proxy.pipeline.upstream_headers", boom)
    r = httpx.post(gateway.url + "/v1/chat/completions", content=encode(chat_body()),
                   headers={**auth(key), "content-type": "application/json"})
    doc = assert_internal_error(r)
    totals = gateway.ledger.totals(account)
    assert totals["holds"] == 0  # released at once, not leased until the route's hold TTL
    [record] = gateway.ledger.usage(account)
    assert record["id"] == doc["request_id"]
    assert record["outcome"] == "gateway_error"
    assert gateway.ledger.balance(account).available == 600_000  # charged nothing


def _metric(gw: RunningGateway, name: str, **labels: str) -> float:
    text = httpx.get(gw.url + "/metrics").text
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in text.splitlines():
        if line.startswith(f"{name}{{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    assert want, "labels required"
    return 0.0


def test_a_client_leaving_mid_upload_sends_nothing_upstream_and_charges_nothing(
    gateway, upstream
):
    import socket
    import time

    account, key = gateway.ledger.funded(600_000)
    body = encode(chat_body())  # a complete JSON document, but fewer bytes than declared
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\n"
                     b"authorization: Bearer " + key.encode() + b"\r\n"
                     b"content-type: application/json\r\n"
                     b"content-length: " + str(len(body) + 1000).encode() + b"\r\n\r\n" + body)
    deadline = time.monotonic() + 10
    while _metric(gateway, "gateway_requests_total", operation="chat", status="499") < 1:
        assert time.monotonic() < deadline, "the gateway never noticed the client leaving"
        time.sleep(0.02)
    assert upstream.requests.snapshot() == []  # a truncated body is never forwarded
    assert gateway.ledger.usage(account) == []
    assert gateway.ledger.totals(account)["holds"] == 0
