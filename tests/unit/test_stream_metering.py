"""Streaming usage (SPEC §6): OpenAI chat completions report it in a usage chunk, the Responses API
in `response.completed`, Anthropic in `message_start` and then the cumulative `message_delta`. If
usage never arrives the call is charged from an estimate: input from the request body (or
Anthropic's `message_start`), one output token per content event, never more output than the
request allowed. However TCP cuts the stream, the meter reads the same figures."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.auth import Caller
from gateway.proxy.relay import running_usage
from gateway.proxy.settlement import Call
from gateway.proxy.usage import StreamMeter, split_events
from policies.compiled import Policy, load_policy
from policies.estimates import BYTES_PER_TOKEN
from policies.meters import Usage

DEFAULT_POLICY = Path(__file__).resolve().parents[2] / "config" / "policies.yaml"
FAST = settings(max_examples=200, deadline=None)


# --- wire events, as the providers send them ------------------------------------------------------


def sse(doc: Any, event: str | None = None, crlf: bool = False) -> bytes:
    raw = (f"event: {event}\n" if event else "") + "data: " + json.dumps(doc) + "\n\n"
    return (raw.replace("\n", "\r\n") if crlf else raw).encode()


def chat_chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> bytes:
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return sse({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
                "model": "gpt-4o-mini", "choices": choices, **extra})


def chat_stream(words: int, usage: dict[str, Any] | None) -> list[bytes]:
    """Role chunk, `words` content chunks, the finish chunk, the usage chunk if any, [DONE]."""
    events = [chat_chunk({"role": "assistant", "content": "", "refusal": None})]
    events += [chat_chunk({"content": " tok"}) for _ in range(words)]
    events.append(chat_chunk({}, "stop"))
    if usage is not None:
        events.append(chat_chunk(None, usage=usage))
    return [*events, b"data: [DONE]\n\n"]


def responses_stream(words: int, usage: dict[str, Any] | None,
                     last: str = "response.completed") -> list[bytes]:
    """`response.created` … `words` text deltas … `response.completed` (or `.incomplete`)."""
    def response(status: str, u: dict[str, Any] | None) -> dict[str, Any]:
        return {"id": "resp_1", "object": "response", "status": status, "output": [], "usage": u}

    events = [sse({"type": "response.created", "response": response("in_progress", None)},
                  "response.created")]
    events += [sse({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0,
                    "content_index": 0, "delta": " tok"}, "response.output_text.delta")
               for _ in range(words)]
    events.append(sse({"type": "response.output_text.done", "text": " tok" * words},
                      "response.output_text.done"))
    status = "completed" if last == "response.completed" else "incomplete"
    return [*events, sse({"type": last, "response": response(status, usage)}, last)]


def anthropic_stream(words: int, start_usage: dict[str, Any] | None,
                     delta_usages: list[dict[str, Any]]) -> list[bytes]:
    """`message_start` (with `start_usage`), `words` text deltas, one `message_delta` per entry of
    `delta_usages` (an empty dict: a message_delta without usage), `message_stop`."""
    message: dict[str, Any] = {"id": "msg_1", "type": "message", "role": "assistant",
                               "model": "claude-3-5-haiku-latest", "content": []}
    if start_usage is not None:
        message["usage"] = start_usage
    events = [sse({"type": "message_start", "message": message}, "message_start"),
              sse({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}, "content_block_start"),
              sse({"type": "ping"}, "ping")]
    events += [sse({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": " tok"}}, "content_block_delta")
               for _ in range(words)]
    events.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    for u in delta_usages:
        doc: dict[str, Any] = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
        if u:
            doc["usage"] = u
        events.append(sse(doc, "message_delta"))
    return [*events, sse({"type": "message_stop"}, "message_stop")]


def metered(protocol: str, events: list[bytes]) -> StreamMeter:
    meter = StreamMeter(protocol)
    for event in events:
        meter.feed(event)
    return meter


def metered_as_relayed(protocol: str, chunks: list[bytes]) -> StreamMeter:
    """The meter after the relay's reading: split chunk by chunk, then any unterminated rest."""
    meter = StreamMeter(protocol)
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        for event in split_events(buffer):
            meter.feed(event)
    if buffer:
        meter.feed(bytes(buffer))
    return meter


def reading(meter: StreamMeter) -> tuple[Usage | None, int, int, bool]:
    return meter.usage, meter.content_events, meter.input_tokens, meter.final_usage_seen


CHAT_USAGE = {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
              "prompt_tokens_details": {"cached_tokens": 2},
              "completion_tokens_details": {"reasoning_tokens": 1}}
RESPONSES_USAGE = {"input_tokens": 20, "output_tokens": 4, "total_tokens": 24,
                   "input_tokens_details": {"cached_tokens": 5},
                   "output_tokens_details": {"reasoning_tokens": 2}}
ANTHROPIC_START = {"input_tokens": 30, "output_tokens": 1, "cache_read_input_tokens": 7,
                   "cache_creation_input_tokens": 3}


# --- OpenAI chat completions ----------------------------------------------------------------------


def test_a_chat_stream_is_metered_from_its_usage_chunk() -> None:
    meter = metered("openai_chat", chat_stream(3, CHAT_USAGE))
    assert meter.final_usage_seen
    assert meter.usage == Usage(input_tokens=12, output_tokens=3, cached_tokens=2,
                                reasoning_tokens=1)
    assert meter.content_events == 3


def test_the_role_chunk_and_the_empty_finish_chunk_are_not_content() -> None:
    meter = metered("openai_chat", [chat_chunk({"role": "assistant", "content": ""}),
                                    chat_chunk({}, "stop"), b"data: [DONE]\n\n"])
    assert meter.content_events == 0


@pytest.mark.parametrize("delta", [
    {"content": "hi"},
    {"refusal": "I can't"},
    {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
])
def test_text_refusals_and_tool_calls_are_content(delta: dict[str, Any]) -> None:
    assert metered("openai_chat", [chat_chunk(delta)]).content_events == 1


def test_a_chat_stream_without_a_usage_chunk_has_no_final_usage() -> None:
    meter = metered("openai_chat", chat_stream(5, None))
    assert (meter.usage, meter.final_usage_seen, meter.content_events) == (None, False, 5)


def test_usage_null_on_every_chunk_is_not_usage() -> None:
    meter = metered("openai_chat", [chat_chunk({"content": "hi"}, usage=None),
                                    chat_chunk({}, "stop", usage=None)])
    assert not meter.final_usage_seen and meter.content_events == 1


# --- OpenAI Responses -----------------------------------------------------------------------------


def test_a_responses_stream_is_metered_from_response_completed() -> None:
    meter = metered("openai_responses", responses_stream(4, RESPONSES_USAGE))
    assert meter.final_usage_seen
    assert meter.usage == Usage(input_tokens=20, output_tokens=4, cached_tokens=5,
                                reasoning_tokens=2)
    assert meter.content_events == 4


def test_an_incomplete_response_still_reports_its_usage() -> None:
    meter = metered("openai_responses",
                    responses_stream(2, RESPONSES_USAGE, last="response.incomplete"))
    assert meter.final_usage_seen and meter.usage is not None
    assert meter.usage.output_tokens == 4


def test_response_completed_with_null_usage_leaves_the_stream_unmetered() -> None:
    meter = metered("openai_responses", responses_stream(6, None))
    assert (meter.usage, meter.final_usage_seen, meter.content_events) == (None, False, 6)


# --- Anthropic Messages ---------------------------------------------------------------------------


def test_anthropic_input_is_known_from_message_start_before_the_stream_ends() -> None:
    meter = metered("anthropic_messages", anthropic_stream(2, ANTHROPIC_START, [])[:3])
    assert meter.input_tokens == 30 + 7 + 3  # cache reads and writes are input tokens
    assert not meter.final_usage_seen  # only message_delta carries the final output count


def test_an_anthropic_stream_is_metered_from_message_start_and_message_delta() -> None:
    meter = metered("anthropic_messages",
                    anthropic_stream(9, ANTHROPIC_START, [{"output_tokens": 9}]))
    assert meter.final_usage_seen
    assert meter.usage == Usage(input_tokens=40, output_tokens=9, cached_tokens=7)
    assert meter.content_events == 9


def test_message_delta_usage_is_cumulative_not_added() -> None:
    meter = metered("anthropic_messages", anthropic_stream(
        0, ANTHROPIC_START, [{"output_tokens": 5}, {"output_tokens": 9}]))
    assert meter.usage is not None and meter.usage.output_tokens == 9


def test_input_counts_in_message_delta_replace_those_of_message_start() -> None:
    meter = metered("anthropic_messages", anthropic_stream(0, ANTHROPIC_START, [
        {"input_tokens": 50, "cache_read_input_tokens": 0, "output_tokens": 2}]))
    assert meter.usage == Usage(input_tokens=50, output_tokens=2, cached_tokens=0)


def test_a_message_delta_without_usage_is_not_final_usage() -> None:
    meter = metered("anthropic_messages", anthropic_stream(4, None, [{}]))
    assert not meter.final_usage_seen
    assert meter.input_tokens == 0 and meter.content_events == 4


# --- framing --------------------------------------------------------------------------------------


def test_crlf_framed_events_are_metered_alike() -> None:
    lf = anthropic_stream(3, ANTHROPIC_START, [{"output_tokens": 3}])
    crlf = [event.replace(b"\n", b"\r\n") for event in lf]
    assert reading(metered("anthropic_messages", crlf)) == reading(
        metered("anthropic_messages", lf))


def test_an_event_whose_json_spans_several_data_lines_is_read_whole() -> None:
    event = (b"event: message_delta\n"
             b'data: {"type": "message_delta",\n'
             b'data:  "usage": {"output_tokens": 11}}\n\n')
    meter = metered("anthropic_messages", [event])
    assert meter.final_usage_seen and meter.usage is not None
    assert meter.usage.output_tokens == 11


def test_a_protocol_without_stream_usage_meters_nothing() -> None:
    meter = metered("plain", chat_stream(3, CHAT_USAGE))
    assert reading(meter) == (None, 0, 0, False)


# --- any chunking, the same figures ---------------------------------------------------------------


def cut(stream: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(c % (len(stream) + 1) for c in cuts), len(stream)]
    return [stream[a:b] for a, b in itertools.pairwise(points)]


def any_stream(protocol: str, words: int, with_usage: bool) -> list[bytes]:
    if protocol == "openai_chat":
        return chat_stream(words, CHAT_USAGE if with_usage else None)
    if protocol == "openai_responses":
        return responses_stream(words, RESPONSES_USAGE if with_usage else None)
    return anthropic_stream(words, ANTHROPIC_START if with_usage else None,
                            [{"output_tokens": words}] if with_usage else [{}])


@FAST
@given(protocol=st.sampled_from(["openai_chat", "openai_responses", "anthropic_messages"]),
       words=st.integers(min_value=0, max_value=30), with_usage=st.booleans(),
       crlf=st.booleans(), cuts=st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_of_a_stream_meters_the_same(
        protocol: str, words: int, with_usage: bool, crlf: bool, cuts: list[int]) -> None:
    events = any_stream(protocol, words, with_usage)
    if crlf:
        events = [event.replace(b"\n", b"\r\n") for event in events]
    whole = metered(protocol, events)
    relayed = metered_as_relayed(protocol, cut(b"".join(events), cuts))
    assert reading(relayed) == reading(whole)
    assert relayed.content_events == words
    assert relayed.final_usage_seen is with_usage


@FAST
@given(counts=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=8)
       .map(sorted))
def test_the_last_cumulative_message_delta_is_the_output(counts: list[int]) -> None:
    meter = metered("anthropic_messages", anthropic_stream(
        0, ANTHROPIC_START, [{"output_tokens": n} for n in counts]))
    assert meter.usage == Usage(input_tokens=40, output_tokens=counts[-1], cached_tokens=7)


# --- missing usage: the estimate ------------------------------------------------------------------


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy([DEFAULT_POLICY], {})


def call_for(policy: Policy, path: str, body: bytes, output_limit: int | None) -> Call:
    route = policy.match("POST", path)
    assert route is not None
    return Call(request_id="req_unit", method="POST", path=path, route=route,
                caller=Caller("acct_unit", "payg"), body=body, parsed=None, model=None,
                stream=True, estimate=0, started=0.0, output_limit=output_limit)


def test_reported_usage_wins_over_the_estimate_and_the_output_limit(policy: Policy) -> None:
    call = call_for(policy, "/v1/chat/completions", b"x" * 400, output_limit=2)
    meter = metered("openai_chat", chat_stream(3, CHAT_USAGE))
    assert running_usage(call, meter) == meter.usage


def test_without_usage_input_comes_from_the_body_size_and_output_from_content_events(
        policy: Policy) -> None:
    call = call_for(policy, "/v1/chat/completions", b"x" * 401, output_limit=None)
    meter = metered("openai_chat", chat_stream(7, None))
    assert running_usage(call, meter) == Usage(input_tokens=401 // BYTES_PER_TOKEN,
                                               output_tokens=7)


def test_the_estimate_never_counts_more_output_than_the_request_allowed(policy: Policy) -> None:
    call = call_for(policy, "/v1/responses", b"x" * 40, output_limit=5)
    meter = metered("openai_responses", responses_stream(12, None))
    assert running_usage(call, meter) == Usage(input_tokens=10, output_tokens=5)


def test_an_anthropic_estimate_takes_its_input_from_message_start(policy: Policy) -> None:
    call = call_for(policy, "/v1/messages", b"x" * 4000, output_limit=None)
    meter = metered("anthropic_messages", anthropic_stream(6, ANTHROPIC_START, [{}]))
    assert not meter.final_usage_seen
    assert running_usage(call, meter) == Usage(input_tokens=40, output_tokens=6)


def test_an_anthropic_stream_cut_before_message_delta_is_estimated(policy: Policy) -> None:
    call = call_for(policy, "/v1/messages", b"x" * 4000, output_limit=None)
    meter = metered("anthropic_messages", anthropic_stream(6, ANTHROPIC_START, [])[:5])
    assert running_usage(call, meter) == Usage(input_tokens=40, output_tokens=2)
