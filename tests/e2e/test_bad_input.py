"""Every error the gateway itself returns is a problem document that writes nothing (SPEC §6,
§7); failed upstream calls are not charged; bad policy files and bad CLI input get clear errors
(SPEC §5, §9)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.helpers import (
    assert_consistent,
    assert_nothing_written,
    assert_problem,
    auth,
    chat_body,
    encode,
    post,
    snapshot,
    wait_for_usage,
    wait_no_holds,
)
from tests.support import TEST_POLICY, start_gateway

CHAT = "/v1/chat/completions"
FUNDS = 100_000
GATEWAY_BIN = Path(sys.executable).with_name("gateway")


@pytest.fixture(scope="module")
def shared_gateway(tmp_path_factory, upstream):
    """One gateway for this module's many small checks (each test uses its own account)."""
    env = {"OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-upstream-openai",
           "ANTHROPIC_BASE_URL": upstream.url, "ANTHROPIC_API_KEY": "sk-upstream-anthropic"}
    gw = start_gateway(tmp_path_factory.mktemp("bad-input"), env)
    try:
        yield gw
    finally:
        gw.stop()


@pytest.fixture
def gateway(shared_gateway, upstream):
    """Overrides the per-test gateway of conftest with the module's shared one."""
    upstream.clear()
    upstream.delay_ms = 0
    return shared_gateway


# ---- the gateway's own errors --------------------------------------------------------------


def test_unknown_key_gets_401_problem(gateway, upstream):
    account, _ = gateway.ledger.funded(FUNDS)
    before = snapshot(gateway, upstream, account)
    for headers in ({"authorization": "Bearer sk-not-a-real-key"},
                    {"x-api-key": "sk-not-a-real-key"}):
        resp = post(gateway, CHAT, None, chat_body(), headers)
        assert_problem(resp, 401, "unauthorized")
    assert_nothing_written(gateway, upstream, account, before)


def test_missing_key_gets_401_problem(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    before = snapshot(gateway, upstream, account)
    for headers in ({}, {"authorization": "Basic " + key}, {"authorization": "Bearer"},
                    {"x-api-key": ""}):
        resp = post(gateway, CHAT, None, chat_body(), headers)
        assert_problem(resp, 401, "unauthorized")
    assert_nothing_written(gateway, upstream, account, before)


def test_openai_sdk_with_unknown_key_raises_authentication_error(gateway, upstream):
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="sk-wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError) as info:
            c.chat.completions.create(**chat_body())
    assert info.value.status_code == 401
    assert info.value.response.headers["content-type"] == "application/problem+json"
    assert upstream.requests.snapshot() == []


@pytest.mark.parametrize("content, slug", [
    (b'{"model": "gpt-fake", "messages": [', "malformed-json"),
    (b"not json at all", "malformed-json"),
    (b"", "malformed-json"),
    (b'[{"model": "gpt-fake"}]', "malformed-json"),
    (b'"just a string"', "malformed-json"),
], ids=["truncated", "text", "empty", "array", "string"])
def test_bad_json_body_gets_400_problem(gateway, upstream, content, slug):
    account, key = gateway.ledger.funded(FUNDS)
    before = snapshot(gateway, upstream, account)
    resp = post(gateway, CHAT, key, content)
    doc = assert_problem(resp, 400, slug)
    assert doc["instance"].startswith("urn:op:req_")
    assert_nothing_written(gateway, upstream, account, before)


def test_unknown_route_gets_404_problem(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    before = snapshot(gateway, upstream, account)
    resp = post(gateway, "/v1/not-a-route", key, chat_body())
    assert_problem(resp, 404, "not-found")
    with httpx.Client(base_url=gateway.url) as client:
        assert_problem(client.get("/nothing/here", headers=auth(key)), 404, "not-found")
    assert_nothing_written(gateway, upstream, account, before)


def test_get_on_a_post_route_gets_405_problem(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    before = snapshot(gateway, upstream, account)
    with httpx.Client(base_url=gateway.url) as client:
        for method in ("GET", "PUT", "DELETE"):
            resp = client.request(method, CHAT, headers=auth(key))
            assert_problem(resp, 405, "method-not-allowed")
    assert_nothing_written(gateway, upstream, account, before)


def test_oversized_body_gets_413_problem(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    before = snapshot(gateway, upstream, account)
    raw = encode(chat_body("x" * 70_000))
    assert len(raw) > 65_536
    assert_problem(post(gateway, CHAT, key, raw), 413, "payload-too-large")

    def chunked():  # no Content-Length: the limit is enforced while reading
        for i in range(0, len(raw), 8192):
            yield raw[i:i + 8192]

    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        resp = client.post(CHAT, content=chunked(),
                           headers={**auth(key), "content-type": "application/json"})
    assert_problem(resp, 413, "payload-too-large")
    assert_nothing_written(gateway, upstream, account, before)
    # just under the limit is fine
    ok = encode(chat_body("y" * 60_000))
    assert len(ok) <= 65_536
    assert post(gateway, CHAT, key, ok).status_code == 200


@pytest.mark.parametrize("path, body", [
    (CHAT, chat_body(model="gpt-4o")),
    (CHAT, {"messages": [{"role": "user", "content": "no model"}]}),
    (CHAT, chat_body(model=42)),
    ("/v1/messages", {"model": "claude-other", "max_tokens": 5,
                      "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/embeddings", {"model": "embed-fake-large", "input": "x"}),
], ids=["unpriced", "missing", "not-a-string", "anthropic", "embeddings"])
def test_unpriced_model_gets_400_never_free(gateway, upstream, path, body):
    account, key = gateway.ledger.funded(FUNDS)
    before = snapshot(gateway, upstream, account)
    resp = post(gateway, path, key, body)
    assert_problem(resp, 400, "unpriced-model")
    assert_nothing_written(gateway, upstream, account, before)


@pytest.mark.parametrize("path, field, value", [
    (CHAT, "max_tokens", 1.5),
    (CHAT, "max_completion_tokens", "200"),
    (CHAT, "max_tokens", True),
    (CHAT, "max_tokens", -5),
    (CHAT, "max_tokens", 0),
    (CHAT, "max_output_tokens", 1e30),
    (CHAT, "max_completion_tokens", 2**31),
    ("/v1/responses", "max_output_tokens", 2.0),
    ("/v1/messages", "max_tokens", "lots"),
], ids=["float", "string", "bool", "negative", "zero", "1e30", "2^31", "responses-float",
        "anthropic-string"])
def test_an_output_limit_that_is_not_a_sane_integer_gets_400_naming_the_field(
        gateway, upstream, path, field, value):
    account, key = gateway.ledger.funded(FUNDS)
    before = snapshot(gateway, upstream, account)
    model = "claude-fake" if path == "/v1/messages" else "gpt-fake"
    body = {**chat_body(model=model, max_tokens=None), field: value}
    doc = assert_problem(post(gateway, path, key, body), 400, "bad-request")
    assert doc["detail"].startswith(f"{field} must be an integer from 1 to 2147483647"), doc
    assert_nothing_written(gateway, upstream, account, before)


def test_the_hold_reads_the_largest_output_limit_the_upstream_may_honour(gateway, upstream):
    # The fake (like some OpenAI-compatible servers) honours max_output_tokens on chat: the hold
    # must cover its 200 tokens, not the 1 of max_tokens.
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("clamp me not", max_tokens=1, max_output_tokens=200)
    raw = encode(body)
    resp = post(gateway, CHAT, key, raw)
    assert resp.status_code == 200, resp.text
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["output_tokens"] == 200
    assert record["estimated"] == len(raw) // 4 + 2 * 200
    assert record["estimated"] >= record["charged"]
    assert record["unbilled"] == 0
    assert_consistent(gateway.ledger, account)


# ---- upstream failures ---------------------------------------------------------------------


def test_upstream_500_is_relayed_and_not_charged(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    resp = post(gateway, CHAT, key, chat_body(model="gpt-fake-fail500"))
    assert resp.status_code == 500
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["error"]["type"] == "server_error"  # the upstream's own body
    assert resp.headers["x-gateway-charged-ms"] == "0"
    assert int(resp.headers["x-gateway-remaining-ms"]) == FUNDS
    [record] = gateway.ledger.usage(account)
    assert record["outcome"] == "upstream_error"
    assert record["upstream_status"] == 500
    assert record["charged"] == 0
    assert gateway.ledger.balance(account).available == FUNDS
    assert_consistent(gateway.ledger, account)


def test_upstream_429_through_the_sdk_is_relayed_and_not_charged(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0) as client:
        with pytest.raises(openai.RateLimitError) as info:
            client.chat.completions.create(**chat_body(model="gpt-fake-fail429"))
    assert info.value.response.headers["x-gateway-charged-ms"] == "0"
    assert gateway.ledger.balance(account).available == FUNDS
    assert gateway.ledger.usage(account)[0]["upstream_status"] == 429
    assert_consistent(gateway.ledger, account)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_upstream_reset_gets_502_problem_not_charged_hold_released(gateway, upstream, stream):
    account, key = gateway.ledger.funded(FUNDS)
    resp = post(gateway, CHAT, key, chat_body(model="gpt-fake-reset", stream=stream))
    doc = assert_problem(resp, 502, "upstream-unavailable")
    assert doc["instance"] == "urn:op:" + resp.headers["x-request-id"]
    assert wait_no_holds(gateway.ledger, account)["holds"] == 0
    assert gateway.ledger.balance(account).available == FUNDS
    records = gateway.ledger.usage(account)
    assert [r["charged"] for r in records] == [0]
    assert records[0]["outcome"] == "upstream_connection"
    assert_consistent(gateway.ledger, account)


def test_upstream_breaking_a_json_response_gets_502_not_charged(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    resp = post(gateway, CHAT, key, chat_body(model="gpt-fake-midreset"))
    assert_problem(resp, 502, "upstream-unavailable")
    assert gateway.ledger.balance(account).available == FUNDS
    [record] = gateway.ledger.usage(account)
    assert record["charged"] == 0
    assert_consistent(gateway.ledger, account)


def test_upstream_hang_gets_504_problem_after_the_read_timeout(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    start = time.monotonic()
    resp = post(gateway, CHAT, key, chat_body(model="gpt-fake-hang"), timeout=8)
    elapsed = time.monotonic() - start
    assert_problem(resp, 504, "upstream-timeout")
    assert 2.5 <= elapsed < 6  # the test policy's 3 s read timeout
    assert gateway.ledger.balance(account).available == FUNDS
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["charged"] == 0
    assert record["outcome"] == "upstream_timeout"
    assert_consistent(gateway.ledger, account)


def _leave_while_upstream_hangs(gateway, upstream, key: str, path: str = CHAT) -> float:
    """Send a non-streamed request for a hanging model on a raw socket, wait until the upstream
    has it, then close the connection. Returns when it was closed (monotonic s)."""
    raw = encode(chat_body("never answered", model="gpt-fake-hang"))
    host, port = gateway.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(raw)}\r\n\r\n".encode() + raw)
        upstream.wait_for_requests(1, timeout_s=5)  # admitted, held, sent upstream
    return time.monotonic()


def test_a_client_leaving_a_non_streamed_call_cancels_the_upstream_and_releases_the_hold(
        gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    left = _leave_while_upstream_hangs(gateway, upstream, key)
    # the gateway dropped its upstream request: the fake saw its client go away …
    [gone] = upstream.disconnects.wait_for(1, timeout_s=2.5)
    assert gone["model"] == "gpt-fake-hang"
    # … and settled by the failure rule (nothing, by default) with the client's outcome
    [record] = wait_for_usage(gateway.ledger, account, timeout_s=2.5)
    assert record["outcome"] == "client_disconnected"  # not upstream_timeout: no 3 s wait
    assert record["upstream_status"] is None
    assert record["streamed"] is False
    assert record["charged"] == 0
    assert wait_no_holds(gateway.ledger, account, timeout_s=2.5)["holds"] == 0
    assert time.monotonic() - left < 2.5  # well inside the policy's 3 s read timeout
    assert gateway.ledger.balance(account).available == FUNDS
    assert_consistent(gateway.ledger, account)


def test_a_client_leaving_is_charged_by_the_routes_upstream_error_rule(tmp_path, upstream_env,
                                                                       upstream):
    extra = tmp_path / "timed.yaml"
    extra.write_text(
        "routes:\n"
        "  - operation: timed\n"
        "    path: /v1/timed\n"
        "    upstream: openai\n"
        "    upstream_path: /v1/chat/completions\n"
        "    meter: { type: duration, units_per_second: 1000 }\n"
        "    estimate: { type: fixed, units: 5000 }\n"
        "    upstream_errors: { charge: duration_after, after_ms: 0 }\n")
    gw = start_gateway(tmp_path, upstream_env, [TEST_POLICY, extra])
    try:
        account, key = gw.ledger.funded(FUNDS)
        _leave_while_upstream_hangs(gw, upstream, key, "/v1/timed")
        upstream.disconnects.wait_for(1, timeout_s=2.5)
        [record] = wait_for_usage(gw.ledger, account, timeout_s=2.5)
        assert record["outcome"] == "client_disconnected"
        assert 0 < record["charged"] == record["duration_ms"] < 3000
        assert wait_no_holds(gw.ledger, account)["holds"] == 0
        assert gw.ledger.balance(account).available == FUNDS - record["charged"]
        assert_consistent(gw.ledger, account)
    finally:
        gw.stop()


def test_unreachable_upstream_gets_502_problem(tmp_path, upstream_env):
    env = {**upstream_env, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}  # discard port: refused
    gw = start_gateway(tmp_path, env)
    try:
        account, key = gw.ledger.funded(FUNDS)
        resp = post(gw, CHAT, key, chat_body())
        assert_problem(resp, 502, "upstream-unavailable")
        assert gw.ledger.balance(account).available == FUNDS
        assert_consistent(gw.ledger, account)
    finally:
        gw.stop()


# ---- policy files and the CLI --------------------------------------------------------------


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    command = [str(GATEWAY_BIN)] if GATEWAY_BIN.exists() else [sys.executable, "-m",
                                                                "gateway.cli"]
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30,
                          env=full_env, cwd=Path(__file__).parents[2])


def test_policies_check_accepts_the_test_policy():
    result = run_cli("policies", "check", str(TEST_POLICY))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_policies_check_on_broken_yaml_names_file_and_line(tmp_path):
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nplans:\n  free: { daily_bonus_minutes: 15\n  payg: {}\n")
    result = run_cli("policies", "check", str(broken))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"{broken}:" in result.stderr
    line = next(ln for ln in result.stderr.splitlines() if str(broken) in ln)
    assert line.strip().split(":")[1].isdigit(), line  # file:LINE: …


def test_policies_check_on_invalid_field_names_file_line_and_field(tmp_path):
    lines = TEST_POLICY.read_text().splitlines()
    target = next(i for i, ln in enumerate(lines) if "max_body_bytes: 65536" in ln)
    lines[target] = lines[target].replace("65536", "lots")
    bad = tmp_path / "bad-field.yaml"
    bad.write_text("\n".join(lines) + "\n")
    result = run_cli("policies", "check", str(bad))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert f"{bad}:{target + 1}: " in result.stderr, result.stderr
    assert "max_body_bytes" in result.stderr


def test_cli_grant_to_unknown_account_fails_clearly(tmp_path):
    env = {"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
           "GATEWAY_POLICY_PATH": str(TEST_POLICY)}
    result = run_cli("grant", "acct_nope", "--minutes", "5", env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "acct_nope" in result.stderr
    assert "no account" in result.stderr.lower()
    assert result.stdout == ""


def test_cli_grant_rejects_a_non_positive_amount(tmp_path):
    env = {"GATEWAY_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
           "GATEWAY_POLICY_PATH": str(TEST_POLICY)}
    result = run_cli("grant", "acct_nope", "--seconds", "0", env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "positive" in result.stderr
