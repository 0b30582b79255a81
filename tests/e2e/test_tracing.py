"""Issue 13 item 5: with tracing on, a proxied call is one trace — a server span with
`admission`, upstream (GenAI client span) and `settlement` children carrying the model, the
token usage and the charge; a 402 stops at admission. With tracing off nothing is traced."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from tests.e2e.helpers import chat_body
from tests.fakes.upstream import FakeUpstream, prompt_tokens_for
from tests.in_process import in_process_gateway
from tests.support import TEST_POLICY

CHAT = "/v1/chat/completions"
CALLER_TRACE = "0af7651916cd43dd8421c44e4f3c1a57"
TRACEPARENT = f"00-{CALLER_TRACE}-b7ad6b7169203331-01"


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [s.name for s in spans]
    return named


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def assert_child(child: ReadableSpan, parent: ReadableSpan) -> None:
    assert child.parent is not None and parent.context is not None
    assert child.parent.span_id == parent.context.span_id
    assert child.context is not None and child.context.trace_id == parent.context.trace_id


async def test_a_buffered_call_is_traced_with_admission_upstream_and_settlement(
        tmp_path: Path, upstream_env: dict[str, str]) -> None:
    exporter = InMemorySpanExporter()
    async with in_process_gateway(tmp_path, upstream_env, span_exporter=exporter) as gw:
        account, key = await gw.funded(60_000)
        body = chat_body("trace me", max_tokens=7)
        r = await gw.client.post(CHAT, json=body, headers={"authorization": f"Bearer {key}",
                                                           "traceparent": TRACEPARENT})
        assert r.status_code == 200
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"POST /v1/chat/completions", "admission", "chat gpt-fake",
                          "settlement"}
    server, admission = spans["POST /v1/chat/completions"], spans["admission"]
    upstream, settlement = spans["chat gpt-fake"], spans["settlement"]
    # the caller's trace is continued
    assert server.context is not None and f"{server.context.trace_id:032x}" == CALLER_TRACE
    assert server.kind is SpanKind.SERVER and upstream.kind is SpanKind.CLIENT
    for child in (admission, upstream, settlement):
        assert_child(child, server)
    assert attrs(server)["gateway.account_id"] == account
    assert attrs(server)["http.response.status_code"] == 200
    assert key not in orjson.dumps([attrs(s) for s in spans.values()]).decode()

    assert attrs(admission)["gateway.admission.outcome"] == "admitted"
    assert attrs(admission)["gateway.hold.ledger_units"] > 0
    assert attrs(admission)["gateway.unit"] == "s"

    input_tokens = prompt_tokens_for(body)
    assert attrs(upstream).items() >= {
        "gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-fake", "http.response.status_code": 200,
        "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": 7}.items()
    # the test policy: 1 ms per input token, 2 per output token
    charge = input_tokens + 2 * 7
    assert attrs(settlement).items() >= {
        "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": 7,
        "gateway.charge.ledger_units": charge, "gateway.charge.amount": str(charge / 1000),
        "gateway.unit": "s", "gateway.unbilled.ledger_units": 0,
        "gateway.usage.source": "upstream"}.items()
    assert r.headers["x-gateway-charged-ms"] == str(charge)
    # ordered in time: admission, then the upstream, then settlement
    assert admission.end_time is not None and upstream.start_time is not None
    assert admission.end_time <= upstream.start_time
    assert upstream.end_time is not None and settlement.start_time is not None
    assert upstream.end_time <= settlement.start_time


async def test_a_stream_is_settled_after_its_upstream_span_ends(
        tmp_path: Path, upstream_env: dict[str, str]) -> None:
    exporter = InMemorySpanExporter()
    async with in_process_gateway(tmp_path, upstream_env, span_exporter=exporter) as gw:
        _account, key = await gw.funded(60_000)
        body = chat_body("stream me", max_tokens=5, stream=True)
        r = await gw.client.post(CHAT, json=body, headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200 and b"data: [DONE]" in r.content
    spans = by_name(exporter.get_finished_spans())
    server, upstream, settlement = (spans["POST /v1/chat/completions"], spans["chat gpt-fake"],
                                    spans["settlement"])
    assert server.parent is None  # no traceparent: a new trace
    for child in (spans["admission"], upstream, settlement):
        assert_child(child, server)
    assert attrs(upstream)["gateway.streamed"] is True
    assert attrs(upstream)["gen_ai.usage.output_tokens"] == 5
    charge = prompt_tokens_for(body) + 2 * 5
    assert attrs(settlement)["gateway.charge.ledger_units"] == charge
    assert attrs(settlement)["gateway.outcome"] == "ok"
    assert upstream.end_time is not None and settlement.start_time is not None
    assert upstream.end_time <= settlement.start_time


async def test_a_402_is_traced_as_a_refused_admission_without_an_upstream_span(
        tmp_path: Path, upstream_env: dict[str, str], upstream: FakeUpstream) -> None:
    exporter = InMemorySpanExporter()
    async with in_process_gateway(tmp_path, upstream_env, span_exporter=exporter) as gw:
        _account, key = await gw.funded(0)
        r = await gw.client.post(CHAT, json=chat_body(),
                                 headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 402
    spans = by_name(exporter.get_finished_spans())
    assert set(spans) == {"POST /v1/chat/completions", "admission"}
    admission = spans["admission"]
    assert attrs(admission)["gateway.admission.outcome"] == "payment_required"
    assert attrs(admission)["http.response.status_code"] == 402
    assert admission.status.status_code is not StatusCode.ERROR
    assert attrs(spans["POST /v1/chat/completions"])["http.response.status_code"] == 402
    assert not upstream.requests.snapshot()


async def test_an_upstream_error_marks_the_upstream_span_failed(
        tmp_path: Path, upstream_env: dict[str, str]) -> None:
    exporter = InMemorySpanExporter()
    async with in_process_gateway(tmp_path, upstream_env, span_exporter=exporter) as gw:
        _account, key = await gw.funded(60_000)
        r = await gw.client.post(CHAT, json=chat_body(model="gpt-fake-fail500"),
                                 headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 500
    upstream = by_name(exporter.get_finished_spans())["chat gpt-fake-fail500"]
    assert upstream.status.status_code is StatusCode.ERROR
    assert attrs(upstream)["error.type"] == "500"


@pytest.mark.parametrize("forwarded", [False, True])
async def test_traceparent_reaches_the_upstream_only_when_the_allow_list_forwards_it(
        tmp_path: Path, upstream_env: dict[str, str], upstream: FakeUpstream,
        forwarded: bool) -> None:
    policy = tmp_path / "policies.yaml"
    names = "[x-trace-id, traceparent]" if forwarded else "[x-trace-id]"
    policy.write_text(TEST_POLICY.read_text().replace("forward_headers: [x-trace-id]",
                                                      f"forward_headers: {names}", 1))
    exporter = InMemorySpanExporter()
    async with in_process_gateway(tmp_path, upstream_env, policy,
                                  span_exporter=exporter) as gw:
        _account, key = await gw.funded(60_000)
        r = await gw.client.post(CHAT, json=chat_body(), headers={
            "authorization": f"Bearer {key}", "traceparent": TRACEPARENT})
        assert r.status_code == 200
    sent = upstream.requests.snapshot()[-1]["headers"]
    if not forwarded:
        assert "traceparent" not in sent
        return
    span = by_name(exporter.get_finished_spans())["chat gpt-fake"]
    assert span.context is not None
    # the gateway's upstream span, not the caller's parent, in the caller's trace
    assert sent["traceparent"] == f"00-{CALLER_TRACE}-{span.context.span_id:016x}-01"


async def test_tracing_off_installs_no_provider_and_makes_no_spans(
        tmp_path: Path, upstream_env: dict[str, str]) -> None:
    async with in_process_gateway(tmp_path, upstream_env) as gw:
        assert gw.app.tracing is None and gw.services.tracing is None
        _account, key = await gw.funded(60_000)
        r = await gw.client.post(CHAT, json=chat_body(),
                                 headers={"authorization": f"Bearer {key}"})
        assert r.status_code == 200


async def test_the_standard_variables_turn_tracing_on(
        tmp_path: Path, upstream_env: dict[str, str]) -> None:
    env = {**upstream_env, "OTEL_TRACES_EXPORTER": "console"}  # no call: nothing printed
    async with in_process_gateway(tmp_path, env) as gw:
        assert gw.services.tracing is not None
        resource = gw.services.tracing.provider.resource
        assert resource.attributes["service.name"] == "ai-metering-gateway"


async def test_a_client_leaving_mid_stream_ends_the_upstream_span_before_settlement(
        tmp_path: Path, upstream_env: dict[str, str]) -> None:
    exporter = InMemorySpanExporter()
    async with in_process_gateway(tmp_path, upstream_env, span_exporter=exporter) as gw:
        _account, key = await gw.funded(60_000)
        raw = orjson.dumps(chat_body("a long story", max_tokens=100, model="gpt-fake-slow",
                                     stream=True))
        first_event = asyncio.Event()
        messages = [{"type": "http.request", "body": raw, "more_body": False}]

        async def receive() -> dict[str, Any]:
            if messages:
                return messages.pop()
            await first_event.wait()  # the client leaves once the stream has begun
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                first_event.set()

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "POST", "scheme": "http", "path": CHAT, "raw_path": CHAT.encode(),
                 "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
                 "server": ("gateway.test", 80),
                 "headers": [(b"authorization", f"Bearer {key}".encode()),
                             (b"content-type", b"application/json"),
                             (b"content-length", str(len(raw)).encode())]}
        await gw.app(scope, receive, send)
    spans = by_name(exporter.get_finished_spans())
    upstream, settlement = spans["chat gpt-fake-slow"], spans["settlement"]
    assert attrs(upstream)["gateway.outcome"] == "client_disconnected"
    assert upstream.status.status_code is not StatusCode.ERROR
    assert attrs(settlement)["gateway.outcome"] == "client_disconnected"
    assert 0 < attrs(settlement)["gateway.charge.ledger_units"] < prompt_tokens_for(
        orjson.loads(raw)) + 2 * 100
    assert upstream.end_time is not None and settlement.start_time is not None
    assert upstream.end_time <= settlement.start_time
