"""Settling a metered call (SPEC §6): what it owes, debiting that and releasing its hold, the
charge headers. Shared by the buffered half (gateway.proxy.pipeline) and the SSE relay
(gateway.proxy.relay), which therefore never call back into the pipeline.

Amounts are ledger units (ms of AI time); durations are ms.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

from gateway.auth import Caller
from gateway.problems import GatewayError, StoreUnavailableProblem
from gateway.proxy.costs import cost_fields
from gateway.services import Services
from policies.compiled import Route
from policies.estimates import BYTES_PER_TOKEN
from policies.meters import Usage
from policies.provider_prices import TokenUsage
from policies.units import UnitKind
from storage.clock import MS_PER_SECOND, now_ms, to_datetime
from storage.ports import Admission, CallBudget, CallRecord, Settlement, StoreUnavailable

log = logging.getLogger("gateway.proxy")


@dataclass
class Call:
    """State of one proxied call. Amounts are ledger units (ms); times are perf_counter s."""

    request_id: str
    method: str
    path: str
    route: Route
    caller: Caller
    body: bytes
    parsed: Any
    model: str | None
    stream: bool
    estimate: int
    started: float
    output_limit: int | None = None  # the request's output-token limit (tokens), if it set one
    hold: Admission | None = None
    unbilled_reason: str | None = None  # set when admitted without a hold (fail mode allow)
    client_wants_usage: bool = True
    token_status: str | None = None
    extra_headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    settled: bool = False  # `settle` ran (whatever its outcome)
    end_user: str | None = None  # who the call is for (gateway.proxy.costs.end_user_of)
    budget: CallBudget | None = None  # the key's and end user's limits it runs under
    tokens: TokenUsage | None = None  # the upstream's usage with every priced class
    trace: Any = None  # the open upstream span while tracing is on (gateway.tracing)

    @property
    def input_estimate(self) -> int:
        """Prompt tokens guessed from the body size (for partial charges only)."""
        return len(self.body) // BYTES_PER_TOKEN


def charge_for(call: Call, usage: Usage | None, duration_ms: int) -> int:
    """Units owed for a successful call: the meter on reported usage; when a tokens route
    got no usage, the hold estimate (SPEC §6: fall back to an estimate, say so)."""
    meter = call.route.meter
    if meter.kind == "tokens" and usage is None:
        return call.estimate
    return meter.cost(call.model, usage, duration_ms)


def failure_charge(call: Call, status: int | None, duration_ms: int) -> int:
    """Units owed for a failed upstream call (SPEC §6): none, unless the route says
    `upstream_errors: {charge: duration_after, after_ms: N}` and a 5xx or broken connection
    took longer than N ms — then the duration meter's price of that time."""
    rule = call.route.spec.upstream_errors
    if rule.charge == "duration_after" and (status is None or status >= 500) \
            and duration_ms > rule.after_ms:
        return call.route.meter.cost(call.model, None, duration_ms)
    return 0


async def settle(
    s: Services, call: Call, status: int | None, duration_ms: int, usage: Usage | None,
    source: str, charge: int, *, streamed: bool, outcome: str,
) -> Settlement | None:
    """Debit `charge`, release the hold, write the usage record. Returns None when the call
    is unbilled (store down under fail mode `allow`, or while streaming: spooled). Raises
    StoreUnavailableProblem when the store is down under fail mode `deny` (not billed).
    Traced (the upstream span ends, a `settlement` span runs) when tracing is on."""
    settling = _settle(s, call, status, duration_ms, usage, source, charge, streamed=streamed,
                       outcome=outcome)
    if s.tracing is None:
        return await settling
    return await s.tracing.settlement(call, status, usage, source, charge, outcome, settling)


async def _settle(
    s: Services, call: Call, status: int | None, duration_ms: int, usage: Usage | None,
    source: str, charge: int, *, streamed: bool, outcome: str,
) -> Settlement | None:
    call.settled = True
    u = usage or Usage()
    tokens = call.tokens if call.tokens is not None and source == "upstream" else TokenUsage(
        input_tokens=u.input_tokens, cached_input_tokens=u.cached_tokens,
        output_tokens=u.output_tokens, reasoning_tokens=u.reasoning_tokens)
    record = CallRecord(
        request_id=call.request_id, account_id=call.caller.account_id,
        operation=call.route.operation, model=call.model, upstream_status=status,
        duration_ms=duration_ms, input_tokens=u.input_tokens, output_tokens=u.output_tokens,
        cached_tokens=u.cached_tokens, reasoning_tokens=u.reasoning_tokens,
        estimated=call.estimate, usage_source=source,  # type: ignore[arg-type]
        streamed=streamed, outcome=outcome, key_id=call.caller.api_key_id,
        end_user=call.end_user, cache_write_tokens=tokens.cache_write_tokens,
        **cost_fields(call.route, call.model, tokens, to_datetime(now_ms()), s.metrics),
    )
    if call.hold is not None:
        s.metrics.active_holds.dec()
    if call.unbilled_reason is not None:
        _spool(s, record, charge, call)
        return None
    try:
        result = await s.ledger.settle(
            call.hold.hold_id if call.hold else None, record, charge,
            call.route.spec.on_shortfall, call.budget)
    except StoreUnavailable:
        s.metrics.store_errors.labels("settle").inc()
        if call.route.spec.fail_mode == "allow" or streamed:
            _spool(s, record, charge, call)
            return None
        log.error("settlement failed: store unavailable; call answered 503, not billed",
                  extra={"request_id": call.request_id, "account_id": record.account_id})
        raise StoreUnavailableProblem(
            "The call completed but its charge could not be recorded; it was not billed."
        ) from None
    s.metrics.child(s.metrics.charged, call.route.operation).inc(result.charged)
    if result.top_up:
        s.topups.trigger(record.account_id)
    if result.unbilled:
        s.metrics.unbilled.labels(call.route.operation, "shortfall").inc(result.unbilled)
    if outcome == "ok" and status is not None and status < 400:
        call.route.estimator.observe(charge)
    if call.route.counts_tokens:
        await s.limiter.count_tokens(call.route.spec.rate_limits, call.caller.key_id,
                                     call.caller.account_id, u.input_tokens + u.output_tokens)
    if log.isEnabledFor(logging.INFO):
        log.info("call settled", extra={
            "request_id": call.request_id, "account_id": record.account_id,
            "operation": record.operation, "model": record.model, "status": status,
            "duration_ms": duration_ms, "charged": result.charged, "usage_source": source,
            "outcome": outcome})
    return result


async def settle_after_error(s: Services, call: Call) -> None:
    """An unexpected error left an admitted call unsettled: release its hold now (charged
    nothing; outcome `gateway_error` on its usage record) instead of keeping it leased until
    the route's hold TTL. A store failure here is logged; the hold then lapses with its
    lease."""
    duration_ms = int((time.perf_counter() - call.started) * MS_PER_SECOND)
    try:
        await settle(s, call, None, duration_ms, None, "none", 0, streamed=call.stream,
                     outcome="gateway_error")
    except (GatewayError, StoreUnavailable):
        log.error("could not settle a call after an unexpected error; its hold lapses",
                  extra={"request_id": call.request_id})


def _spool(s: Services, record: CallRecord, charge: int, call: Call) -> None:
    """Keep an unbilled call for `gateway reconcile` (store unreachable)."""
    s.metrics.unbilled.labels(call.route.operation, "store_unavailable").inc(charge)
    try:
        s.unbilled.append(record, charge, call.route.spec.on_shortfall, now_ms(),
                          call.hold.hold_id if call.hold else None)
    except OSError as exc:
        log.error("could not spool an unbilled call", extra={
            "request_id": call.request_id, "account_id": record.account_id,
            "units": charge, "error": str(exc)})
        return
    log.warning("unbilled call spooled for reconciliation", extra={
        "request_id": call.request_id, "account_id": record.account_id, "units": charge,
        "spool": str(s.unbilled.path)})


def charge_headers(call: Call, settlement: Settlement | None) -> list[tuple[bytes, bytes]]:
    """x-request-id, x-gateway-operation; x-gateway-charged, x-gateway-remaining (exact decimal
    amounts in the API's unit) and x-gateway-unit (`s`, `USD`, `tokens`) on every deployment,
    plus x-gateway-charged-ms, x-gateway-remaining-ms in time deployments (issue 10); and
    x-resume-token-status when a token was sent."""
    out = [(b"x-request-id", call.request_id.encode()),
           (b"x-gateway-operation", call.route.operation.encode())]
    if settlement is not None:
        unit = call.route.meter.unit
        remaining = max(0, settlement.remaining)
        if unit.kind is UnitKind.TIME:
            out.append((b"x-gateway-charged-ms", str(settlement.charged).encode()))
            out.append((b"x-gateway-remaining-ms", str(remaining).encode()))
        out.append((b"x-gateway-charged", unit.to_text(settlement.charged).encode()))
        out.append((b"x-gateway-remaining", unit.to_text(remaining).encode()))
        out.append((b"x-gateway-unit", unit.api_name.encode()))
    else:
        out.append((b"x-gateway-unbilled", b"store-unavailable"))
    if call.token_status:
        out.append((b"x-resume-token-status", call.token_status.encode()))
    out.extend(call.extra_headers)
    return out
