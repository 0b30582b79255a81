"""Seen HMAC nonces in the SQL store — the only nonce store, with or without Redis: one
`INSERT … ON CONFLICT DO NOTHING` decides atomically, across processes, whether a nonce is new,
so a nonce is accepted once whatever Redis does (a Redis copy would be a second truth that an
outage splits). Rows outlive the ±300 s signature window and are swept now and then."""

from __future__ import annotations

import time

from storage.clock import MS_PER_SECOND, now_ms
from storage.sql.engine import Runner
from storage.sql.executor import Executor, Sql

_REMEMBER = Sql("INSERT INTO hmac_nonces (nonce_key, expires_at_ms) VALUES (?, ?)"
                " ON CONFLICT (nonce_key) DO NOTHING")
_SWEEP = Sql("DELETE FROM hmac_nonces WHERE expires_at_ms <= ?")
_SWEEP_EVERY_S = 60.0


async def _remember(db: Executor, key: str, expires_ms: int, sweep_before: int | None) -> bool:
    if sweep_before is not None:
        await db.run(_SWEEP, (sweep_before,))
    return bool(await db.run(_REMEMBER, (key, expires_ms)) == 1)


class SqlNonces:
    """NonceStore on the ledger database. Raises StoreUnavailable when it is unreachable."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner
        self._last_sweep = 0.0

    async def remember(self, key: str, ttl_s: int) -> bool:
        now = now_ms()
        sweep = None
        if time.monotonic() - self._last_sweep > _SWEEP_EVERY_S:
            self._last_sweep = time.monotonic()
            sweep = now
        return await self._runner.run_raw(_remember, key, now + ttl_s * MS_PER_SECOND, sweep)
