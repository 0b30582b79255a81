"""Resume tokens in this process: a dict (asyncio runs one coroutine at a time, so the
check-and-remove in `consume` is atomic). The fallback of the Redis store during an outage."""

from __future__ import annotations

import time

from storage.clock import MS_PER_SECOND, now_ms
from storage.ports import TokenRecord
from storage.resume_tokens import TTL_S, new_token, token_hash


class InProcessResumeTokens:
    """In-process resume-token store (a `storage.ports.ResumeTokenStore`). Expired entries are
    swept lazily."""

    def __init__(self, ttl_s: int = TTL_S) -> None:
        self.ttl_ms = ttl_s * MS_PER_SECOND
        self._live: dict[str, TokenRecord] = {}
        self._last_sweep = 0.0

    async def issue(self, account_id: str, binding: str, operation_id: str) -> tuple[str, int]:
        self._sweep()
        token = new_token()
        expires = now_ms() + self.ttl_ms
        self._live[token_hash(token)] = TokenRecord(account_id, binding, operation_id, expires)
        return token, expires

    async def lookup(self, token: str) -> TokenRecord | None:
        record = self._live.get(token_hash(token))
        if record is None or record.expires_at_ms <= now_ms():
            return None
        return record

    async def consume(self, token: str) -> bool:
        record = self._live.pop(token_hash(token), None)
        return record is not None and record.expires_at_ms > now_ms()

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < 60:
            return
        self._last_sweep = now
        cutoff = now_ms()
        for h in [h for h, r in self._live.items() if r.expires_at_ms <= cutoff]:
            del self._live[h]
