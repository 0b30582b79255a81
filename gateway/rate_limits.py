"""Rate limits per API key and per account (requests and tokens per minute), announced with the
IETF RateLimit-Policy / RateLimit headers (draft-ietf-httpapi-ratelimit-headers) and enforced
with a 429 problem carrying Retry-After.

Fixed one-minute windows: a counter per (scope, id, window). Requests are counted at admission;
tokens are counted when a call settles and checked at the next admission. Counters live in Redis
when configured (shared by every gateway process) or in this process otherwise. A Redis outage
fails open — rate limits are a safeguard, never money — and is counted in metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.problems import RateLimited
from policies.schema import LimitSpec, RateLimitSpec
from storage.memory.counters import InProcessCounters
from storage.ports import Counters

log = logging.getLogger("gateway.rate_limits")
WINDOW_S = 60


@dataclass(frozen=True, slots=True)
class Counter:
    """One limit to check: `name` for the headers ("key-requests"), the Redis/dict `key`."""

    name: str
    key: str
    limit: int
    kind: str  # "requests" | "tokens"


class RedisCounters:
    """Counters in Redis: INCRBY + EXPIRE in one pipeline round trip."""

    def __init__(self, redis: object, on_error: Callable[[], None], breaker: Any) -> None:
        self._redis = redis
        self._on_error = on_error
        self._fallback = InProcessCounters()
        self._breaker = breaker

    async def add(self, keys: list[str], amounts: list[int], window_s: int) -> list[int]:
        from redis.exceptions import RedisError

        if self._breaker.open:
            return await self._fallback.add(keys, amounts, window_s)
        try:
            pipe = self._redis.pipeline(transaction=False)  # type: ignore[attr-defined]
            for key, amount in zip(keys, amounts, strict=True):
                pipe.incrby("gw:rl:" + key, amount)
                pipe.expire("gw:rl:" + key, window_s + 5, nx=True)
            results = await pipe.execute()
            return [int(v) for v in results[0::2]]
        except (RedisError, OSError) as exc:
            self._breaker.trip()
            self._on_error()
            log.warning("redis unavailable; rate limits counted in this process",
                        extra={"error": str(exc)})
            return await self._fallback.add(keys, amounts, window_s)


def counters_for(spec: RateLimitSpec, key_id: str, account_id: str, window: int) -> list[Counter]:
    """The counters a call of this route touches in minute `window` (epoch minutes)."""
    out: list[Counter] = []
    for scope, ident, limits in (("key", key_id, spec.per_key),
                                 ("account", account_id, spec.per_account)):
        out.extend(_scope_counters(scope, ident, limits, window))
    return out


def _scope_counters(scope: str, ident: str, limits: LimitSpec, window: int) -> list[Counter]:
    out = []
    if limits.requests_per_minute:
        out.append(Counter(f"{scope}-requests", f"{scope}:{ident}:r:{window}",
                           limits.requests_per_minute, "requests"))
    if limits.tokens_per_minute:
        out.append(Counter(f"{scope}-tokens", f"{scope}:{ident}:t:{window}",
                           limits.tokens_per_minute, "tokens"))
    return out


class RateLimiter:
    """Checks and counts a call's limits; returns the RateLimit headers to send."""

    def __init__(self, store: Counters) -> None:
        self.store = store

    async def admit(
        self, spec: RateLimitSpec, key_id: str, account_id: str
    ) -> list[tuple[bytes, bytes]]:
        """Count one request and check every limit. Raises RateLimited (429) when one is
        exhausted. Returns `RateLimit-Policy` and `RateLimit` headers (empty: no limits)."""
        now = time.time()
        window = int(now // WINDOW_S)
        counters = counters_for(spec, key_id, account_id, window)
        if not counters:
            return []
        values = await self.store.add(
            [c.key for c in counters], [1 if c.kind == "requests" else 0 for c in counters],
            WINDOW_S)
        reset = max(1, int((window + 1) * WINDOW_S - now))
        policy = ", ".join(f'"{c.name}";q={c.limit};w={WINDOW_S}' for c in counters)
        state = ", ".join(f'"{c.name}";r={max(0, c.limit - v)};t={reset}'
                          for c, v in zip(counters, values, strict=True))
        headers = [(b"ratelimit-policy", policy.encode()), (b"ratelimit", state.encode())]
        for c, v in zip(counters, values, strict=True):
            if v > c.limit:
                err = RateLimited(f"The {c.name.replace('-', ' ')} limit of {c.limit} per "
                                  f"minute is used up; retry in {reset} s.")
                err.headers = {"retry-after": str(reset), "ratelimit-policy": policy,
                               "ratelimit": state}
                raise err
        return headers

    async def count_tokens(
        self, spec: RateLimitSpec, key_id: str, account_id: str, tokens: int
    ) -> None:
        """Add a settled call's tokens to its token-per-minute counters."""
        if tokens <= 0:
            return
        window = int(time.time() // WINDOW_S)
        counters = [c for c in counters_for(spec, key_id, account_id, window)
                    if c.kind == "tokens"]
        if counters:
            await self.store.add([c.key for c in counters], [tokens] * len(counters), WINDOW_S)
