"""PostgreSQL request-path connections kept as spares between statements (storage/sql/engine.py
`Runner._checkout` / `_checkin`): the next statement runs on the last one without a round
through SQLAlchemy's pool, and a spare never makes anyone wait for the pool — a Core
transaction finding the pool dry gets a spare back, a request-path caller waiting for the pool
gets the next connection released."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from storage.sql.engine import PG_POOL_SIZE, PG_SPARES, Runner

pytestmark = pytest.mark.parametrize(
    "ledger_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)


async def _pid(db: Any) -> int:
    return int(await db.conn.fetchval("SELECT pg_backend_pid()"))


async def _held(db: Any, started: asyncio.Queue[int], release: asyncio.Event) -> int:
    """Hold a request-path connection until `release` is set; its backend pid."""
    pid = await _pid(db)
    started.put_nowait(pid)
    await release.wait()
    return pid


async def test_consecutive_request_path_statements_run_on_one_kept_connection(
        ledger_url: str) -> None:
    runner = Runner(ledger_url)
    try:
        first = await runner.run_single(_pid)
        assert await runner.run_single(_pid) == first
        assert await runner.run_raw(_pid) == first
    finally:
        await runner.close()


async def test_spares_never_keep_a_core_transaction_or_a_waiting_call_from_the_pool(
        ledger_url: str) -> None:
    runner = Runner(ledger_url)
    started: asyncio.Queue[int] = asyncio.Queue()
    gates = [asyncio.Event() for _ in range(PG_POOL_SIZE)]
    try:
        # every connection the pool may open held by the request path …
        busy = [asyncio.ensure_future(runner.run_single(_held, started, gate)) for gate in gates]
        for _ in gates:
            await started.get()
        # … then some of them idle as spares: the pool is dry, nobody waits
        for gate in gates[:PG_SPARES]:
            gate.set()
        await asyncio.gather(*busy[:PG_SPARES])
        assert len(runner._spares) == PG_SPARES
        # a Core transaction gets a connection (the spares handed back to the pool), not a
        # PoolTimeout after 30 s
        assert await runner.run(lambda c: c.execute(text("SELECT 1")).scalar()) == 1
        assert runner._spares == []
        # request-path calls take the pool's idle connections; one more waits for the pool and
        # gets the next connection released (not kept as a spare)
        later = [asyncio.Event() for _ in range(PG_SPARES + 1)]
        more = [asyncio.ensure_future(runner.run_single(_held, started, gate)) for gate in later]
        for _ in range(PG_SPARES):
            await started.get()
        gates[PG_SPARES].set()
        await busy[PG_SPARES]
        assert runner._spares == []  # handed to the pool, where the call waits
        await started.get()  # the waiting call runs
        for gate in later:
            gate.set()
        await asyncio.gather(*more)
    finally:
        for gate in gates:
            gate.set()
        await asyncio.gather(*busy, return_exceptions=True)
        await runner.close()
