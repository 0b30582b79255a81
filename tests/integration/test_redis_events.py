"""The account-event fan-out through the real Redis: an event published by one gateway process
reaches the streams of another; Redis trouble marks streams lagged (they re-read the log)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from redis.asyncio import Redis

from gateway.event_bus import RedisEventBus
from storage.redis_state import Breaker
from storage.sql.events import AccountEvent
from tests.integration.test_redis_resume import _redis_or_skip

pytestmark = pytest.mark.redis


def _event(account: str, seq: int) -> AccountEvent:
    return AccountEvent(account, seq, "balance.updated", {"total_seconds": seq}, 1)


async def test_an_event_published_on_one_bus_reaches_subscribers_of_another():
    client_a, client_b = await _redis_or_skip(), await _redis_or_skip()
    errors: list[str] = []
    a = RedisEventBus(client_a, Breaker(), errors.append)
    b = RedisEventBus(client_b, Breaker(), errors.append)
    await a.start()
    await b.start()
    account = f"acct_{uuid.uuid4().hex[:8]}"
    try:
        sub = await b.subscribe(account)
        other = await b.subscribe("acct_someone_else")
        a.publish([_event(account, 1), _event(account, 2)])
        got = [await asyncio.wait_for(sub.queue.get(), 2) for _ in range(2)]
        assert [e.seq for e in got] == [1, 2] and got[0].data == {"total_seconds": 1}
        assert other.queue.empty() and not sub.lagged and errors == []
        b.unsubscribe(sub)
        b.unsubscribe(other)
        assert b.streams == 0
    finally:
        await a.close()
        await b.close()
        await client_a.aclose()
        await client_b.aclose()


async def test_a_local_subscriber_gets_events_at_once_and_redis_loss_marks_it_lagged():
    await (await _redis_or_skip()).aclose()
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.2, socket_connect_timeout=0.2)
    errors: list[str] = []
    bus = RedisEventBus(dead, Breaker(), errors.append)
    await bus.start()
    try:
        sub = await bus.subscribe("acct_local")  # returns within 1 s though Redis is down
        bus.publish([_event("acct_local", 7)])
        assert (await asyncio.wait_for(sub.queue.get(), 1)).seq == 7  # delivered in process
        deadline = time.monotonic() + 10  # a bound, not a wait: lagged is set within ~0.2 s
        while not sub.lagged and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert sub.lagged and errors  # the stream will re-read the log
    finally:
        await bus.close()
        await dead.aclose()
