"""Seen HMAC nonces in this process (the `NonceStore` port), for a gateway whose store is
memory: a nonce is accepted once per store for its ttl (asyncio makes check-and-set atomic)."""

from __future__ import annotations

from storage.clock import MS_PER_SECOND, Clock, now_ms
from storage.memory.store import MemoryStore


class InProcessNonces:
    """Nonces remembered until their ttl ends (epoch ms from `clock`), in `store` (shared by
    every adapter on it; default: a store of its own)."""

    def __init__(self, store: MemoryStore | None = None, clock: Clock = now_ms) -> None:
        self._clock = clock
        self._store = store if store is not None else MemoryStore()

    async def remember(self, key: str, ttl_s: int) -> bool:
        now, seen = self._clock(), self._store.nonces
        if len(seen) > 100_000:
            for k in [k for k, expires in seen.items() if expires <= now]:
                del seen[k]
        expires = seen.get(key)
        if expires is not None and expires > now:
            return False
        seen[key] = now + ttl_s * MS_PER_SECOND
        return True
