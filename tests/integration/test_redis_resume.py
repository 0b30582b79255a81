"""Resume tokens in the real Redis: single use across processes, TTL, and degraded mode."""

from __future__ import annotations

import asyncio
import os
import uuid

import pytest
from redis.asyncio import Redis

from gateway.proxy.resume import well_formed
from storage.redis_state import Breaker, RedisResumeTokens
from tests.support import service_unavailable

pytestmark = pytest.mark.redis
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _redis_or_skip() -> Redis:
    client = Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any connection error
        await client.aclose()
        service_unavailable(f"Redis not reachable at {REDIS_URL} ({exc})")
    return client


async def test_token_round_trip_is_stored_hashed():
    client = await _redis_or_skip()
    store = RedisResumeTokens(client)
    token, _expires = await store.issue("acct_a", "binding-1", "req_1")
    assert well_formed(token)
    keys = [k.decode() async for k in client.scan_iter("gw:rt:*")]
    assert all(token not in k for k in keys)
    for key in keys:
        assert token.encode() not in (await client.get(key) or b"")
    record = await store.lookup(token)
    assert record is not None and record.account_id == "acct_a"
    assert record.binding == "binding-1" and record.operation_id == "req_1"
    stored = f"gw:rt:{__import__('hashlib').sha256(token.encode()).hexdigest()}"
    assert 0 < await client.ttl(stored) <= 3600
    assert await store.consume(token) is True
    assert await store.lookup(token) is None
    assert await store.consume(token) is False
    await store.close()


async def test_a_token_raced_by_many_stores_is_consumed_once():
    first = await _redis_or_skip()
    stores = [RedisResumeTokens(Redis.from_url(REDIS_URL)) for _ in range(8)]
    token, _ = await stores[0].issue("acct_b", uuid.uuid4().hex, "req_2")
    results = await asyncio.gather(*(s.consume(token) for s in stores for _ in range(5)))
    assert results.count(True) == 1
    for s in stores:
        await s.close()
    await first.aclose()


async def test_unreachable_redis_degrades_to_this_process():
    errors: list[str] = []
    store = RedisResumeTokens(Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2),
                              on_error=errors.append, breaker=Breaker(cooldown_s=0))
    token, _ = await store.issue("acct_c", "b", "req_3")
    assert (await store.lookup(token)) is not None
    assert await store.consume(token) is True
    assert await store.consume(token) is False
    assert errors[:3] == ["issue", "lookup", "consume"]
    await store.close()


async def test_after_a_failure_the_breaker_skips_redis_for_its_cooldown():
    errors: list[str] = []
    store = RedisResumeTokens(Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2),
                              on_error=errors.append, breaker=Breaker(cooldown_s=60))
    token, _ = await store.issue("acct_d", "b", "req_4")
    assert await store.consume(token) is True
    assert errors == ["issue"]  # one failed round trip, then straight to the fallback
    await store.close()
