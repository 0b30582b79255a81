"""Rate limits (IETF RateLimit headers, 429 problem with Retry-After) and the ops endpoints."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.helpers import auth, chat_body, encode
from tests.support import TEST_POLICY, RunningGateway, start_gateway


def _policy_with_limits(tmp_path: Path) -> Path:
    doc = yaml.safe_load(TEST_POLICY.read_text())
    for route in doc["routes"]:
        if route["operation"] == "chat":
            route["rate_limits"] = {"per_key": {"requests_per_minute": 3},
                                    "per_account": {"tokens_per_minute": 100_000}}
    path = tmp_path / "limited.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def limited(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[RunningGateway]:
    gw = start_gateway(tmp_path, upstream_env, [_policy_with_limits(tmp_path)])
    try:
        yield gw
    finally:
        gw.stop()


def test_requests_beyond_the_per_key_limit_get_a_429_problem(limited):
    raw = encode(chat_body())
    # The gateway counts in fixed windows of epoch minutes (gateway.rate_limits). Four calls
    # that straddle a minute boundary land in two windows, so an attempt counts only when the
    # minute was the same before the first call and after the last one; a straddling attempt
    # is repeated with a fresh account and key (at most once more: four calls take far less
    # than a minute).
    for _attempt in range(3):
        account, key = limited.ledger.funded(100_000)
        minute = int(time.time() // 60)
        with httpx.Client(base_url=limited.url, timeout=10) as client:
            ok = [client.post("/v1/chat/completions", content=raw,
                              headers={**auth(key), "content-type": "application/json"})
                  for _ in range(3)]
            over = client.post("/v1/chat/completions", content=raw,
                               headers={**auth(key), "content-type": "application/json"})
        if int(time.time() // 60) == minute:
            break
    assert [r.status_code for r in ok] == [200, 200, 200]
    assert ok[0].headers["ratelimit-policy"].startswith('"key-requests";q=3;w=60')
    assert '"key-requests";r=2;' in ok[0].headers["ratelimit"]
    assert '"key-requests";r=0;' in ok[2].headers["ratelimit"]
    assert over.status_code == 429
    assert over.headers["content-type"] == "application/problem+json"
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert over.json()["type"].endswith("/problems/rate-limited")
    assert len(limited.ledger.usage(account)) == 3  # the refused call wrote nothing


def test_another_key_of_the_same_account_has_its_own_request_budget(limited):
    account, key = limited.ledger.funded(100_000)
    other = limited.ledger.key(account)
    raw = encode(chat_body())
    headers = {"content-type": "application/json"}
    with httpx.Client(base_url=limited.url, timeout=10) as client:
        for _ in range(3):
            assert client.post("/v1/chat/completions", content=raw,
                               headers={**auth(key), **headers}).status_code == 200
        assert client.post("/v1/chat/completions", content=raw,
                           headers={**auth(other), **headers}).status_code == 200


def test_healthz_readyz_and_metrics(gateway):
    _account, key = gateway.ledger.funded(100_000)
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["checks"]["database"] == "ok"
        client.post("/v1/chat/completions", content=encode(chat_body()),
                    headers={**auth(key), "content-type": "application/json"})
        client.post("/v1/chat/completions", content=encode(chat_body(max_tokens=10**9)),
                    headers={**auth(key), "content-type": "application/json"})
        text = client.get("/metrics").text
    assert 'gateway_requests_total{operation="chat",status="200"} 1.0' in text
    assert 'gateway_payment_required_total{operation="chat"} 1.0' in text
    assert 'gateway_charged_units_total{operation="chat"}' in text
    assert "gateway_upstream_seconds_bucket" in text
    assert "gateway_active_holds 0.0" in text


def test_an_invalid_policy_edit_keeps_the_last_good_policy(tmp_path, upstream_env):
    import time

    path = tmp_path / "live.yaml"
    path.write_text(TEST_POLICY.read_text())
    gw = start_gateway(tmp_path, upstream_env, [path])
    try:
        _account, key = gw.ledger.funded(100_000)
        path.write_text(TEST_POLICY.read_text().replace("upstream: openai", "upstream: nowhere"))
        deadline = time.monotonic() + 10
        with httpx.Client(base_url=gw.url, timeout=10) as client:
            while time.monotonic() < deadline:
                ready = client.get("/readyz").json()
                if "reload failed" in ready["checks"]["policy"]:
                    break
                time.sleep(0.2)
            assert "unknown upstream 'nowhere'" in ready["checks"]["policy"]
            r = client.post("/v1/chat/completions", content=encode(chat_body()),
                            headers={**auth(key), "content-type": "application/json"})
            assert r.status_code == 200  # still served by the last good policy
    finally:
        gw.stop()


def test_problem_type_urls_dereference_to_their_documentation(gateway):
    _account, key = gateway.ledger.funded(0)
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        problem = client.post("/v1/chat/completions", content=encode(chat_body()),
                              headers={**auth(key), "content-type": "application/json"}).json()
        doc = httpx.get(problem["type"]).json()
        assert doc["type"] == problem["type"] and doc["status"] == 402
        assert "X-Resume-Token" in doc["description"]
        assert client.get("/problems/no-such-problem").status_code == 404
