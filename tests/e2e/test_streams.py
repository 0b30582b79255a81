"""SPEC §6 for SSE: streams are relayed unbuffered and settled when they end — also when the
client leaves, the upstream breaks off, or usage never arrives."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.e2e.helpers import (
    assert_consistent,
    auth,
    chat_body,
    encode,
    estimate_for,
    gateway_comment,
    ledger_entries,
    price,
    sse_data,
    wait_for_usage,
    wait_no_holds,
)
from tests.fakes.upstream import prompt_tokens_for

FUNDS = 100_000
CHAT = "/v1/chat/completions"


def test_client_disconnect_mid_stream_is_charged_for_what_it_consumed(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("tell me a long story", max_tokens=100, model="gpt-fake-slow", stream=True)
    raw = encode(body)
    full_price = price(body, 100)
    read = 0
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        with client.stream("POST", CHAT, content=raw,
                           headers={**auth(key), "content-type": "application/json"}) as resp:
            assert resp.status_code == 200
            assert int(resp.headers["x-gateway-hold-ms"]) == estimate_for(raw, 100)
            for line in resp.iter_lines():
                if line.startswith("data:") and '" tok"' in line:
                    read += 1
                    if read == 5:
                        break
        # leaving the block closes the unfinished response: the connection is dropped
    assert read == 5
    [record] = wait_for_usage(gateway.ledger, account, timeout_s=3)
    assert record["outcome"] == "client_disconnected"
    assert record["usage_source"] == "partial"
    assert record["streamed"]
    assert read <= record["output_tokens"] < 100
    assert 0 < record["charged"] < full_price
    assert record["charged"] == record["input_tokens"] + 2 * record["output_tokens"]
    totals = wait_no_holds(gateway.ledger, account)
    assert totals["holds"] == 0
    assert gateway.ledger.balance(account).available == FUNDS - record["charged"]
    assert_consistent(gateway.ledger, account)
    # the gateway stopped reading the upstream too: it was asked once and nothing else came in
    assert len(upstream.requests.snapshot()) == 1


def test_upstream_dropping_mid_stream_charges_only_the_partial_content(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("half a story", max_tokens=100, model="gpt-fake-midreset", stream=True)
    raw = encode(body)
    with httpx.Client(base_url=gateway.url, timeout=10) as client, client.stream(
            "POST", CHAT, content=raw,
            headers={**auth(key), "content-type": "application/json"}) as resp:
        assert resp.status_code == 200
        lines = list(resp.iter_lines())
    words = sum(1 for p in sse_data(lines) if p["choices"] and
                p["choices"][0]["delta"].get("content") == " tok")
    assert words == 50  # the fake sends half of the content chunks, then closes
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["outcome"] == "upstream_broken"
    assert record["usage_source"] == "partial"
    assert words <= record["output_tokens"] < 100
    assert 0 < record["charged"] < price(body, 100)
    assert record["charged"] == record["input_tokens"] + 2 * record["output_tokens"]
    # the client was told the charge in the closing comment
    comment = gateway_comment(lines)
    assert comment["charged_ms"] == record["charged"]
    assert wait_no_holds(gateway.ledger, account)["holds"] == 0
    assert_consistent(gateway.ledger, account)


def test_stream_without_usage_falls_back_to_an_estimate_and_says_so(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("no usage at all", max_tokens=20, model="gpt-fake-nousage", stream=True)
    raw = encode(body)
    with httpx.Client(base_url=gateway.url, timeout=10) as client, client.stream(
            "POST", CHAT, content=raw,
            headers={**auth(key), "content-type": "application/json"}) as resp:
        assert resp.status_code == 200
        lines = list(resp.iter_lines())
    assert "data: [DONE]" in lines
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["outcome"] == "ok"
    assert record["usage_source"] == "estimate"
    assert record["charged"] > 0
    assert gateway_comment(lines)["charged_ms"] == record["charged"]
    [consumption] = [e for e in ledger_entries(gateway.ledger, account)
                     if e["event_type"] == "consumption"]
    assert consumption["delta"] == -record["charged"]
    assert "estimate" in consumption["reason"] + (consumption["metadata_json"] or "")
    assert_consistent(gateway.ledger, account)


def test_responses_and_messages_streams_without_usage_fall_back_to_an_estimate(gateway,
                                                                              upstream):
    account, key = gateway.ledger.funded(FUNDS)
    requests = [
        ("/v1/responses", {"model": "gpt-fake-nousage", "input": "hi", "max_output_tokens": 6,
                           "stream": True}),
        ("/v1/messages", {"model": "claude-fake-nousage", "max_tokens": 6, "stream": True,
                          "messages": [{"role": "user", "content": "hi"}]}),
    ]
    headers = {**auth(key), "content-type": "application/json"}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for path, body in requests:
            with client.stream("POST", path, content=encode(body), headers=headers) as resp:
                assert resp.status_code == 200
                resp.read()
    records = wait_for_usage(gateway.ledger, account, 2)
    assert sorted(r["operation"] for r in records) == ["messages", "responses"]
    for r in records:
        assert r["usage_source"] == "estimate", r
        assert r["outcome"] == "ok"
        assert r["charged"] > 0
    assert_consistent(gateway.ledger, account)


@pytest.mark.parametrize("model, words", [("gpt-fake-nousage", 20), ("gpt-fake-midreset", 10)])
def test_chat_stream_fallback_counts_only_the_tokens_actually_streamed(gateway, upstream,
                                                                      model, words):
    """Without upstream usage the charge counts output tokens from the content relayed: a
    stream that delivered N words owes for N output tokens, never more than its hold."""
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("count my words", max_tokens=20, model=model, stream=True)
    raw = encode(body)
    with httpx.Client(base_url=gateway.url, timeout=10) as client, client.stream(
            "POST", CHAT, content=raw,
            headers={**auth(key), "content-type": "application/json"}) as resp:
        lines = list(resp.iter_lines())
        hold = int(resp.headers["x-gateway-hold-ms"])
    delivered = sum(1 for p in sse_data(lines) if p["choices"] and
                    p["choices"][0]["delta"].get("content") == " tok")
    assert delivered == words
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["output_tokens"] == delivered
    assert record["charged"] == len(raw) // 4 + 2 * delivered
    assert record["charged"] <= hold


@pytest.mark.parametrize("path, body, last_event", [
    (CHAT, chat_body("exactly enough", max_tokens=14, model="gpt-fake-paced", stream=True),
     "data: [DONE]"),
    ("/v1/responses", {"model": "gpt-fake-paced", "input": "exactly enough",
                       "max_output_tokens": 28, "stream": True}, "event: response.completed"),
], ids=["chat", "responses"])
def test_stream_whose_balance_covers_its_hold_is_never_cut(gateway, upstream, path, body,
                                                           last_event):
    """The hold is the request's worst case (max tokens): a stream that stays within it runs to
    the end and is charged its real usage, even when the balance covered nothing more."""
    raw = encode(body)
    max_tokens = body.get("max_tokens") or body["max_output_tokens"]
    hold = estimate_for(raw, max_tokens)
    account, key = gateway.ledger.funded(hold)
    with httpx.Client(base_url=gateway.url, timeout=10) as client, client.stream(
            "POST", path, content=raw,
            headers={**auth(key), "content-type": "application/json"}) as resp:
        assert int(resp.headers["x-gateway-hold-ms"]) == hold
        lines = list(resp.iter_lines())
    comment = gateway_comment(lines)
    assert "cut=" not in comment["line"]
    assert last_event in lines
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["outcome"] == "ok"
    assert record["usage_source"] == "upstream"
    assert record["charged"] == price(body, max_tokens) < hold
    assert gateway.ledger.balance(account).available == hold - record["charged"]


def test_paced_stream_is_relayed_without_buffering(gateway, upstream):
    _, key = gateway.ledger.funded(FUNDS)
    body = chat_body("pace yourself", max_tokens=200, model="gpt-fake-paced", stream=True)
    arrivals: list[float] = []
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        start = time.perf_counter()
        with client.stream("POST", CHAT, content=encode(body),
                           headers={**auth(key), "content-type": "application/json"}) as resp:
            assert resp.status_code == 200
            for line in resp.iter_lines():
                if line.startswith("data:") and '" tok"' in line:
                    arrivals.append(time.perf_counter() - start)
            total = time.perf_counter() - start
    assert len(arrivals) == 200
    assert total > 0.5  # 200+ events 5 ms apart
    assert arrivals[0] < 0.5 * total, (arrivals[0], total)
    assert arrivals[-1] - arrivals[0] > 0.4 * total  # the words arrived spread out
    # and in order of arrival: the middle word came well before the last
    assert arrivals[100] < arrivals[-1] - 0.1


def test_stream_usage_read_from_input_of_message_start_and_cumulative_delta(gateway,
                                                                            upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = {"model": "claude-fake-paced", "max_tokens": 30, "stream": True,
            "system": "be brief", "messages": [{"role": "user", "content": "hello there"}]}
    with httpx.Client(base_url=gateway.url, timeout=10) as client, client.stream(
            "POST", "/v1/messages", content=encode(body),
            headers={"x-api-key": key, "content-type": "application/json"}) as resp:
        lines = list(resp.iter_lines())
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["usage_source"] == "upstream"
    assert (record["input_tokens"], record["output_tokens"]) == (prompt_tokens_for(body), 30)
    assert record["charged"] == prompt_tokens_for(body) + 60
    assert gateway_comment(lines)["charged_ms"] == record["charged"]
