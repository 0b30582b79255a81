"""Resume tokens in the SQL store: the shared default when Redis is not configured, so a token
issued by one worker process is honoured (once) by any other on the same database.

`consume` is one `DELETE … WHERE token_hash = ? AND expires_at_ms > ?`: the row-level delete
makes it atomic across processes — exactly one caller sees rowcount 1. Expired rows are swept
on issue. Only the SHA-256 of a token is stored.
"""

from __future__ import annotations

import time

from storage.clock import MS_PER_SECOND, now_ms
from storage.ports import TokenRecord
from storage.resume_tokens import TTL_S, new_token, token_hash
from storage.sql.engine import Runner
from storage.sql.executor import Executor, Sql

_INSERT = Sql("INSERT INTO resume_tokens (token_hash, account_id, binding, operation_id,"
               " expires_at_ms) VALUES (?, ?, ?, ?, ?)")
_SWEEP = Sql("DELETE FROM resume_tokens WHERE expires_at_ms <= ?")
_SELECT = Sql("SELECT account_id, binding, operation_id, expires_at_ms FROM resume_tokens"
               " WHERE token_hash = ? AND expires_at_ms > ?")
_DELETE = Sql("DELETE FROM resume_tokens WHERE token_hash = ? AND expires_at_ms > ?")
_SWEEP_EVERY_S = 60.0


async def _issue(db: Executor, h: str, account_id: str, binding: str, op: str, exp: int,
                 sweep_before: int | None) -> None:
    if sweep_before is not None:
        await db.run(_SWEEP, (sweep_before,))
    await db.run(_INSERT, (h, account_id, binding, op, exp))


async def _lookup(db: Executor, h: str, at: int) -> TokenRecord | None:
    row = await db.one(_SELECT, (h, at))
    return None if row is None else TokenRecord(row[0], row[1], row[2], int(row[3]))


async def _consume(db: Executor, h: str, at: int) -> bool:
    return bool(await db.run(_DELETE, (h, at)) == 1)


class SqlResumeTokens:
    """Resume-token store on the ledger database (same interface as the other stores).
    Raises StoreUnavailable when the database is unreachable."""

    def __init__(self, runner: Runner, ttl_s: int = TTL_S) -> None:
        self._runner = runner
        self._ttl_ms = ttl_s * MS_PER_SECOND
        self._last_sweep = 0.0

    async def issue(self, account_id: str, binding: str, operation_id: str) -> tuple[str, int]:
        token = new_token()
        now = now_ms()
        sweep = None
        if time.monotonic() - self._last_sweep > _SWEEP_EVERY_S:
            self._last_sweep = time.monotonic()
            sweep = now
        await self._runner.run_raw(_issue, token_hash(token), account_id, binding, operation_id,
                                   now + self._ttl_ms, sweep)
        return token, now + self._ttl_ms

    async def lookup(self, token: str) -> TokenRecord | None:
        return await self._runner.run_raw(_lookup, token_hash(token), now_ms())

    async def consume(self, token: str) -> bool:
        return await self._runner.run_raw(_consume, token_hash(token), now_ms())
