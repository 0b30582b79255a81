"""A chat stream's usage reaches only clients that asked for it (SPEC §6): the gateway forces
`stream_options.include_usage` to meter the call, and for a client that did not ask strips
`usage` from whatever chunk carries it — dropping the chunk only when nothing else is left."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.proxy.usage import StreamMeter, split_events, without_usage

USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15}


def chunk(choices: list[Any], **extra: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
            "model": "m", "choices": choices, **extra}


def choice(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}


def event(doc: Any, crlf: bool = False) -> bytes:
    raw = b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"
    return raw.replace(b"\n", b"\r\n") if crlf else raw


def data_of(ev: bytes) -> Any:
    [line] = [ln for ln in ev.splitlines() if ln.startswith(b"data:")]
    return json.loads(line[5:])


def test_the_choices_less_usage_chunk_is_dropped() -> None:
    assert without_usage(event(chunk([], usage=USAGE))) is None


def test_usage_on_a_chunk_with_one_empty_delta_is_dropped() -> None:
    assert without_usage(event(chunk([choice({})], usage=USAGE))) is None
    assert without_usage(event(chunk([{"index": 0, "delta": {}}], usage=USAGE))) is None


def test_usage_on_the_finish_reason_chunk_keeps_the_chunk_minus_usage() -> None:
    kept = without_usage(event(chunk([choice({}, "stop")], usage=USAGE)))
    assert kept is not None and kept.endswith(b"\n\n")
    assert data_of(kept) == chunk([choice({}, "stop")])


def test_usage_on_a_content_chunk_keeps_the_content() -> None:
    kept = without_usage(event(chunk([choice({"content": " tok"})], usage=USAGE)))
    assert kept is not None and data_of(kept) == chunk([choice({"content": " tok"})])


def test_other_sse_fields_and_crlf_framing_are_kept() -> None:
    raw = b"id: 7\r\n" + event(chunk([choice({}, "length")], usage=USAGE), crlf=True)
    kept = without_usage(raw)
    assert kept is not None
    assert kept.startswith(b"id: 7\r\ndata: ") and kept.endswith(b"\r\n\r\n")
    assert split_events(bytearray(kept)) == [kept]
    assert data_of(kept) == chunk([choice({}, "length")])


@pytest.mark.parametrize("ev", [
    event(chunk([choice({"content": "hi"})])),
    event(chunk([choice({"content": "hi"})], usage=None)),
    b"data: [DONE]\n\n",
    b": keep-alive comment\n\n",
])
def test_events_without_a_usage_object_pass_unchanged(ev: bytes) -> None:
    assert without_usage(ev) is ev


@pytest.mark.parametrize("doc", [
    chunk([], usage=USAGE),
    chunk([choice({})], usage=USAGE),
    chunk([choice({}, "stop")], usage=USAGE),
])
def test_the_meter_reads_usage_from_every_shape(doc: dict[str, Any]) -> None:
    meter = StreamMeter("openai_chat")
    assert meter.feed(event(doc)) is True
    assert meter.final_usage_seen
    assert meter.usage is not None
    assert (meter.usage.input_tokens, meter.usage.output_tokens) == (12, 3)


def test_a_content_chunk_without_usage_is_not_flagged() -> None:
    meter = StreamMeter("openai_chat")
    assert meter.feed(event(chunk([choice({"content": "hi"})], usage=None))) is False
    assert meter.content_events == 1


def test_an_anthropic_stream_keeps_cache_writes_in_its_token_usage() -> None:
    from policies.provider_prices import TokenUsage
    meter = StreamMeter("anthropic_messages")
    start = {"type": "message_start", "message": {"usage": {
        "input_tokens": 10, "cache_read_input_tokens": 20, "cache_creation_input_tokens": 30,
        "output_tokens": 1}}}
    meter.feed(b"event: message_start\ndata: " + json.dumps(start).encode() + b"\n\n")
    delta = {"type": "message_delta", "usage": {"output_tokens": 42}}
    meter.feed(b"event: message_delta\ndata: " + json.dumps(delta).encode() + b"\n\n")
    assert meter.final_usage_seen
    assert meter.tokens == TokenUsage(60, 20, 30, 42, 0)
    assert meter.usage is not None and meter.usage.input_tokens == 60
