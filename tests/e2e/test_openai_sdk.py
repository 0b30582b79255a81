"""SPEC §6 through the official `openai` SDK over real sockets: every call is debited by the
usage the upstream reported (1 unit per input token, 2 per output token in the test policy),
streams included; the caller's credentials never reach the upstream."""

from __future__ import annotations

import asyncio
import base64
import struct

import httpx
import openai
import pytest

from tests.e2e.helpers import (
    REQUEST_ID_RE,
    assert_consistent,
    auth,
    chat_body,
    encode,
    estimate_for,
    gateway_comment,
    price,
    sse_data,
    wait_for_usage,
)
from tests.fakes.upstream import embedding_for, prompt_tokens_for

FUNDS = 100_000


def sdk(gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=10)


# ---- chat completions ---------------------------------------------------------------------


def test_chat_non_stream_debit_equals_reported_usage_and_charged_header(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("What is the capital of France? Answer briefly.", max_tokens=11)
    with sdk(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(**body)
        completion = raw.parse()
    usage = completion.usage
    assert usage.prompt_tokens == prompt_tokens_for(body)
    assert usage.completion_tokens == 11
    expected = usage.prompt_tokens * 1 + usage.completion_tokens * 2
    assert int(raw.headers["x-gateway-charged-ms"]) == expected
    assert REQUEST_ID_RE.match(raw.headers["x-request-id"])
    assert raw.headers["x-gateway-operation"] == "chat"
    balance = gateway.ledger.balance(account)
    assert balance.available == FUNDS - expected
    assert int(raw.headers["x-gateway-remaining-ms"]) == FUNDS - expected
    # the upstream's own request id is kept aside, the gateway's is the x-request-id
    assert raw.headers["x-upstream-request-id"].startswith("req_")
    assert raw.headers["x-upstream-request-id"] != raw.headers["x-request-id"]
    assert_consistent(gateway.ledger, account)


def test_chat_stream_charge_is_prompt_plus_twice_completion(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("Stream me a few words please", max_tokens=9)
    with sdk(gateway, key) as client:
        chunks = list(client.chat.completions.create(**body, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == " tok" * 9
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["streamed"]
    assert record["usage_source"] == "upstream"
    assert record["input_tokens"] == prompt_tokens_for(body)
    assert record["output_tokens"] == 9
    assert record["charged"] == price(body, 9)
    assert gateway.ledger.balance(account).available == FUNDS - price(body, 9)
    assert_consistent(gateway.ledger, account)


def test_chat_stream_without_include_usage_gets_no_usage_chunk_but_upstream_was_asked(
        gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("no usage for me", max_tokens=5)
    with sdk(gateway, key) as client:
        chunks = list(client.chat.completions.create(**body, stream=True))
    assert chunks, "no chunks"
    usage_only = [c for c in chunks if not c.choices and c.usage is not None]
    assert usage_only == []
    assert all(c.usage is None for c in chunks)
    forwarded = upstream.requests.snapshot()[-1]
    assert forwarded["path"] == "/v1/chat/completions"
    assert forwarded["json"]["stream_options"]["include_usage"] is True
    # the client's own fields reach the upstream untouched
    assert forwarded["json"]["messages"] == body["messages"]
    assert forwarded["json"]["max_tokens"] == 5
    # and the charge still comes from the (stripped) upstream usage
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["usage_source"] == "upstream"
    assert record["charged"] == price(body, 5)


@pytest.mark.parametrize("shape", ["", "-usagedelta", "-usagefinish"],
                         ids=["choices-less-chunk", "one-empty-delta", "finish-reason-chunk"])
def test_usage_the_client_did_not_ask_for_never_reaches_it_whatever_chunk_carries_it(
        gateway, upstream, shape):
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("where does usage ride", max_tokens=6, model="gpt-fake" + shape)
    with sdk(gateway, key) as client:
        chunks = list(client.chat.completions.create(**body, stream=True))
    assert all(c.usage is None for c in chunks), [c for c in chunks if c.usage is not None]
    assert all(c.choices for c in chunks)  # no choices-less (usage-only) chunk either
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == " tok" * 6
    # the finish_reason chunk is kept (minus usage) when usage rode on it
    assert [c.choices[0].finish_reason for c in chunks].count("stop") == 1
    assert chunks[-1].choices[0].finish_reason == "stop"
    # the gateway still metered the upstream's usage
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["usage_source"] == "upstream"
    assert (record["input_tokens"], record["output_tokens"]) == (prompt_tokens_for(body), 6)
    assert record["charged"] == price(body, 6)


@pytest.mark.parametrize("shape", ["-usagedelta", "-usagefinish"])
def test_a_client_that_asked_for_usage_gets_it_on_whatever_chunk_carries_it(
        gateway, upstream, shape):
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("usage wherever", max_tokens=4, model="gpt-fake" + shape)
    with sdk(gateway, key) as client:
        chunks = list(client.chat.completions.create(
            **body, stream=True, stream_options={"include_usage": True}))
    [carrier] = [c for c in chunks if c.usage is not None]
    assert (carrier.usage.prompt_tokens, carrier.usage.completion_tokens) == (
        prompt_tokens_for(body), 4)
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["charged"] == price(body, 4)


def test_chat_stream_with_include_usage_gets_exactly_one_usage_chunk(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("usage please", max_tokens=4)
    with sdk(gateway, key) as client:
        chunks = list(client.chat.completions.create(
            **body, stream=True, stream_options={"include_usage": True}))
    usage_only = [c for c in chunks if not c.choices and c.usage is not None]
    assert len(usage_only) == 1
    usage = usage_only[0].usage
    assert usage.prompt_tokens == prompt_tokens_for(body)
    assert usage.completion_tokens == 4
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["charged"] == usage.prompt_tokens + 2 * usage.completion_tokens


def test_chat_stream_final_sse_comment_carries_the_charge(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("comment carries charge", max_tokens=6, stream=True)
    raw = encode(body)
    with httpx.Client(base_url=gateway.url, timeout=10) as client, client.stream(
            "POST", "/v1/chat/completions", content=raw,
            headers={**auth(key), "content-type": "application/json"}) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-gateway-operation"] == "chat"
        assert int(resp.headers["x-gateway-hold-ms"]) == estimate_for(raw, 6)
        assert "x-gateway-remaining-ms" not in resp.headers
        lines = list(resp.iter_lines())
        request_id = resp.headers["x-request-id"]
    comment = gateway_comment(lines)
    assert lines.index(comment["line"]) > max(i for i, line in enumerate(lines)
                                              if line.startswith("data:"))
    assert comment["request_id"] == request_id
    assert comment["charged_ms"] == price(body, 6)
    assert comment["remaining_ms"] == FUNDS - price(body, 6)
    assert comment["remaining_ms"] == gateway.ledger.balance(account).available
    # the SSE payloads are the upstream's, minus the usage-only chunk nobody asked for
    payloads = sse_data(lines)
    assert all(p["choices"] for p in payloads)
    assert "data: [DONE]" in lines
    [record] = gateway.ledger.usage(account)
    assert record["id"] == request_id
    assert record["charged"] == comment["charged_ms"]


async def test_async_client_chat_stream_and_non_stream(gateway, upstream):
    account, key = await asyncio.to_thread(gateway.ledger.funded, FUNDS)
    body = chat_body("async hello", max_tokens=8)
    async with openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0,
                                  timeout=10) as client:
        completion = await client.chat.completions.create(**body)
        stream = await client.chat.completions.create(**body, stream=True)
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        # concurrent calls on one async client are each metered
        many = await asyncio.gather(*(client.chat.completions.create(**body) for _ in range(5)))
    assert completion.usage.completion_tokens == 8
    assert "".join(pieces) == " tok" * 8
    assert all(c.usage.prompt_tokens == prompt_tokens_for(body) for c in many)
    records = await asyncio.to_thread(wait_for_usage, gateway.ledger, account, 7)
    assert len(records) == 7
    assert all(r["charged"] == price(body, 8) for r in records)
    balance = await asyncio.to_thread(gateway.ledger.balance, account)
    assert balance.available == FUNDS - 7 * price(body, 8)
    await asyncio.to_thread(assert_consistent, gateway.ledger, account)


# ---- Responses API ------------------------------------------------------------------------


def test_responses_non_stream_debited_by_usage(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = {"model": "gpt-fake", "instructions": "Be terse.", "input": "Say hello to the world",
            "max_output_tokens": 12}
    with sdk(gateway, key) as client:
        raw = client.responses.with_raw_response.create(**body)
        response = raw.parse()
    assert response.output_text == " tok" * 12
    assert response.usage.input_tokens == prompt_tokens_for(body)
    assert response.usage.output_tokens == 12
    expected = price(body, 12)
    assert int(raw.headers["x-gateway-charged-ms"]) == expected
    assert raw.headers["x-gateway-operation"] == "responses"
    [record] = gateway.ledger.usage(account)
    assert record["operation"] == "responses"
    assert record["charged"] == expected
    assert gateway.ledger.balance(account).available == FUNDS - expected


def test_responses_stream_true_debited_by_response_completed_usage(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = {"model": "gpt-fake", "input": "stream the response API", "max_output_tokens": 10}
    with sdk(gateway, key) as client:
        events = list(client.responses.create(**body, stream=True))
    completed = [e for e in events if e.type == "response.completed"]
    assert len(completed) == 1
    usage = completed[0].response.usage
    assert (usage.input_tokens, usage.output_tokens) == (prompt_tokens_for(body), 10)
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["operation"] == "responses"
    assert record["usage_source"] == "upstream"
    assert record["streamed"]
    assert record["charged"] == usage.input_tokens + 2 * usage.output_tokens


def test_responses_stream_helper_debited_by_response_completed_usage(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = {"model": "gpt-fake", "input": "use the stream helper", "instructions": "short",
            "max_output_tokens": 13}
    with sdk(gateway, key) as client, client.responses.stream(**body) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == " tok" * 13
    assert final.usage.output_tokens == 13
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["charged"] == price(body, 13)
    assert gateway.ledger.balance(account).available == FUNDS - price(body, 13)
    assert_consistent(gateway.ledger, account)


# ---- embeddings ---------------------------------------------------------------------------


def test_embeddings_default_base64_debited_by_prompt_tokens(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    inputs = ["the first sentence to embed", "and a second, somewhat longer one to embed"]
    with sdk(gateway, key) as client:
        raw = client.embeddings.with_raw_response.create(model="embed-fake", input=inputs)
        result = raw.parse()
    forwarded = upstream.requests.snapshot()[-1]
    assert forwarded["json"]["encoding_format"] == "base64"  # the SDK's default path
    assert [d.embedding for d in result.data] == [embedding_for(t, 8) for t in inputs]
    expected = prompt_tokens_for(forwarded["json"])
    assert result.usage.prompt_tokens == expected
    assert int(raw.headers["x-gateway-charged-ms"]) == expected
    assert raw.headers["x-gateway-operation"] == "embeddings"
    [record] = gateway.ledger.usage(account)
    assert (record["operation"], record["input_tokens"], record["output_tokens"]) == (
        "embeddings", expected, 0)
    assert gateway.ledger.balance(account).available == FUNDS - expected
    # the relayed base64 payload is byte-exact
    doc = raw.http_response.json()
    vec = struct.unpack("<8f", base64.b64decode(doc["data"][0]["embedding"]))
    assert list(vec) == embedding_for(inputs[0], 8)


# ---- credentials and headers ---------------------------------------------------------------


def test_callers_authorization_never_reaches_upstream(gateway, upstream):
    _, key = gateway.ledger.funded(FUNDS)
    with sdk(gateway, key) as client:
        client.chat.completions.create(**chat_body())
        client.embeddings.create(model="embed-fake", input="x")
        list(client.chat.completions.create(**chat_body(), stream=True))
    forwarded = upstream.requests.snapshot()
    assert len(forwarded) == 3
    for req in forwarded:
        assert req["headers"]["authorization"] == "Bearer sk-upstream-openai"
        assert "x-api-key" not in req["headers"]
        assert all(key not in value for value in req["headers"].values())
        assert key.encode() not in req["body"]


def test_x_api_key_auth_is_stripped_and_hop_by_hop_headers_dropped(gateway, upstream):
    _, key = gateway.ledger.funded(FUNDS)
    headers = {
        "x-api-key": key,
        "content-type": "application/json",
        "connection": "keep-alive, x-drop-me",
        "x-drop-me": "named by Connection",
        "keep-alive": "timeout=5",
        "te": "trailers",
        "trailer": "x-checksum",
        "proxy-authorization": "Basic c2VjcmV0",
        "cookie": "session=abc",
        "x-trace-id": "trace-123",
        "x-not-listed": "dropped",
        "openai-organization": "org-client",
    }
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        resp = client.post("/v1/chat/completions", content=encode(chat_body()), headers=headers)
    assert resp.status_code == 200, resp.text
    got = upstream.requests.snapshot()[-1]["headers"]
    for name in ("x-api-key", "x-drop-me", "keep-alive", "te", "trailer",
                 "proxy-authorization", "cookie", "x-not-listed", "openai-organization"):
        assert name not in got, (name, got)
    assert got["authorization"] == "Bearer sk-upstream-openai"
    assert got["x-trace-id"] == "trace-123"  # the test policy's forward_headers lists it
    assert all(key not in v for v in got.values())
    # the response is re-framed by the gateway: one content-length, no chunked encoding
    assert resp.headers.get_list("content-length") == [str(len(resp.content))]
    assert "transfer-encoding" not in resp.headers


def test_the_sdks_organization_and_project_never_choose_what_the_operators_key_bills(
        gateway, upstream):
    _, key = gateway.ledger.funded(FUNDS)
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0, timeout=10,
                       organization="org-customer", project="proj-customer",
                       default_headers={"OpenAI-Beta": "assistants=v2"}) as client:
        client.chat.completions.create(**chat_body())
        list(client.chat.completions.create(**chat_body(), stream=True))
        client.responses.create(model="gpt-fake", input="hi", max_output_tokens=3)
    forwarded = upstream.requests.snapshot()
    assert len(forwarded) == 3
    for req in forwarded:
        got = req["headers"]
        for name in ("openai-organization", "openai-project", "openai-beta"):
            assert name not in got, (name, got)
        # what the SDK needs still arrives: content type, accept, user agent, its telemetry
        assert got["content-type"] == "application/json"
        assert got["accept"] == "application/json"
        assert got["user-agent"].startswith("OpenAI/Python")
        assert got["x-stainless-lang"] == "python"
        assert got["authorization"] == "Bearer sk-upstream-openai"


# ---- usage records and timing ------------------------------------------------------------


def test_usage_record_has_every_field(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = chat_body("record me", max_tokens=3)
    with sdk(gateway, key) as client:
        raw = client.chat.completions.with_raw_response.create(**body)
    [record] = gateway.ledger.usage(account)
    assert record["id"] == raw.headers["x-request-id"]
    assert record["account_id"] == account
    assert record["operation"] == "chat"
    assert record["model"] == "gpt-fake"
    assert record["upstream_status"] == 200
    assert isinstance(record["duration_ms"], int) and record["duration_ms"] >= 0
    assert record["input_tokens"] == prompt_tokens_for(body)
    assert record["output_tokens"] == 3
    assert record["charged"] == price(body, 3)
    assert record["estimated"] == estimate_for(upstream.requests.snapshot()[-1]["body"], 3)
    assert record["usage_source"] == "upstream"
    assert record["outcome"] == "ok"
    assert not record["streamed"]
    assert record["unbilled"] == 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_usage_record_duration_covers_upstream_latency(gateway, upstream, stream):
    account, key = gateway.ledger.funded(FUNDS)
    upstream.delay_ms = 200
    with sdk(gateway, key) as client:
        result = client.chat.completions.create(**chat_body(max_tokens=2), stream=stream)
        if stream:
            list(result)
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["duration_ms"] >= 200
    assert record["duration_ms"] < 5000
