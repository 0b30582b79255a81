"""A call's provider cost and budget (issue 10 items 3–4): who the call is for (end user),
the limits it is admitted under, and its cost at the provider's list price.

- End user: OpenAI's `user` (chat, responses, embeddings), Anthropic's `metadata.user_id`,
  or the `X-Gateway-End-User` header, in that order (the providers' documented fields); a
  string of at most `END_USER_MAX` characters after trimming, else the call is a 400.
- Provider cost: quoted by policies.provider_prices (genai-prices) in USD micro-units for the
  route's provider (its upstream's `price_provider`, else its protocol's provider: the same
  source a `prices: provider` meter charges by); a model the price source does not know is
  recorded with a null cost and `cost_reason`, and counted by `gateway_unpriced_calls`.
  The price data is loaded at startup (`warm_prices`), not by the first call.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from gateway.metrics import Metrics
from gateway.problems import BadRequest
from policies.compiled import Policy, Route, price_provider_of
from policies.provider_prices import (
    PRICE_DATA_VERSION,
    TokenUsage,
    UnpricedModel,
    price_book,
)
from storage.engine.budgets import Limits
from storage.ports import CallBudget

END_USER_MAX = 256  # characters (the usage_records.end_user column's size)
END_USER_HEADER = b"x-gateway-end-user"


def end_user_of(protocol: str, parsed: Any, header: bytes | None) -> str | None:
    """The end user a call is made for, or None. Raises BadRequest for a value that is not a
    string or is longer than END_USER_MAX characters."""
    value: Any = None
    field = ""
    if isinstance(parsed, dict):
        if protocol.startswith("openai") and "user" in parsed:
            value, field = parsed["user"], "user"
        elif protocol == "anthropic_messages" and isinstance(parsed.get("metadata"), dict) \
                and "user_id" in parsed["metadata"]:
            value, field = parsed["metadata"]["user_id"], "metadata.user_id"
    if value is None and header is not None:
        value, field = header.decode("latin-1"), "X-Gateway-End-User"
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{field}: the end user must be a string")
    value = value.strip()
    if len(value) > END_USER_MAX:
        raise BadRequest(f"{field}: the end user is longer than {END_USER_MAX} characters")
    return value or None


def call_budget(policy: Policy, api_key_id: str | None, limits: Limits,
                end_user: str | None) -> CallBudget:
    """The CallBudget of a call made with this key (id, limits in ledger units) for
    `end_user`, under the policy's per-end-user daily limit (converted from the unit)."""
    day = policy.document.end_user_limits.day if end_user is not None else None
    return CallBudget(key_id=api_key_id, key_limits=limits, end_user=end_user,
                      end_user_day=None if day is None else policy.unit.from_api(day,
                                                                                round_up=True))


def provider_for(route: Route) -> str | None:
    """The price source's provider of a route: its upstream's `price_provider` when set (the
    same source a `prices: provider` meter charges by, policies.compiled.price_provider_of),
    else its protocol's provider (`openai`, `anthropic`); None for `plain` without one."""
    return price_provider_of(route.upstream.spec, route.spec.protocol)


def price_providers(policy: Policy) -> set[str]:
    """The price source's providers the policy's routes need (cost recording and `prices:
    provider` meters alike, see provider_for): empty when no route is priced."""
    return {p for p in (provider_for(route) for route in policy.routes) if p is not None}


async def warm_prices(policy: Policy) -> set[str]:
    """Load the price data the policy needs before the first call (issue 10: the first priced
    call would otherwise parse genai-prices' bundled data), in a worker thread so the event
    loop stays free. Returns the providers warmed (empty: nothing needed, nothing loaded)."""
    providers = price_providers(policy)
    if providers:
        await asyncio.to_thread(price_book().warm, providers)
    return providers


def cost_fields(route: Route, model: str | None, tokens: TokenUsage, at: datetime,
                metrics: Metrics | None) -> dict[str, Any]:
    """The usage record's provider-cost fields of a call (CallRecord names): provider,
    prompt/completion/total cost in USD micro-units and the price-data version, or a null
    cost with `cost_reason` when unpriced (counted in `gateway_unpriced_calls`)."""
    provider = provider_for(route)
    if provider is None:
        return {}
    try:
        cost = price_book().quote(provider, model, tokens, at)
    except UnpricedModel as exc:
        if metrics is not None:
            metrics.child(metrics.unpriced_calls, provider, exc.reason).inc()
        return {"provider": provider, "cost_reason": exc.reason,
                "price_version": PRICE_DATA_VERSION}
    return {"provider": provider, "prompt_cost": cost.prompt_micros,
            "completion_cost": cost.completion_micros, "total_cost": cost.total_micros,
            "price_version": cost.price_version}
