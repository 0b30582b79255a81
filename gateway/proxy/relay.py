"""Relaying an SSE response while metering it (SPEC §6).

Events are forwarded as soon as each is complete; the stream meter reads usage on the way.
The call settles when the stream ends, is cut (balance exhausted), breaks, or the client
disconnects — charged for what was consumed. A final SSE comment carries the charge
(comment lines are ignored by SSE clients, WHATWG HTML §9.2.6).

Hold extension: when the running cost of a stream reaches its hold, the hold is raised
(doubled, at least to the running cost plus the estimate); if the balance cannot cover that,
the route's `on_stream_exhausted` decides: `cut` ends the stream cleanly, `overdraft` goes on
and settles into debt or unbilled.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from gateway.proxy.disconnects import DisconnectWatch
from gateway.proxy.forwarding import downstream_headers
from gateway.proxy.settlement import Call, charge_headers, failure_charge, settle
from gateway.proxy.upstream import UpstreamFailure, UpstreamResponse
from gateway.proxy.usage import StreamMeter, split_events, without_usage
from gateway.services import Services
from policies.meters import Usage
from storage.clock import MS_PER_SECOND
from storage.ports import Admission, StoreUnavailable

_CHECK_EVERY = 16  # events between running-cost checks


async def relay_stream(
    s: Services, call: Call, resp: UpstreamResponse, t0: float, receive: Any, send: Any
) -> None:
    """Stream `resp` to the client, then settle and send the charge comment."""
    headers = downstream_headers(resp.headers)
    headers.extend(charge_headers(call, None)[:2])
    if call.hold is not None:
        headers.append((b"x-gateway-hold-ms", str(call.hold.amount).encode()))
    if call.token_status:
        headers.append((b"x-resume-token-status", call.token_status.encode()))
    headers.extend(call.extra_headers)
    await send({"type": "http.response.start", "status": resp.status, "headers": headers})

    meter = StreamMeter(call.route.spec.protocol)
    # The pump runs in this task (no task of its own, no loop turn before the first event);
    # a client leaving cancels it here, from the watch's own small task.
    watch = DisconnectWatch(receive, after_s=0.0)
    outcome = "ok"
    try:
        try:
            outcome = await watch.guard(_pump(s, call, resp, meter, t0, send))
        except asyncio.CancelledError:
            if not watch.caused_cancel():
                raise
            outcome = "client_disconnected"
    finally:
        watch.close()
        resp.close()
        settling = asyncio.ensure_future(_settle_stream(s, call, resp, meter, t0, outcome))
        try:
            comment = await asyncio.shield(settling)
        except asyncio.CancelledError:
            await settling
            raise
    if outcome != "client_disconnected":
        await send({"type": "http.response.body", "body": comment, "more_body": False})
    m = s.metrics
    m.child(m.requests, call.route.operation, str(resp.status)).inc()


async def _pump(
    s: Services, call: Call, resp: UpstreamResponse, meter: StreamMeter, t0: float, send: Any
) -> str:
    """Forward complete events. Returns "ok", "cut" or "upstream_broken"."""
    strip_usage = call.route.spec.protocol == "openai_chat" and not call.client_wants_usage
    buffer = bytearray()
    since_check = 0
    try:
        async for chunk in resp.iter_chunks():
            buffer += chunk
            events = split_events(buffer)
            if not events:
                continue
            if strip_usage:
                out = []
                for event in events:
                    if meter.feed(event):
                        stripped = without_usage(event)
                        if stripped is None:
                            continue
                        event = stripped
                    out.append(event)
                if out:
                    await send({"type": "http.response.body", "body": b"".join(out),
                                "more_body": True})
            else:
                # Sent first, metered right after (also when the send fails or is cancelled):
                # the meter reads events it does not change, and the first byte does not wait.
                try:
                    await send({"type": "http.response.body", "body": b"".join(events),
                                "more_body": True})
                finally:
                    for event in events:
                        meter.feed(event)
            since_check += len(events)
            if since_check >= _CHECK_EVERY:
                since_check = 0
                if not await _keep_hold(s, call, meter, t0):
                    return "cut"
    except UpstreamFailure:
        return "upstream_broken"
    if buffer:  # an unterminated last event
        tail = bytes(buffer)
        rest = without_usage(tail) if meter.feed(tail) and strip_usage else tail
        if rest:
            await send({"type": "http.response.body", "body": rest, "more_body": True})
    return "ok"


def running_usage(call: Call, meter: StreamMeter) -> Usage:
    """Usage so far: the upstream's figures when reported, else input from the body size (or
    Anthropic's message_start) and one output token per content event, never more output than
    the request allowed (its largest output-limit field, when it set one)."""
    if meter.final_usage_seen and meter.usage is not None:
        return meter.usage
    input_tokens = meter.input_tokens or call.input_estimate
    output = meter.content_events
    if call.output_limit is not None:
        output = min(output, call.output_limit)
    return Usage(input_tokens=input_tokens, output_tokens=output)


async def _keep_hold(s: Services, call: Call, meter: StreamMeter, t0: float) -> bool:
    """Raise the hold when the running cost reached it. False means: cut the stream."""
    hold = call.hold
    if hold is None:
        return True
    elapsed_ms = int((time.perf_counter() - t0) * MS_PER_SECOND)
    cost = call.route.meter.cost(call.model, running_usage(call, meter), elapsed_ms)
    if cost <= hold.amount:
        return True
    target = max(hold.amount * 2, cost + call.estimate)
    try:
        ok = await s.ledger.extend_hold(call.caller.account_id, hold.hold_id, target,
                                        call.route.hold_ttl_s)
    except StoreUnavailable:
        ok = False
    if ok:
        call.hold = Admission(hold.hold_id, target, hold.available_after - (target - hold.amount))
        return True
    return call.route.spec.on_stream_exhausted == "overdraft"


async def _settle_stream(
    s: Services, call: Call, resp: UpstreamResponse, meter: StreamMeter, t0: float,
    outcome: str,
) -> bytes:
    duration_ms = int((time.perf_counter() - t0) * MS_PER_SECOND)
    if meter.final_usage_seen:
        usage, source = meter.usage, "upstream"
        call.tokens = meter.tokens
    else:
        usage = running_usage(call, meter)
        source = "estimate" if outcome == "ok" else "partial"
    delivered = meter.content_events > 0 or meter.final_usage_seen
    if outcome == "upstream_broken" and not delivered:
        charge = failure_charge(call, None, duration_ms)
    else:
        charge = call.route.meter.cost(call.model, usage, duration_ms)
    if outcome == "cut" and call.hold is not None:
        charge = min(charge, call.hold.amount)  # cut because nothing beyond the hold was left
    settlement = await settle(s, call, resp.status, duration_ms, usage, source, charge,
                              streamed=True, outcome=outcome)
    parts = [f"request_id={call.request_id}"]
    if settlement is not None:
        parts += [f"charged_ms={settlement.charged}",
                  f"remaining_ms={max(0, settlement.remaining)}"]
    else:
        parts.append("unbilled=store-unavailable")
    if outcome == "cut":
        parts.append("cut=balance-exhausted")
    return (": gateway " + " ".join(parts) + "\n\n").encode()
