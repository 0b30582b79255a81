"""OpenTelemetry spans of proxied calls (issue 13), when tracing is on (gateway.tracing_config).

One trace per proxied call, continuing the caller's W3C `traceparent` when it sent one:

    {METHOD} {route path}        server: http.route, gateway.operation, gateway.account_id, status
    ├── admission                gateway.admission.outcome admitted | unbilled | payment_required,
    │                            gateway.hold.ledger_units, gateway.unit (`s`, `USD`, `tokens`)
    ├── {operation} {model}      client: gen_ai.* request attributes, http status; ends when the
    │                            response (or stream) ends, the client leaves, or it fails
    └── settlement               gen_ai.usage.*, gateway.charge.ledger_units,
                                 gateway.charge.amount (decimal, in gateway.unit),
                                 gateway.unbilled.*, gateway.usage.source

Attribute names: OpenTelemetry semantic conventions for GenAI client spans and HTTP spans;
the `gateway.*` names are the gateway's own. The API key is never recorded, only its account.

Cost when off: nothing here runs — the proxy checks `services.tracing is None`
(a measured figure is in the README). The SDK is imported only when tracing starts, so the
gateway runs without the `otel` extra installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from gateway import __version__
from gateway.problems import GatewayError
from gateway.settings import SettingsError
from gateway.tracing_config import TracingConfig

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span

    from gateway.auth import Caller
    from policies.compiled import Route
    from policies.meters import Usage
    from storage.ports import Admission, Settlement

# gen_ai.provider.name and gen_ai.operation.name per protocol (GenAI semantic conventions);
# a `plain` route is named after its upstream and operation
_PROVIDERS = {"openai_chat": "openai", "openai_responses": "openai",
              "openai_embeddings": "openai", "anthropic_messages": "anthropic"}
_OPERATIONS = {"openai_chat": "chat", "openai_responses": "chat",
               "openai_embeddings": "embeddings", "anthropic_messages": "chat"}
_PROPAGATION = (b"traceparent", b"tracestate")


class Call(Protocol):
    """What the spans read of a proxied call (gateway.proxy.settlement.Call, which imports
    the services that hold this module: a protocol keeps the import graph acyclic)."""

    request_id: str
    caller: Caller
    route: Route
    model: str | None
    stream: bool
    estimate: int
    output_limit: int | None
    hold: Admission | None
    trace: Any


Serve = Callable[[dict[str, Any], Any, Any, "Route"], Awaitable[None]]


def start_tracing(config: TracingConfig, exporter: SpanExporter | None = None) -> CallTracing:
    """A tracer provider exporting to `config.exporters` (batched, in the background) and to
    `exporter` when given (synchronously: tests). The SDK reads the sampler, resource, and
    exporter options from the environment itself. Raises SettingsError when the SDK or the
    OTLP exporter is not installed."""
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            ConsoleSpanExporter,
            SimpleSpanProcessor,
        )
    except ImportError:
        raise SettingsError("tracing is configured (OTEL_*) but the OpenTelemetry SDK is not "
                            "installed: pip install 'ai-metering-gateway[otel]'") from None
    name = config.service_name
    provider = TracerProvider(resource=Resource.create({"service.name": name} if name else None))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    for kind in config.exporters:
        if kind == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    return CallTracing(provider)


def require_sdk(config: TracingConfig) -> None:
    """Raise SettingsError (naming the extra to install) when tracing is configured but the
    SDK, or the OTLP exporter it names, is not installed: `gateway serve` checks this before
    starting workers."""
    start_tracing(TracingConfig(exporters=(), service_name=None)).provider.shutdown()
    if "otlp" in config.exporters:
        _otlp_exporter().shutdown()


def _otlp_exporter() -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise SettingsError("OTEL_TRACES_EXPORTER=otlp needs the OTLP exporter: pip install "
                            "'ai-metering-gateway[otel]'") from None
    return OTLPSpanExporter()


class CallTracing:
    """The spans of proxied calls, on one tracer provider (one per process, made in the app's
    lifespan and shut down there)."""

    def __init__(self, provider: TracerProvider) -> None:
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self._trace = trace
        self._tracer = provider.get_tracer("gateway.proxy", __version__)
        self._propagator = TraceContextTextMapPropagator()

    async def shutdown(self) -> None:
        """Flush the batched spans and stop the exporters (blocking work, off the loop)."""
        await asyncio.to_thread(self.provider.shutdown)

    async def call(self, serve: Serve, scope: dict[str, Any], receive: Any, send: Any,
                   route: Route) -> None:
        """Run `serve` (the proxy) inside the call's server span, child of the caller's
        `traceparent` when valid; records the response status."""
        carrier = {k.decode("latin-1"): v.decode("latin-1")
                   for k, v in scope["headers"] if k in _PROPAGATION}
        parent = self._propagator.extract(carrier) if carrier else None
        method = scope["method"]
        span = self._tracer.start_span(
            f"{method} {route.spec.path}", context=parent, kind=self._trace.SpanKind.SERVER,
            attributes={"http.request.method": method, "http.route": route.spec.path,
                        "url.path": scope["path"], "gateway.operation": route.operation})
        status = 0

        async def recording_send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        with self._trace.use_span(span, end_on_exit=True):
            try:
                await serve(scope, receive, recording_send, route)
            finally:
                if status:
                    span.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        span.set_status(self._trace.StatusCode.ERROR)

    async def admission(self, call: Call, admitting: Awaitable[None]) -> None:
        """Await `admitting` (the proxy's admission of `call`) inside the `admission` span; a
        402 is recorded as outcome `payment_required`, not as an error."""
        self._trace.get_current_span().set_attributes({
            "gateway.account_id": call.caller.account_id, "gateway.request_id": call.request_id})
        attributes: dict[str, Any] = {"gateway.hold.requested_ledger_units": call.estimate,
                                      "gateway.unit": call.route.meter.unit.api_name}
        with self._tracer.start_as_current_span("admission", attributes=attributes,
                                                record_exception=False,
                                                set_status_on_exception=False) as span:
            try:
                await admitting
            except GatewayError as err:
                span.set_attribute("http.response.status_code", err.status)
                if err.status == 402:
                    span.set_attribute("gateway.admission.outcome", "payment_required")
                else:
                    span.set_attribute("gateway.admission.outcome", "refused")
                    span.set_status(self._trace.StatusCode.ERROR, err.detail)
                raise
            if call.hold is not None:
                span.set_attributes({"gateway.admission.outcome": "admitted",
                                     "gateway.hold.ledger_units": call.hold.amount})
            else:
                span.set_attribute("gateway.admission.outcome", "unbilled")

    def upstream_started(self, call: Call, headers: list[tuple[str, str]]) -> None:
        """Open the upstream (client) span of `call`; `settlement` ends it. When the route's
        allow-list forwards `traceparent`, the caller's value in `headers` is replaced by this
        span's, so the upstream's spans hang under the gateway's; otherwise nothing is added
        (the allow-list decides what an upstream sees, policies/headers.py)."""
        protocol = call.route.spec.protocol
        provider = _PROVIDERS.get(protocol, call.route.upstream.name)
        operation = _OPERATIONS.get(protocol, call.route.operation)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation, "gen_ai.provider.name": provider,
            "gen_ai.system": provider, "gateway.upstream": call.route.upstream.name,
            "gateway.streamed": call.stream}
        if call.model is not None:
            attributes["gen_ai.request.model"] = call.model
        if call.output_limit is not None:
            attributes["gen_ai.request.max_tokens"] = call.output_limit
        span = self._tracer.start_span(f"{operation} {call.model or ''}".rstrip(),
                                       kind=self._trace.SpanKind.CLIENT, attributes=attributes)
        call.trace = span
        if _PROPAGATION[0] in call.route.forward.names:
            headers[:] = [(k, v) for k, v in headers if k not in ("traceparent", "tracestate")]
            carrier: dict[str, str] = {}
            self._propagator.inject(carrier, self._trace.set_span_in_context(span))
            headers.extend(carrier.items())

    async def settlement(self, call: Call, status: int | None, usage: Usage | None, source: str,
                         charge: int, outcome: str,
                         settling: Awaitable[Settlement | None]) -> Settlement | None:
        """End the upstream span (status, usage), then await `settling` (the settlement of
        `call`) inside the `settlement` span; returns its result."""
        tokens: dict[str, Any] = {} if usage is None else {
            "gen_ai.usage.input_tokens": usage.input_tokens,
            "gen_ai.usage.output_tokens": usage.output_tokens}
        if call.trace is not None:
            self._end_upstream(call.trace, status, tokens, outcome)
            call.trace = None
        unit = call.route.meter.unit
        attributes = {**tokens, "gateway.usage.source": source, "gateway.outcome": outcome,
                      "gateway.unit": unit.api_name}
        with self._tracer.start_as_current_span("settlement", attributes=attributes) as span:
            result = await settling
            charged = charge if result is None else result.charged
            span.set_attributes({
                "gateway.charge.ledger_units": charged,
                "gateway.charge.amount": unit.to_text(charged),
                "gateway.unbilled.ledger_units": charge if result is None else result.unbilled})
            if result is None:
                span.set_attribute("gateway.unbilled.reason", "store_unavailable")
        return result

    def _end_upstream(self, span: Span, status: int | None, tokens: dict[str, Any],
                      outcome: str) -> None:
        span.set_attributes(tokens)
        if status is not None:
            span.set_attribute("http.response.status_code", status)
        error = str(status) if status is not None and status >= 400 else (
            None if outcome in ("ok", "cut", "client_disconnected") else outcome)
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(self._trace.StatusCode.ERROR)
        elif outcome != "ok":
            span.set_attribute("gateway.outcome", outcome)
        span.end()
