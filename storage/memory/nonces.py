"""Seen HMAC nonces in this process (the `NonceStore` port), for an embedded gateway whose
store is memory: a nonce is accepted once per process for its ttl."""

from __future__ import annotations

import time
from collections.abc import Callable


class InProcessNonces:
    """Nonces remembered until their ttl ends (epoch ms from `clock`); swept as they expire."""

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._expiry: dict[str, int] = {}

    async def remember(self, key: str, ttl_s: int) -> bool:
        now = self._clock()
        if len(self._expiry) > 100_000:
            self._expiry = {k: e for k, e in self._expiry.items() if e > now}
        expires = self._expiry.get(key)
        if expires is not None and expires > now:
            return False
        self._expiry[key] = now + ttl_s * 1000
        return True
