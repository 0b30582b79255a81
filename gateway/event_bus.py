"""The live fan-out of account events to open streams (SPEC §3: "the live event fan-out").

The store's event log (the EventLog port) is the source of truth; the bus only makes delivery
prompt. The store hands every committed change's events to `publish` (EventLog.on_commit), which
delivers them to this process's subscribers at once and, with Redis configured, publishes them
on `gw:ev:<account id>` so every other gateway process delivers them to its subscribers too.
A stream that sees a gap in the ids, overflows its queue or loses the bus reads the log — so a
lost Redis message or a Redis outage delays an event by at most the stream's poll interval; it
never loses one, and Redis never carries money.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

from storage.ports import AccountEvent

log = logging.getLogger("gateway.events")
CHANNEL_PREFIX = "gw:ev:"
QUEUE_SIZE = 256


class Subscription:
    """One open stream's inbox: `queue` of AccountEvent; `lagged` is set when events were
    dropped (queue full, bus trouble) and the stream must re-read the log."""

    __slots__ = ("account_id", "lagged", "queue")

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        self.queue: asyncio.Queue[AccountEvent] = asyncio.Queue(QUEUE_SIZE)
        self.lagged = False

    def offer(self, event: AccountEvent) -> None:
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagged = True


class EventBus:
    """In-process fan-out (the embedded default): `publish` reaches this process's streams."""

    def __init__(self) -> None:
        self._subs: dict[str, set[Subscription]] = {}

    def publish(self, events: list[AccountEvent]) -> None:
        """Deliver committed events (called on the event loop right after the commit)."""
        self._deliver(events)

    def _deliver(self, events: list[AccountEvent]) -> None:
        if not self._subs:
            return
        for event in events:
            for sub in self._subs.get(event.account_id, ()):
                sub.offer(event)

    async def subscribe(self, account_id: str) -> Subscription:
        """Open an inbox for the account's events; pair with `unsubscribe`."""
        sub = Subscription(account_id)
        self._subs.setdefault(account_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.account_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.account_id]

    @property
    def streams(self) -> int:
        """Open subscriptions in this process."""
        return sum(len(s) for s in self._subs.values())

    async def start(self) -> None:
        """Start background work (none in process)."""

    async def close(self) -> None:
        """Stop background work."""


class RedisEventBus(EventBus):
    """Fan-out across gateway processes through Redis pub/sub, one channel per account.

    Publishing is batched in a background task (never on the request path); one pub/sub
    connection per process subscribes to the channels of the accounts it has streams for.
    `on_error(step)` counts Redis failures; a failure trips `breaker` and marks every local
    subscription lagged, so streams fall back to reading the log until Redis is back.
    """

    def __init__(self, redis: Any, breaker: Any, on_error: Callable[[str], None]) -> None:
        super().__init__()
        self._redis = redis
        self.breaker = breaker
        self._on_error = on_error
        self._outbox: list[AccountEvent] = []
        self._flusher: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._subscribed: set[str] = set()
        self._ready: dict[str, list[asyncio.Future[None]]] = {}

    def publish(self, events: list[AccountEvent]) -> None:
        self._deliver(events)
        if self.breaker.open:
            return
        self._outbox.extend(events)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        while self._outbox:
            batch, self._outbox = self._outbox, []
            by_account: dict[str, list[str]] = {}
            for event in batch:
                by_account.setdefault(event.account_id, []).append(event.to_json())
            try:
                if len(by_account) == 1:  # the usual batch: a plain PUBLISH costs ~2/3 of a
                    # one-command pipeline's client CPU (redis-py; issue 13's profile)
                    [(account_id, docs)] = by_account.items()
                    await self._redis.publish(CHANNEL_PREFIX + account_id,
                                              "[" + ",".join(docs) + "]")
                else:
                    pipe = self._redis.pipeline(transaction=False)
                    for account_id, docs in by_account.items():
                        pipe.publish(CHANNEL_PREFIX + account_id, "[" + ",".join(docs) + "]")
                    await pipe.execute()
            except Exception as exc:  # noqa: BLE001 - any Redis failure: the log still has it
                self._failed("publish", exc)
                self._outbox.clear()
                return

    def _failed(self, step: str, exc: BaseException) -> None:
        self.breaker.trip()
        self._on_error(step)
        log.warning("redis event fan-out unavailable; streams poll the log",
                    extra={"step": step, "error": type(exc).__name__})
        for subs in self._subs.values():
            for sub in subs:
                sub.lagged = True

    async def subscribe(self, account_id: str) -> Subscription:
        """Open an inbox; waits (≤ 1 s) until this process listens on the account's channel,
        so events published from now on by any process reach it."""
        sub = await super().subscribe(account_id)
        if CHANNEL_PREFIX + account_id not in self._subscribed:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._ready.setdefault(account_id, []).append(ready)
            self._changed.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(ready), 1.0)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        super().unsubscribe(sub)
        self._changed.set()

    async def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())

    async def close(self) -> None:
        for task in (self._reader, self._flusher):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _read_loop(self) -> None:
        pubsub = None
        while True:
            try:
                if pubsub is None:
                    pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
                    self._subscribed = set()
                await self._sync_channels(pubsub)
                if not self._subscribed:
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 5.0)
                    continue
                message = await pubsub.get_message(timeout=0.25)
                if message is not None and message.get("type") == "message":
                    self._deliver([AccountEvent.from_doc(doc)
                                   for doc in json.loads(message["data"])])
            except asyncio.CancelledError:
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect after any Redis failure
                self._failed("subscribe", exc)
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        await pubsub.aclose()
                pubsub = None
                await asyncio.sleep(1.0)

    async def _sync_channels(self, pubsub: Any) -> None:
        wanted = {CHANNEL_PREFIX + a for a in self._subs}
        add, remove = wanted - self._subscribed, self._subscribed - wanted
        if add:
            await pubsub.subscribe(*add)
        if remove:
            await pubsub.unsubscribe(*remove)
        self._subscribed = wanted
        for account_id in list(self._ready):
            if CHANNEL_PREFIX + account_id in wanted or account_id not in self._subs:
                for fut in self._ready.pop(account_id):
                    if not fut.done():
                        fut.set_result(None)
