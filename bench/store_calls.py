#!/usr/bin/env python3
"""CPU per metered call in the store alone: admit + settle through SqlLedger, as the gateway's
proxy does, on SQLite and/or PostgreSQL — one caller at a time (`c1`) and `--concurrency`
callers on one hot account (`cN`). No HTTP, so the figure is the store path's own cost, far
less noisy on a shared machine than the end-to-end bench (CPU time, not wall time).

    python bench/store_calls.py [--store sqlite|postgres|both] [--n 2000] [--concurrency 16]
    BENCH_TREE=/path/to/other/checkout python bench/store_calls.py ...   # A/B two trees
    python bench/store_calls.py --proxy ...   # calls as the proxy settles them (below)

`--proxy`: each call made with an API key (no limits) and settled with a provider, a priced
cost and the key on its record, as gateway/proxy/settlement.py builds it (issue 10: the
settlement then also updates the cost and key spend rollups); trees before issue 10 cannot run
it (CallBudget, CallRecord.provider).

Prints one JSON line per (store, mode): process CPU µs per call (all threads: the SQLite writer
thread counts), wall µs per call, calls. PostgreSQL: a fresh database on --pg-admin-url, dropped
afterwards. Runs under uvloop when it is installed (as `gateway serve` does).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

sys.path.insert(0, os.environ.get("BENCH_TREE") or str(Path(__file__).resolve().parent.parent))

from policies.compiled import Plan
from storage import migrate
from storage.engine.buckets import Source
from storage.ports import Admission, CallRecord
from storage.sql.ledger import SqlLedger

PLAN = Plan(key="bench", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)


def call_record(account: str, request_id: str, key_id: str | None) -> CallRecord:
    """The record a settlement gets: with `key_id`, as the proxy builds it (the key, a
    provider and a priced cost: gateway/proxy/settlement.py); without, a plain call."""
    extra = (dict(key_id=key_id, provider="openai", prompt_cost=20, completion_cost=40,
                  total_cost=60, price_version="bench") if key_id is not None else {})
    return CallRecord(request_id=request_id, account_id=account, operation="chat", model="m",
                      upstream_status=200, duration_ms=1, input_tokens=10, output_tokens=10,
                      **extra)  # type: ignore[arg-type]


async def _cycle(ledger: SqlLedger, account: str, request_id: str,
                 key_id: str | None = None) -> None:
    if key_id is None:  # also runs on trees before issue 10 (no CallBudget, no budget arg)
        hold = await ledger.admit(account, 1000, "chat", 600, PLAN, request_id=request_id,
                                  model="m")
        assert isinstance(hold, Admission)
        await ledger.settle(hold.hold_id, call_record(account, request_id, None), 500, "clamp")
        return
    from storage.ports import CallBudget

    budget = CallBudget(key_id=key_id)
    hold = await ledger.admit(account, 1000, "chat", 600, PLAN, request_id=request_id,
                              model="m", budget=budget)
    assert isinstance(hold, Admission)
    await ledger.settle(hold.hold_id, call_record(account, request_id, key_id), 500, "clamp",
                        budget)


async def _measure(url: str, n: int, concurrency: int,
                   proxy: bool = False) -> list[dict[str, object]]:
    ledger = SqlLedger(url)
    out: list[dict[str, object]] = []
    try:
        account = await ledger.create_account(PLAN)
        await ledger.grant(account, Source.GIFT, 10**12, "bench:funds", None, "bench")
        key_id = (await ledger.create_api_key(account))[0] if proxy else None
        for i in range(200):  # warm-up: connections, statement caches
            await _cycle(ledger, account, f"warm_{i}", key_id)
        for mode, width in (("c1", 1), (f"c{concurrency}", concurrency)):
            ids = iter(range(n))
            gate = asyncio.Semaphore(width)

            async def one(i: int, mode: str = mode, gate: asyncio.Semaphore = gate) -> None:
                async with gate:
                    await _cycle(ledger, account, f"{mode}_{i}", key_id)

            batched0 = _batched(ledger)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(one(i) for i in ids))
            cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
            batched = {k: v - batched0[k] for k, v in _batched(ledger).items()}
            out.append({"mode": mode, "calls": n, "cpu_us_per_call": round(cpu / n * 1e6, 1),
                        "wall_us_per_call": round(wall / n * 1e6, 1), **batched})
        totals = await ledger.totals(account)
        assert totals["remaining"] - totals["debt"] == totals["deltas"], totals
        assert totals["holds"] == 0, totals
    finally:
        await ledger.close()
    return out


def _batched(ledger: SqlLedger) -> dict[str, int]:
    """Calls that went in PostgreSQL group-commit batches so far, per kind (when the tree has
    them): `admit_batched`, `settle_batched`."""
    out: dict[str, int] = {}
    for kind in ("admit", "settle"):
        batches = getattr(ledger, f"{kind}_batches", None)
        if batches is not None:
            out[f"{kind}_batched"] = batches.batched
    return out


@contextlib.asynccontextmanager
async def scratch_postgres(admin: str, prefix: str) -> AsyncIterator[str]:
    """The `postgresql+asyncpg://` URL of a fresh, migrated database made on the server of
    `admin` (named `prefix` + 8 hex digits), dropped on exit."""
    import asyncpg

    name = prefix + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(admin)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + "/" + name
    try:
        await asyncio.to_thread(migrate.upgrade, url)
        yield url
    finally:
        conn = await asyncpg.connect(admin)
        await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await conn.close()


async def _with_postgres(admin: str, n: int, concurrency: int, prefix: str = "gw_bench_",
                         proxy: bool = False) -> list[dict[str, object]]:
    async with scratch_postgres(admin, prefix) as url:
        return await _measure(url, n, concurrency, proxy)


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--proxy", action="store_true",
                    help="calls with an API key and a priced provider, as the proxy makes")
    ap.add_argument("--label", default="", help="added to every line (e.g. base / new)")
    ap.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--pg-db-prefix", default="gw_bench_",
                    help="name prefix of the scratch PostgreSQL database")
    args = ap.parse_args()
    for store in (["sqlite", "postgres"] if args.store == "both" else [args.store]):
        if store == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                url = f"sqlite:///{tmp}/bench.db"
                await asyncio.to_thread(migrate.upgrade, url)
                rows = await _measure(url, args.n, args.concurrency, args.proxy)
        else:
            rows = await _with_postgres(args.pg_admin_url, args.n, args.concurrency,
                                       args.pg_db_prefix, args.proxy)
        for row in rows:
            print(json.dumps({"label": args.label, "store": store, "proxy": args.proxy, **row}),
                  flush=True)


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
