"""Redis adapters for shared, ephemeral state (SPEC §3): resume tokens across processes.

Redis never carries money: losing it loses at most token state, never balance. Redis errors are
translated here: a store that cannot reach Redis falls back to its in-process twin for the
duration of the outage (a token then works only on the process that issued it) and counts the
failure, so a Redis outage degrades the resume flow instead of failing calls.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from storage.clock import MS_PER_SECOND, now_ms
from storage.memory.resume_tokens import InProcessResumeTokens
from storage.ports import TokenRecord
from storage.resume_tokens import TTL_S, new_token, token_hash

log = logging.getLogger("storage.redis")
_PREFIX = "gw:rt:"


class Breaker:
    """After a Redis failure, skip Redis for `cooldown_s` seconds (use the fallback at once),
    so an unreachable or frozen Redis costs one timeout per cooldown, not one per call."""

    def __init__(self, cooldown_s: float = 2.0) -> None:
        self.cooldown_s = cooldown_s
        self._open_until = 0.0

    @property
    def open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self) -> None:
        self._open_until = time.monotonic() + self.cooldown_s


class RedisResumeTokens:
    """Resume tokens in Redis: `gw:rt:<sha256>` → JSON record with a 1-hour TTL.

    `consume` is GETDEL: atomic, so across any number of processes exactly one caller
    consumes a token. `on_error` is called with the failing step name (for metrics).
    """

    def __init__(self, redis: Redis, ttl_s: int = TTL_S,
                 on_error: Callable[[str], None] | None = None,
                 breaker: Breaker | None = None) -> None:
        self._redis = redis
        self._ttl_s = ttl_s
        self._fallback = InProcessResumeTokens(ttl_s)
        self._on_error = on_error or (lambda step: None)
        self.breaker = breaker or Breaker()

    def _failed(self, step: str, exc: Exception) -> None:
        self.breaker.trip()
        self._on_error(step)
        log.warning("redis unavailable; resume tokens fall back to this process",
                    extra={"step": step, "error": str(exc)})

    async def issue(self, account_id: str, binding: str, operation_id: str) -> tuple[str, int]:
        token = new_token()
        expires = now_ms() + self._ttl_s * MS_PER_SECOND
        doc = json.dumps({"a": account_id, "b": binding, "o": operation_id, "e": expires})
        if self.breaker.open:
            return await self._fallback.issue(account_id, binding, operation_id)
        try:
            await self._redis.set(_PREFIX + token_hash(token), doc, ex=self._ttl_s)
        except (RedisError, OSError) as exc:
            self._failed("issue", exc)
            return await self._fallback.issue(account_id, binding, operation_id)
        return token, expires

    async def lookup(self, token: str) -> TokenRecord | None:
        if self.breaker.open:
            return await self._fallback.lookup(token)
        try:
            raw = await self._redis.get(_PREFIX + token_hash(token))
        except (RedisError, OSError) as exc:
            self._failed("lookup", exc)
            return await self._fallback.lookup(token)
        if raw is None:
            return await self._fallback.lookup(token)
        d = json.loads(raw)
        if d["e"] <= now_ms():
            return None
        return TokenRecord(d["a"], d["b"], d["o"], d["e"])

    async def consume(self, token: str) -> bool:
        if self.breaker.open:
            return await self._fallback.consume(token)
        try:
            raw = await self._redis.getdel(_PREFIX + token_hash(token))
        except (RedisError, OSError) as exc:
            self._failed("consume", exc)
            return await self._fallback.consume(token)
        if raw is None:
            return await self._fallback.consume(token)
        return bool(json.loads(raw)["e"] > now_ms())

    async def ping(self) -> None:
        """Raises RedisError/OSError when Redis is unreachable."""
        await self._redis.ping()

    async def close(self) -> None:
        await self._redis.aclose()

