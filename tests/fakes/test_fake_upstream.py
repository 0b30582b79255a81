"""The fake upstream speaks the wire formats the official SDKs expect.

The SDKs are pointed directly at the fake (no gateway involved). Sync clients,
no retries, so failures surface immediately.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import anthropic
import httpx
import openai
import pytest

from .upstream import FakeUpstream, embedding_for, output_text_for, prompt_tokens_for

PROMPT = "Say hello to the metering gateway, please."  # 42 chars -> 10 + 10 = 20 tokens


@pytest.fixture(scope="module")
def up() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(up: FakeUpstream) -> None:
    up.clear()
    up.delay_ms = 0


@pytest.fixture()
def oai(up: FakeUpstream) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=up.url + "/v1", api_key="test", max_retries=0, timeout=5.0)
    yield client
    client.close()


@pytest.fixture()
def ant(up: FakeUpstream) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=up.url, api_key="test", max_retries=0, timeout=5.0)
    yield client
    client.close()


def _chat_body(model: str = "gpt-4o-mini", **extra: object) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], **extra}


def test_prompt_token_formula() -> None:
    assert prompt_tokens_for({"messages": [{"role": "user", "content": PROMPT}]}) == 20
    body = {
        "system": [{"type": "text", "text": "abcd"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "efgh"}, {"type": "image"}]}
        ],
    }
    assert prompt_tokens_for(body) == 12
    assert (
        prompt_tokens_for({"instructions": "abcd", "input": [{"role": "user", "content": "efgh"}]})
        == 12
    )
    assert prompt_tokens_for({"input": ["abcd", "efgh"]}) == 12
    assert prompt_tokens_for({}) == 10


def test_chat_non_stream(up: FakeUpstream, oai: openai.OpenAI) -> None:
    resp = oai.chat.completions.create(**_chat_body(max_tokens=5))
    assert resp.choices[0].message.content == output_text_for(5)
    assert resp.choices[0].finish_reason == "stop"
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
        20,
        5,
        25,
    )
    assert resp.usage.prompt_tokens_details.cached_tokens == 0
    rec = up.requests[-1]
    assert (rec["method"], rec["path"]) == ("POST", "/v1/chat/completions")
    assert rec["headers"]["authorization"] == "Bearer test"
    assert rec["json"]["max_tokens"] == 5


def test_chat_stream_without_usage(oai: openai.OpenAI) -> None:
    chunks = list(oai.chat.completions.create(**_chat_body(), stream=True))
    assert [c.usage for c in chunks] == [None] * len(chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == output_text_for(20)
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_chat_stream_include_usage(up: FakeUpstream, oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        **_chat_body("gpt-4o-mini-paced", max_tokens=3),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert len(chunks) == 1 + 3 + 1 + 1
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == []
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (20, 3)
    assert up.requests[-1]["json"]["stream_options"] == {"include_usage": True}


def test_chat_stream_nousage_ignores_include_usage(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        **_chat_body("gpt-4o-nousage", max_tokens=2),
        stream=True,
        stream_options={"include_usage": True},
    )
    assert all(c.usage is None and c.choices for c in stream)


def test_responses_non_stream(oai: openai.OpenAI) -> None:
    resp = oai.responses.create(model="gpt-4.1", input=PROMPT, max_output_tokens=7)
    assert resp.status == "completed"
    assert resp.output_text == output_text_for(7)
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.total_tokens) == (
        20,
        7,
        27,
    )


def test_responses_stream_events(oai: openai.OpenAI) -> None:
    events = list(
        oai.responses.create(model="gpt-4.1", input=PROMPT, max_output_tokens=2, stream=True)
    )
    assert [e.type for e in events] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert events[-1].response.usage.output_tokens == 2


def test_responses_stream_helper_final_response(oai: openai.OpenAI) -> None:
    with oai.responses.stream(
        model="gpt-4.1", input=[{"role": "user", "content": PROMPT}]
    ) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == final.output_text == output_text_for(20)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (20, 20)


def test_embeddings_default_base64_and_float(up: FakeUpstream, oai: openai.OpenAI) -> None:
    resp = oai.embeddings.create(model="text-embedding-3-small", input=["abcd", "efgh"])
    assert up.requests[-1]["json"]["encoding_format"] == "base64"
    assert [d.index for d in resp.data] == [0, 1]
    assert resp.data[1].embedding == embedding_for("efgh", 8)
    assert (resp.usage.prompt_tokens, resp.usage.total_tokens) == (12, 12)
    floats = oai.embeddings.create(model="m", input="abcd", encoding_format="float", dimensions=40)
    assert floats.data[0].embedding == embedding_for("abcd", 40)


def test_anthropic_non_stream(up: FakeUpstream, ant: anthropic.Anthropic) -> None:
    msg = ant.messages.create(
        model="claude-fake", max_tokens=4, messages=[{"role": "user", "content": PROMPT}]
    )
    assert msg.content[0].text == output_text_for(4)
    assert msg.stop_reason == "end_turn"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (20, 4)
    assert msg.usage.cache_read_input_tokens == 0
    headers = up.requests[-1]["headers"]
    assert up.requests[-1]["path"] == "/v1/messages"
    # anthropic SDK 2.x sends api_key as "authorization: Bearer"; older ones used x-api-key.
    assert "test" in (
        headers.get("x-api-key"),
        headers.get("authorization", "").removeprefix("Bearer "),
    )
    assert "anthropic-version" in headers


def test_anthropic_stream_final_message(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(
        model="claude-fake-paced",
        max_tokens=6,
        system="abcd",
        messages=[{"role": "user", "content": PROMPT}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == final.content[0].text == output_text_for(6)
    assert (final.usage.input_tokens, final.usage.output_tokens) == (21, 6)
    assert final.stop_reason == "end_turn"


def test_failure_knobs(oai: openai.OpenAI, ant: anthropic.Anthropic) -> None:
    with pytest.raises(openai.RateLimitError) as rate:
        oai.chat.completions.create(**_chat_body("gpt-4o-fail429"))
    assert rate.value.body["code"] == "rate_limit_exceeded"
    with pytest.raises(anthropic.InternalServerError) as err:
        ant.messages.create(
            model="claude-fail500", max_tokens=1, messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.body["error"]["type"] == "api_error"
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(**_chat_body("gpt-4o-reset"))


def test_midreset_stream_breaks_after_some_chunks(oai: openai.OpenAI) -> None:
    got: list[str] = []
    with pytest.raises((openai.APIConnectionError, httpx.TransportError)):
        for chunk in oai.chat.completions.create(
            **_chat_body("gpt-4o-midreset", max_tokens=6), stream=True
        ):
            got.append(chunk.choices[0].delta.content or "")
    assert "".join(got) == output_text_for(3)


def test_delay_ms_and_unprefixed_path(up: FakeUpstream) -> None:
    up.delay_ms = 100
    start = time.monotonic()
    resp = httpx.post(up.url + "/chat/completions", json=_chat_body(max_tokens=1), timeout=5)
    assert resp.status_code == 200 and time.monotonic() - start >= 0.1
    assert up.wait_for_requests(1)[0]["path"] == "/chat/completions"
    assert httpx.get(up.url + "/health").status_code == 200


def test_stop_is_quick_with_hanging_request() -> None:
    server = FakeUpstream().start()
    errors: list[BaseException] = []

    def call() -> None:
        try:
            httpx.post(
                server.url + "/v1/chat/completions", json=_chat_body("gpt-4o-hang"), timeout=10
            )
        except httpx.TransportError as exc:
            errors.append(exc)

    caller = threading.Thread(target=call)
    caller.start()
    server.wait_for_requests(1)
    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 1.0
    caller.join(timeout=2)
    assert len(errors) == 1


@pytest.mark.parametrize("knob", ["usagedelta", "usagefinish"])
def test_usage_shapes_on_chunks_with_choices(oai: openai.OpenAI, knob: str) -> None:
    chunks = list(oai.chat.completions.create(
        **_chat_body(f"gpt-4o-{knob}", max_tokens=3), stream=True,
        stream_options={"include_usage": True}))
    [carrier] = [c for c in chunks if c.usage is not None]
    assert (carrier.usage.prompt_tokens, carrier.usage.completion_tokens) == (20, 3)
    [choice] = carrier.choices
    if knob == "usagedelta":
        assert carrier is chunks[-1] and choice.finish_reason is None
        assert choice.delta.content is None and choice.delta.role is None
    else:
        assert choice.finish_reason == "stop" and carrier is chunks[-1]
    plain = list(oai.chat.completions.create(**_chat_body(f"gpt-4o-{knob}", max_tokens=3),
                                             stream=True))
    assert all(c.usage is None for c in plain)  # only when asked for, as without the knob


def test_a_client_leaving_before_the_response_is_recorded(up: FakeUpstream) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(up.url + "/v1/chat/completions", json=_chat_body("gpt-4o-hang"), timeout=0.3)
    [gone] = up.disconnects.wait_for(1)
    assert (gone["path"], gone["model"]) == ("/v1/chat/completions", "gpt-4o-hang")
    # answered calls, and connections the fake itself cuts, are no disconnects
    httpx.post(up.url + "/v1/chat/completions", json=_chat_body(max_tokens=1), timeout=5)
    with pytest.raises(httpx.TransportError):
        httpx.post(up.url + "/v1/chat/completions", json=_chat_body("gpt-4o-reset"), timeout=5)
    assert len(up.wait_for_requests(3)) == 3
    assert len(up.disconnects.snapshot()) == 1
