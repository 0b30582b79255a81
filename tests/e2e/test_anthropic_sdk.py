"""SPEC §6 through the official `anthropic` SDK: Messages debited by 1×input + 2×output tokens,
JSON and SSE (message_start + cumulative message_delta usage); the upstream sees the gateway's
own Anthropic credential, never the caller's key."""

from __future__ import annotations

import anthropic
import httpx

from tests.e2e.helpers import assert_consistent, encode, gateway_comment, wait_for_usage
from tests.fakes.upstream import prompt_tokens_for

FUNDS = 100_000
MODEL = "claude-fake"


def sdk(gateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0, timeout=10)


def message_body(max_tokens: int = 9) -> dict:
    return {"model": MODEL, "max_tokens": max_tokens, "system": "You are terse.",
            "messages": [{"role": "user", "content": "Name three primary colours."}]}


def test_messages_non_stream_debit_is_input_plus_twice_output(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = message_body(9)
    with sdk(gateway, key) as client:
        raw = client.messages.with_raw_response.create(**body)
        message = raw.parse()
    assert message.content[0].text == " tok" * 9
    assert message.usage.input_tokens == prompt_tokens_for(body)
    assert message.usage.output_tokens == 9
    expected = message.usage.input_tokens * 1 + message.usage.output_tokens * 2
    assert int(raw.headers["x-gateway-charged-ms"]) == expected
    assert raw.headers["x-gateway-operation"] == "messages"
    assert int(raw.headers["x-gateway-remaining-ms"]) == FUNDS - expected
    [record] = gateway.ledger.usage(account)
    assert (record["operation"], record["model"], record["usage_source"]) == (
        "messages", MODEL, "upstream")
    assert (record["input_tokens"], record["output_tokens"], record["charged"]) == (
        message.usage.input_tokens, 9, expected)
    assert gateway.ledger.balance(account).available == FUNDS - expected
    assert_consistent(gateway.ledger, account)


def test_messages_stream_helper_final_message_debited_exactly(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = message_body(14)
    with sdk(gateway, key) as client, client.messages.stream(**body) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == " tok" * 14
    assert final.usage.input_tokens == prompt_tokens_for(body)
    assert final.usage.output_tokens == 14
    expected = final.usage.input_tokens + 2 * final.usage.output_tokens
    [record] = wait_for_usage(gateway.ledger, account)
    assert record["streamed"]
    assert record["usage_source"] == "upstream"
    assert (record["input_tokens"], record["output_tokens"]) == (final.usage.input_tokens, 14)
    assert record["charged"] == expected
    assert gateway.ledger.balance(account).available == FUNDS - expected
    assert_consistent(gateway.ledger, account)


def test_messages_raw_stream_ends_with_charge_comment(gateway, upstream):
    account, key = gateway.ledger.funded(FUNDS)
    body = {**message_body(5), "stream": True}
    headers = {"x-api-key": key, "anthropic-version": "2023-06-01",
               "content-type": "application/json"}
    with httpx.Client(base_url=gateway.url, timeout=10) as client, client.stream(
            "POST", "/v1/messages", content=encode(body), headers=headers) as resp:
        assert resp.status_code == 200
        lines = list(resp.iter_lines())
    assert "event: message_stop" in lines
    comment = gateway_comment(lines)
    assert comment["charged_ms"] == prompt_tokens_for(body) + 2 * 5
    assert comment["remaining_ms"] == gateway.ledger.balance(account).available


def test_upstream_sees_gateway_credential_not_the_callers_key(gateway, upstream):
    _, key = gateway.ledger.funded(FUNDS)
    with sdk(gateway, key) as client:
        sdk_version = client.default_headers["anthropic-version"]
        client.messages.create(**message_body(2))
        with client.messages.stream(**message_body(2)) as stream:
            stream.get_final_message()
    forwarded = upstream.requests.snapshot()
    assert [r["path"] for r in forwarded] == ["/v1/messages", "/v1/messages"]
    for req in forwarded:
        headers = req["headers"]
        assert headers["x-api-key"] == "sk-upstream-anthropic"
        assert "authorization" not in headers
        assert all(key not in value for value in headers.values()), headers
        assert key.encode() not in req["body"]
        assert headers["anthropic-version"] == sdk_version  # the SDK's header, forwarded


def test_anthropic_version_header_forwarded_from_caller_or_policy(gateway, upstream):
    _, key = gateway.ledger.funded(FUNDS)
    raw = encode(message_body(1))
    base = {"x-api-key": key, "content-type": "application/json"}
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        mine = client.post("/v1/messages", content=raw,
                           headers={**base, "anthropic-version": "2023-01-01",
                                    "anthropic-beta": "tools-2024-04-04, "
                                                      "prompt-caching-2024-07-31"})
        default = client.post("/v1/messages", content=raw, headers=base)
    assert mine.status_code == default.status_code == 200
    first, second = upstream.requests.snapshot()
    # the caller's version wins; the policy's default fills in when the caller sent none
    assert first["headers"]["anthropic-version"] == "2023-01-01"
    # only the beta the test policy allows passes (forward_header_values)
    assert first["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert second["headers"]["anthropic-version"] == "2023-06-01"
    assert "," not in first["headers"]["anthropic-version"]  # not sent twice
    # the upstream's request-id headers come back; the gateway's x-request-id is its own
    assert mine.headers["request-id"].startswith("req_")
    assert mine.headers["x-request-id"] != mine.headers["request-id"]


def test_an_anthropic_beta_the_policy_does_not_allow_never_reaches_the_upstream(
        gateway, upstream):
    _, key = gateway.ledger.funded(FUNDS)
    with sdk(gateway, key) as client:
        client.beta.messages.create(**message_body(2),
                                    betas=["computer-use-2024-10-22", "prompt-caching-2024-07-31"])
        client.beta.messages.create(**message_body(2), betas=["computer-use-2024-10-22"])
        client.messages.create(**message_body(2),
                               extra_headers={"anthropic-beta": "output-128k-2025-02-19"})
    allowed, unpriced, extra = upstream.requests.snapshot()
    assert allowed["headers"]["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert "anthropic-beta" not in unpriced["headers"]
    assert "anthropic-beta" not in extra["headers"]
    for req in (allowed, unpriced, extra):
        assert req["headers"]["x-api-key"] == "sk-upstream-anthropic"
        assert req["headers"]["anthropic-version"]
        assert req["headers"]["x-stainless-lang"] == "python"
