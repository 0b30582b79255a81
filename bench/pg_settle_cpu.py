#!/usr/bin/env python3
"""PostgreSQL server CPU per metered call: `gw_admit` + `gw_settle` (storage.sql.hot_path_pg,
what SqlLedger runs for a call without key or end-user limits) on ONE connection, and the CPU
its backend process used (utime + stime of /proc/<pg_backend_pid()>/stat: the server must run
on this machine, readable by this user). The gateway's own CPU is bench/store_calls.py's; this
is the database's share, where the rollup upserts of a settlement run on PostgreSQL.

    python bench/pg_settle_cpu.py [--n 5000] [--proxy] [--label X]
    BENCH_TREE=/path/to/other/checkout python bench/pg_settle_cpu.py ...   # A/B two trees

`--proxy`: each call with an API key (no limits) and settled with a provider and a priced cost,
as gateway/proxy/settlement.py builds it. Prints one JSON line: backend CPU µs per call (clock
ticks, so n ≥ 3000 for ~1 % resolution), client CPU µs per call. A fresh database on
--pg-admin-url, dropped afterwards. Trees without hot_path_pg (before issue 13) cannot run it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, os.environ.get("BENCH_TREE") or str(Path(__file__).resolve().parent.parent))

from store_calls import PLAN, call_record, scratch_postgres  # bench/, beside this script

from storage.engine.buckets import Source
from storage.sql import hot_path_pg
from storage.sql.ledger import SqlLedger

HZ = os.sysconf("SC_CLK_TCK")


def _backend_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)


async def _calls(url: str, n: int, proxy: bool) -> dict[str, object]:
    import asyncpg

    ledger = SqlLedger(url)
    try:
        account = await ledger.create_account(PLAN)
        await ledger.grant(account, Source.GIFT, 10**12, "bench:funds", None, "bench")
        key_id = (await ledger.create_api_key(account))[0] if proxy else None
    finally:
        await ledger.close()
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        pid = int(await conn.fetchval("SELECT pg_backend_pid()"))

        async def one(request_id: str) -> None:
            at = int(time.time() * 1000)
            params = hot_path_pg.admit_params(account, 1000, "chat", 600_000, at, request_id,
                                              "m", False, key_id, None)
            row = await conn.fetchrow(hot_path_pg.GW_ADMIT.pg, *params)
            assert row[1], "not admitted"
            settle = hot_path_pg.settle_params(
                params[3], call_record(account, request_id, key_id), 500, "clamp", at)
            assert (await conn.fetchrow(hot_path_pg.GW_SETTLE.pg, *settle))[0]

        for i in range(300):  # warm-up: plan caches
            await one(f"warm_{i}")
        ticks0, cpu0, wall0 = _backend_ticks(pid), time.process_time(), time.perf_counter()
        for i in range(n):
            await one(f"call_{i}")
        ticks = _backend_ticks(pid) - ticks0
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        await conn.close()
    return {"calls": n, "backend_cpu_us_per_call": round(ticks / HZ / n * 1e6, 1),
            "client_cpu_us_per_call": round(cpu / n * 1e6, 1),
            "wall_us_per_call": round(wall / n * 1e6, 1)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--proxy", action="store_true",
                    help="calls with an API key and a priced provider, as the proxy makes")
    ap.add_argument("--label", default="", help="added to the line (e.g. base / new)")
    ap.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--pg-db-prefix", default="gw_bench_",
                    help="name prefix of the scratch PostgreSQL database")
    args = ap.parse_args()
    async with scratch_postgres(args.pg_admin_url, args.pg_db_prefix) as url:
        row = await _calls(url, args.n, args.proxy)
    print(json.dumps({"label": args.label, "proxy": args.proxy, **row}), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
