"""The proxied call (SPEC §6–§7): authenticate, match, admit (hold or 402), forward, meter,
settle, respond. A plain ASGI callable; the streaming half lives in `gateway.proxy.relay`, the
charge rules and settlement in `gateway.proxy.settlement`.

Order of checks, each answered by a problem document that writes nothing:
401 (key) → 413 (body size) → 400 (JSON, output limit, unpriced model, resume-token format) →
422 (token bound to another request) → 503 (store down, fail mode `deny`) → 402 (short balance).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import orjson

from gateway.auth import key_from_headers
from gateway.problems import (
    BadRequest,
    GatewayError,
    MalformedJson,
    MalformedResumeToken,
    ResumeTokenMismatch,
    StoreUnavailableProblem,
    Unauthorized,
    UnpricedModel,
    UpstreamTimeout,
    UpstreamUnavailable,
    base_url_for,
    send_problem,
)
from gateway.proxy.costs import END_USER_HEADER, call_budget, end_user_of
from gateway.proxy.disconnects import DisconnectWatch
from gateway.proxy.forwarding import (
    ClientDisconnected,
    declared_length,
    downstream_headers,
    read_body,
    upstream_headers,
)
from gateway.proxy.payment_challenge import origin_of, payment_challenge, purchase_request
from gateway.proxy.payment_required import insufficient_balance
from gateway.proxy.relay import relay_stream
from gateway.proxy.resume import request_binding, well_formed
from gateway.proxy.settlement import (
    Call,
    charge_for,
    charge_headers,
    failure_charge,
    settle,
    settle_after_error,
)
from gateway.proxy.upstream import UpstreamFailure, UpstreamResponse
from gateway.proxy.usage import as_usage, token_usage_from_json
from gateway.services import Services
from policies import meters
from policies.compiled import Route
from policies.estimates import InvalidOutputLimit, output_limit
from policies.meters import Usage
from storage.clock import MS_PER_SECOND
from storage.ids import new_sequential_id
from storage.ports import Admission, Shortfall, StoreUnavailable, TokenRecord

log = logging.getLogger("gateway.proxy")


def new_request_id() -> str:
    """`req_` + a per-process random tag + a counter: unique across processes and restarts;
    the request id, also the operation id of a 402."""
    return new_sequential_id("req")


class Proxy:
    """ASGI app serving every policy route; `services.policy` is read per request."""

    def __init__(self, services: Services) -> None:
        self.s = services
        # HMAC key of the 402's payment challenge ids: the configured one, else this process's
        self.challenge_key = (services.settings.payment_challenge_secret
                              or secrets.token_urlsafe(32)).encode()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any, route: Route) -> None:
        request_id = new_request_id()
        started = False

        async def tracking_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            try:
                await self._handle(scope, receive, tracking_send, route, request_id)
            except StoreUnavailable as exc:  # token store or ledger down outside admission
                self.s.metrics.store_errors.labels("proxy").inc()
                raise StoreUnavailableProblem(
                    "The billing store is unreachable; retry shortly.") from exc
            except GatewayError:
                raise
            except ClientDisconnected:  # left mid-upload: nothing admitted, nobody to answer
                self.s.metrics.requests.labels(route.operation, "499").inc()
                return
            except Exception as exc:  # the catch-all: a 500 problem, never text
                log.error("unexpected error", exc_info=exc, extra={
                    "request_id": request_id, "operation": route.operation})
                if started:  # the answer is under way: abort it (the server drops the
                    raise    # connection) rather than start a second one
                raise GatewayError(f"An unexpected error occurred; it was logged with request "
                                   f"id {request_id}.", request_id=request_id) from exc
        except GatewayError as err:
            if started:  # too late for a problem document; the connection is dropped
                log.error("error after the response started", extra={
                    "request_id": request_id, "status": err.status, "detail": err.detail})
                raise
            base = base_url_for(self.s.settings)
            instance = f"urn:op:{request_id}"
            op_id = getattr(err, "operation_id", request_id)
            headers = [(b"x-request-id", request_id.encode()),
                       (b"x-gateway-operation", route.operation.encode())]
            await send_problem(send, err, base, f"urn:op:{op_id}" if err.status == 402
                               else instance, headers)
            self.s.metrics.requests.labels(route.operation, str(err.status)).inc()
            if err.status == 402:
                self.s.metrics.payment_required.labels(route.operation).inc()

    async def _handle(
        self, scope: dict[str, Any], receive: Any, send: Any, route: Route, request_id: str
    ) -> None:
        started = time.perf_counter()
        auth = api_key = token = length = end_user = None
        for k, v in scope["headers"]:
            if k == b"authorization":
                auth = v
            elif k == END_USER_HEADER:
                end_user = v
            elif k == b"x-api-key":
                api_key = v
            elif k == b"x-resume-token":
                token = v.decode("latin-1").strip()
            elif k == b"content-length":
                length = declared_length(v)
        key = key_from_headers(auth, api_key)
        if key is None:
            raise Unauthorized("Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key'.")
        try:
            caller = await self.s.keys.resolve(key)
        except StoreUnavailable as exc:
            self.s.metrics.store_errors.labels("auth").inc()
            raise StoreUnavailableProblem("The key store is unreachable; retry shortly.") from exc
        if caller is None:
            raise Unauthorized("Unknown or revoked API key.")

        spec = route.spec
        body = await read_body(receive, spec.max_body_bytes, length)
        parsed = _parsed_body(spec.protocol, body)
        model = parsed.get("model") if isinstance(parsed, dict) else None
        model = model if isinstance(model, str) else None
        try:
            limit = output_limit(spec.protocol, parsed)
        except InvalidOutputLimit as exc:
            raise BadRequest(str(exc)) from None
        try:
            route.meter.check_model(model)
            estimate = route.estimator.estimate(model, limit, len(body))
        except meters.UnpricedModel:
            raise UnpricedModel(
                f"Model {model!r} has no price on {spec.method} {spec.path}; it is not served."
                if model else "The request names no model; this route prices by model."
            ) from None
        call = Call(
            request_id=request_id, method=scope["method"], path=scope["path"], route=route,
            caller=caller, body=body, parsed=parsed,
            model=model, stream=isinstance(parsed, dict) and parsed.get("stream") is True,
            estimate=estimate, started=started, output_limit=limit,
            end_user=end_user_of(spec.protocol, parsed, end_user),
        )
        call.budget = call_budget(self.s.policy, caller.api_key_id, caller.limits,
                                  call.end_user)
        record = await self._check_resume_token(call, scope, token)
        if route.rate_limited:
            call.extra_headers = await self.s.limiter.admit(spec.rate_limits, caller.key_id,
                                                            caller.account_id)
        try:
            admitting = self._admit(call, record, token)
            tracing = self.s.tracing
            await (admitting if tracing is None else tracing.admission(call, admitting))
            await self._forward(call, scope, receive, send)
        except Exception:
            # Admitted (a hold, or unbilled under fail mode allow) but not settled: never leave
            # the hold leased until the route's TTL. A 402 or a store-down 503 admitted nothing.
            if not call.settled and (call.hold is not None or call.unbilled_reason is not None):
                await settle_after_error(self.s, call)
            raise

    async def _check_resume_token(
        self, call: Call, scope: dict[str, Any], token: str | None
    ) -> TokenRecord | None:
        """Validate `X-Resume-Token` (SPEC §7). Returns the live record bound to this request,
        or None (absent, or unknown/expired/used/another account's → status `invalid`)."""
        if token is None:
            return None
        if not well_formed(token):
            raise MalformedResumeToken("X-Resume-Token is not a resume token (rt_ + 22 chars).")
        record = await self.s.resume.lookup(token)
        if record is None or record.account_id != call.caller.account_id:
            call.token_status = "invalid"
            return None
        if record.binding != request_binding(scope["method"], scope["path"], call.body):
            raise ResumeTokenMismatch(
                "This resume token was issued for a different request; retry that request "
                "unchanged, or send this one without the token."
            )
        return record

    async def _admit(self, call: Call, record: TokenRecord | None, token: str | None) -> None:
        s = self.s
        route = call.route
        plan = s.policy.plans.get(call.caller.plan_key) or s.policy.plans[
            s.policy.document.default_plan]
        try:
            result = await s.ledger.admit(call.caller.account_id, call.estimate, route.operation,
                                          route.hold_ttl_s, plan, request_id=call.request_id,
                                          model=call.model, streamed=call.stream,
                                          budget=call.budget)
        except StoreUnavailable as exc:
            s.metrics.store_errors.labels("admit").inc()
            if route.spec.fail_mode == "allow":
                call.unbilled_reason = "store_unavailable"
                log.warning("store unavailable; admitting unbilled (fail mode allow)",
                            extra={"request_id": call.request_id})
                return
            raise StoreUnavailableProblem(
                "The billing store is unreachable, so the call was not sent upstream.") from exc
        if not isinstance(result, Admission):
            if record is not None and token is not None:
                record = await s.resume.lookup(token)  # a concurrent retry may have used it
            if record is not None and token is not None:
                token_out, expires, op_id = token, record.expires_at_ms, record.operation_id
            else:
                op_id = call.request_id
                token_out, expires = await s.resume.issue(
                    call.caller.account_id,
                    request_binding(call.method, call.path, call.body), op_id)
            refusal = insufficient_balance(
                result, unit=s.policy.unit, operation_id=op_id, catalog=s.policy.document.catalog,
                plan_key=call.caller.plan_key, resume_token=token_out,
                resume_expires_at_ms=expires,
            )
            if s.settings.payment_challenge:
                _add_payment_challenge(refusal, s, self.challenge_key, result, op_id, expires)
            raise refusal
        call.hold = result
        s.metrics.active_holds.inc()
        if token is not None:
            try:
                consumed = record is not None and await s.resume.consume(token)
            except StoreUnavailable:
                consumed = False  # admitted on balance alone; the token stays unused
            call.token_status = "consumed" if consumed else "invalid"

    async def _forward(self, call: Call, scope: dict[str, Any], receive: Any, send: Any) -> None:
        route = call.route
        body = call.body
        if route.spec.protocol == "openai_chat" and call.stream:
            body = _force_include_usage(call)
        upstream = route.upstream
        headers = upstream_headers(scope["headers"], route.forward, upstream.auth_header,
                                   upstream.extra_headers)
        if self.s.tracing is not None:
            self.s.tracing.upstream_started(call, headers)
        url = route.upstream_url(scope["path"], scope.get("query_string", b"").decode("latin-1"))
        t0 = time.perf_counter()
        watch = DisconnectWatch(receive)  # a client leaving cancels the wait for the upstream
        resp: UpstreamResponse | None = None
        try:
            try:
                resp = await watch.guard(
                    self.s.upstream.send(scope["method"], url, headers, body, upstream.spec))
            except UpstreamFailure as exc:
                watch.close()
                raise await self._upstream_failed(call, exc, t0) from exc
            m = self.s.metrics
            m.child(m.upstream_latency, upstream.name).observe(time.perf_counter() - t0)
            if resp.status < 400 and "text/event-stream" in resp.content_type:
                watch.close()  # the stream relay watches for itself
                await relay_stream(self.s, call, resp, t0, receive, send)
                return
            await self._respond_buffered(call, resp, t0, send, watch)
        except asyncio.CancelledError:
            if not watch.caused_cancel():
                raise
            await self._client_left(call, resp, t0)
        except Exception:
            if resp is not None:
                resp.close()  # an unexpected error: drop the upstream connection, not pool it
            raise
        finally:
            watch.close()

    async def _client_left(self, call: Call, resp: UpstreamResponse | None, t0: float) -> None:
        """The client disconnected before the upstream answered: the upstream
        request is dropped, the call settled by the route's failure rule (outcome
        `client_disconnected`, SPEC §6) and the hold released; nothing is sent."""
        if resp is not None:
            resp.close()
        duration_ms = int((time.perf_counter() - t0) * MS_PER_SECOND)
        charge = failure_charge(call, None, duration_ms)
        await settle(self.s, call, None, duration_ms, None, "none", charge, streamed=False,
                     outcome="client_disconnected")
        m = self.s.metrics
        m.child(m.requests, call.route.operation, "499").inc()

    async def _respond_buffered(
        self, call: Call, resp: UpstreamResponse, t0: float, send: Any, watch: DisconnectWatch
    ) -> None:
        route = call.route
        # The upstream has answered: its work is done (and billed to the operator), so the body
        # is read and charged as usual even if the client leaves now.
        watch.close()
        try:
            payload = await resp.read()
        except UpstreamFailure as exc:
            raise await self._upstream_failed(call, exc, t0) from exc
        duration_ms = int((time.perf_counter() - t0) * MS_PER_SECOND)
        usage: Usage | None = None
        source = "none"
        if resp.status < 400:
            call.tokens = token_usage_from_json(route.spec.protocol, payload)
            usage = None if call.tokens is None else as_usage(call.tokens)
            if usage is not None:
                source = "upstream"
            elif route.meter.kind == "tokens":
                source = "estimate"
            charge = charge_for(call, usage, duration_ms)
            outcome = "ok"
        else:
            charge = failure_charge(call, resp.status, duration_ms)
            outcome = "upstream_error"
        settlement = await settle(self.s, call, resp.status, duration_ms, usage, source, charge,
                                  streamed=False, outcome=outcome)
        headers = downstream_headers(resp.headers)
        headers.append((b"content-length", str(len(payload)).encode()))
        headers.extend(charge_headers(call, settlement))
        await send({"type": "http.response.start", "status": resp.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        m = self.s.metrics
        m.child(m.requests, route.operation, str(resp.status)).inc()
        m.child(m.overhead, route.operation).observe(
            max(0.0, (time.perf_counter() - call.started) - duration_ms / MS_PER_SECOND))

    async def _upstream_failed(
        self, call: Call, exc: UpstreamFailure, t0: float
    ) -> GatewayError:
        """Settle a call whose upstream failed; returns the 502/504 problem to raise."""
        duration_ms = int((time.perf_counter() - t0) * MS_PER_SECOND)
        kind = "timeout" if exc.timeout else "connection"
        self.s.metrics.upstream_errors.labels(call.route.upstream.name, kind).inc()
        charge = failure_charge(call, None, duration_ms)
        await settle(self.s, call, None, duration_ms, None, "none", charge,
                     streamed=call.stream, outcome=f"upstream_{kind}")
        name = call.route.upstream.name
        if exc.timeout:
            return UpstreamTimeout(f"Upstream '{name}' did not answer in time; not charged."
                                   if charge == 0 else f"Upstream '{name}' timed out.")
        # The driver's text names the upstream's host and port: for the log, not the client.
        log.warning("upstream failed", extra={"request_id": call.request_id, "upstream": name,
                                              "error": str(exc)})
        return UpstreamUnavailable(
            f"Upstream '{name}' could not be reached or broke the connection." +
            (" Not charged." if charge == 0 else ""))


def _parsed_body(protocol: str, body: bytes) -> Any:
    """The request body as JSON: a dict on every protocol but `plain`; on `plain`, whatever
    a body starting with `{` or `[` parses to, else None. Raises MalformedJson when a
    non-plain body is not a JSON object."""
    parsed: Any = None
    if protocol != "plain" or body[:1] in (b"{", b"["):
        try:
            parsed = orjson.loads(body) if body else None
        except orjson.JSONDecodeError as exc:
            if protocol != "plain":
                raise MalformedJson(f"The request body is not valid JSON: {exc}.") from None
        if protocol != "plain" and not isinstance(parsed, dict):
            raise MalformedJson("The request body must be a JSON object.")
    return parsed


def _force_include_usage(call: Call) -> bytes:
    """Chat completions stream: ask the upstream for the usage chunk (SPEC §6). Remembers
    whether the client asked itself, so an unasked-for usage chunk is stripped on the way out."""
    parsed = dict(call.parsed)
    options = parsed.get("stream_options")
    options = dict(options) if isinstance(options, dict) else {}
    call.client_wants_usage = options.get("include_usage") is True
    if call.client_wants_usage:
        return call.body
    options["include_usage"] = True
    parsed["stream_options"] = options
    return orjson.dumps(parsed)


def _add_payment_challenge(refusal: GatewayError, s: Services, key: bytes, shortfall: Shortfall,
                           operation_id: str, expires_at_ms: int) -> None:
    """Add the `WWW-Authenticate: Payment` challenge (gateway.proxy.payment_challenge) to a
    402 when the catalog has something to buy (GATEWAY_PAYMENT_CHALLENGE=true)."""
    origin = origin_of(base_url_for(s.settings))
    request = purchase_request(shortfall.required - shortfall.available,
                               s.policy.document.catalog, operation_id, origin, s.policy.unit)
    if request is not None:
        refusal.headers["www-authenticate"] = payment_challenge(key, origin, request,
                                                                expires_at_ms)
