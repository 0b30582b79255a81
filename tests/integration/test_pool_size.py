"""GATEWAY_DB_POOL_SIZE: a process keeps at most that many PostgreSQL connections, however many
calls are in flight (the rest wait for a free one), and every call still completes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import make_url

from policies.compiled import Plan
from storage.engine.buckets import Source
from storage.ports import Admission, CallRecord
from storage.sql.ledger import SqlLedger
from tests.integration.conftest import fresh_database

PLAN = Plan(key="pool", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)


async def _connections(url: str) -> int:
    u = make_url(url)
    conn = await asyncpg.connect(u.set(drivername="postgresql").render_as_string(False))
    try:
        return int(await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1"
            " AND pid <> pg_backend_pid()", u.database))
    finally:
        await conn.close()


async def test_pool_size_bounds_connections(request: pytest.FixtureRequest,
                                            tmp_path: Path) -> None:
    with fresh_database("postgres", request, tmp_path) as url:
        ledger = SqlLedger(url, pool_size=2)
        try:
            accounts = [await ledger.create_account(PLAN) for _ in range(8)]
            for account in accounts:
                await ledger.grant(account, Source.GIFT, 10_000, f"fund:{account}", None, "f")

            async def call(i: int) -> int:
                account = accounts[i % len(accounts)]
                hold = await ledger.admit(account, 100, "chat", 600, PLAN, request_id=f"r{i}")
                assert isinstance(hold, Admission)
                done = await ledger.settle(hold.hold_id, CallRecord(
                    request_id=f"r{i}", account_id=account, operation="chat", model="m",
                    upstream_status=200, duration_ms=1), 60, "clamp")
                return done.charged

            charged = await asyncio.gather(*(call(i) for i in range(40)))
            assert charged == [60] * 40
            assert await _connections(url) <= 2
            totals = [await ledger.totals(a) for a in accounts]
            assert sum(t["remaining"] for t in totals) == 8 * 10_000 - 40 * 60
        finally:
            await ledger.close()
