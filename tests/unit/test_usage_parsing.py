"""Usage of a complete JSON response, read per protocol (SPEC §6, the providers' docs): OpenAI chat
and embeddings `prompt_tokens`/`completion_tokens`, Responses `input_tokens`/`output_tokens`, each
with their cached and reasoning details; Anthropic counts cache reads and writes as input. A body
without a usage object has no usage (the call falls back to its estimate); a count that is not a
non-negative integer reads as 0, never as an error or a negative charge."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.usage import usage_from_json
from policies.meters import Usage

FAST = settings(max_examples=200, deadline=None)
counts = st.integers(min_value=0, max_value=2**40)


def body(**doc: Any) -> bytes:
    return json.dumps(doc).encode()


def test_a_chat_completion_reports_prompt_completion_cached_and_reasoning_tokens() -> None:
    raw = body(object="chat.completion", choices=[], usage={
        "prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
        "prompt_tokens_details": {"cached_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 12}})
    assert usage_from_json("openai_chat", raw) == Usage(
        input_tokens=120, output_tokens=30, cached_tokens=100, reasoning_tokens=12)


def test_embeddings_report_prompt_tokens_only() -> None:
    raw = body(object="list", data=[], usage={"prompt_tokens": 8, "total_tokens": 8})
    assert usage_from_json("openai_embeddings", raw) == Usage(input_tokens=8)


def test_a_response_reports_input_output_cached_and_reasoning_tokens() -> None:
    raw = body(object="response", status="completed", usage={
        "input_tokens": 40, "output_tokens": 9, "total_tokens": 49,
        "input_tokens_details": {"cached_tokens": 32},
        "output_tokens_details": {"reasoning_tokens": 4}})
    assert usage_from_json("openai_responses", raw) == Usage(
        input_tokens=40, output_tokens=9, cached_tokens=32, reasoning_tokens=4)


def test_anthropic_cache_reads_and_writes_count_as_input_tokens() -> None:
    raw = body(type="message", content=[], usage={
        "input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 300,
        "cache_creation_input_tokens": 50})
    assert usage_from_json("anthropic_messages", raw) == Usage(
        input_tokens=360, output_tokens=20, cached_tokens=300)


def test_missing_details_read_as_zero() -> None:
    raw = body(usage={"prompt_tokens": 5, "completion_tokens": 1})
    assert usage_from_json("openai_chat", raw) == Usage(input_tokens=5, output_tokens=1)


@pytest.mark.parametrize("raw", [
    body(object="chat.completion", choices=[]),
    body(usage=None),
    body(usage=[1, 2]),
    b"[]",
    b"not json",
    b"",
    b'{"usage": {"prompt_tokens": 1}',
])
def test_a_body_without_a_usage_object_has_no_usage(raw: bytes) -> None:
    assert usage_from_json("openai_chat", raw) is None


def test_a_protocol_that_reads_no_usage_has_none() -> None:
    assert usage_from_json("plain", body(usage={"prompt_tokens": 5})) is None


@pytest.mark.parametrize("bad", [-5, 1.5, "12", True, None, {"n": 1}])
def test_a_count_that_is_not_a_non_negative_integer_reads_as_zero(bad: Any) -> None:
    raw = body(usage={"prompt_tokens": bad, "completion_tokens": 3,
                      "prompt_tokens_details": {"cached_tokens": bad}})
    assert usage_from_json("openai_chat", raw) == Usage(input_tokens=0, output_tokens=3)
    anthropic = body(usage={"input_tokens": 4, "output_tokens": bad,
                            "cache_read_input_tokens": bad})
    assert usage_from_json("anthropic_messages", anthropic) == Usage(input_tokens=4)


@FAST
@given(prompt=counts, completion=counts, cached=counts, reasoning=counts)
def test_openai_counts_are_read_exactly(prompt: int, completion: int, cached: int,
                                        reasoning: int) -> None:
    chat = body(usage={"prompt_tokens": prompt, "completion_tokens": completion,
                       "prompt_tokens_details": {"cached_tokens": cached},
                       "completion_tokens_details": {"reasoning_tokens": reasoning}})
    responses = body(usage={"input_tokens": prompt, "output_tokens": completion,
                            "input_tokens_details": {"cached_tokens": cached},
                            "output_tokens_details": {"reasoning_tokens": reasoning}})
    expected = Usage(prompt, completion, cached, reasoning)
    assert usage_from_json("openai_chat", chat) == expected
    assert usage_from_json("openai_responses", responses) == expected


@FAST
@given(fresh=counts, read=counts, written=counts, output=counts)
def test_anthropic_input_is_fresh_plus_cache_reads_plus_cache_writes(
        fresh: int, read: int, written: int, output: int) -> None:
    raw = body(usage={"input_tokens": fresh, "output_tokens": output,
                      "cache_read_input_tokens": read, "cache_creation_input_tokens": written})
    usage = usage_from_json("anthropic_messages", raw)
    assert usage == Usage(input_tokens=fresh + read + written, output_tokens=output,
                          cached_tokens=read)


def test_token_usage_keeps_every_class_the_price_source_prices() -> None:
    from gateway.proxy.usage import token_usage_from_json
    from policies.provider_prices import TokenUsage
    chat = body(usage={"prompt_tokens": 120, "completion_tokens": 30,
                       "prompt_tokens_details": {"cached_tokens": 100},
                       "completion_tokens_details": {"reasoning_tokens": 12}})
    assert token_usage_from_json("openai_chat", chat) == TokenUsage(120, 100, 0, 30, 12)
    resp = body(usage={"input_tokens": 50, "output_tokens": 9,
                       "input_tokens_details": {"cached_tokens": 7},
                       "output_tokens_details": {"reasoning_tokens": 4}})
    assert token_usage_from_json("openai_responses", resp) == TokenUsage(50, 7, 0, 9, 4)
    anth = body(usage={"input_tokens": 10, "cache_read_input_tokens": 20,
                       "cache_creation_input_tokens": 30, "output_tokens": 5})
    assert token_usage_from_json("anthropic_messages", anth) == TokenUsage(60, 20, 30, 5, 0)
    assert token_usage_from_json("anthropic_messages", b"{}") is None
    assert token_usage_from_json("other", anth) is None
