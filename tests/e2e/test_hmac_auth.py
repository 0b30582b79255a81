"""Server-to-server HMAC signatures on the billing API: any account, replay and skew refused."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.hmac_auth import header_for
from tests.support import RunningGateway, start_gateway

SECRET = "s" * 40
OLD_SECRET = "o" * 40


@pytest.fixture
def signed_gw(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[RunningGateway]:
    gw = start_gateway(tmp_path, {**upstream_env,
                                  "GATEWAY_HMAC_KEYS": f"k2:{SECRET},k1:{OLD_SECRET}"})
    try:
        yield gw
    finally:
        gw.stop()


def _get(gw: RunningGateway, path: str, query: str = "", *, key_id: str = "k2",
         secret: str = SECRET, nonce: str | None = None, ts: int | None = None) -> httpx.Response:
    nonce = nonce or secrets.token_urlsafe(16)
    header = header_for(key_id, secret, "GET", path, query, b"", nonce, ts)
    return httpx.get(gw.url + path + ("?" + query if query else ""),
                     headers={"x-hmac-signature": header})


def test_a_signed_backend_reads_any_accounts_balance_and_events(signed_gw):
    account, _ = signed_gw.ledger.funded(42_000)
    r = _get(signed_gw, f"/v1/billing/balance/{account}")
    assert r.status_code == 200, r.text
    assert r.json()["totals"]["total_seconds"] == 42
    r = _get(signed_gw, f"/v1/billing/events/{account}", "limit=5")
    assert r.status_code == 200 and r.json()["events"][0]["amount_ms"] == 42_000
    assert _get(signed_gw, "/v1/billing/balance/acct_missing").status_code == 404


def test_the_previous_key_keeps_working_during_rotation(signed_gw):
    account, _ = signed_gw.ledger.funded(1_000)
    assert _get(signed_gw, f"/v1/billing/balance/{account}", key_id="k1",
                secret=OLD_SECRET).status_code == 200


def test_a_reused_nonce_is_rejected(signed_gw):
    account, _ = signed_gw.ledger.funded(1_000)
    nonce = secrets.token_urlsafe(16)
    assert _get(signed_gw, f"/v1/billing/balance/{account}", nonce=nonce).status_code == 200
    replay = _get(signed_gw, f"/v1/billing/balance/{account}", nonce=nonce)
    assert replay.status_code == 401 and "nonce" in replay.json()["detail"]


def test_clock_skew_beyond_five_minutes_is_rejected(signed_gw):
    # far from the ±300 s boundary on purpose: the wall clock moves between signing and checking
    # (the exact boundary is tested on `verify` with an injected clock: unit/test_hmac_window.py)
    account, _ = signed_gw.ledger.funded(1_000)
    for skew in (-3600, 3600):
        r = _get(signed_gw, f"/v1/billing/balance/{account}", ts=int(time.time()) + skew)
        assert r.status_code == 401 and "±300 s" in r.json()["detail"]
    assert _get(signed_gw, f"/v1/billing/balance/{account}",
                ts=int(time.time()) - 60).status_code == 200


def test_tampering_or_a_wrong_secret_is_rejected(signed_gw):
    account, _ = signed_gw.ledger.funded(1_000)
    nonce = secrets.token_urlsafe(16)
    header = header_for("k2", SECRET, "GET", f"/v1/billing/events/{account}", "limit=5", b"",
                        nonce)
    tampered = httpx.get(f"{signed_gw.url}/v1/billing/events/{account}?limit=50",
                         headers={"x-hmac-signature": header})
    assert tampered.status_code == 401 and "Bad HMAC signature" in tampered.json()["detail"]
    assert _get(signed_gw, f"/v1/billing/balance/{account}", secret="x" * 40).status_code == 401
    assert _get(signed_gw, f"/v1/billing/balance/{account}", key_id="k9").status_code == 401
    r = httpx.get(f"{signed_gw.url}/v1/billing/balance/{account}",
                  headers={"x-hmac-signature": "garbage"})
    assert r.status_code == 401 and r.headers["content-type"] == "application/problem+json"


def test_a_signed_batch_preflight_names_the_account_in_the_body(signed_gw):
    import json

    account, _ = signed_gw.ledger.funded(10_000)
    body = json.dumps({"userId": account, "operations": [
        {"operation": "x", "estimate_seconds": 4}]}).encode()
    path = "/v1/billing/check-sufficient-batch"
    header = header_for("k2", SECRET, "POST", path, "", body, secrets.token_urlsafe(16))
    r = httpx.post(signed_gw.url + path, content=body,
                   headers={"x-hmac-signature": header, "content-type": "application/json"})
    assert r.status_code == 200
    [result] = r.json()
    assert result["ok"] is True and result["balance_seconds"] == 10
