#!/usr/bin/env python3
"""Admission cost against ledger size: p50/p99 of one admit + settle for an account with 10^3
and with 10^6 ledger entries (and as many usage records), on SQLite and/or PostgreSQL.

    python bench/admission.py [--store sqlite|postgres|both] [--sizes 1000,1000000] [--n 2000]

Prints a table and the ratio large/small (issue 3 asks for ≤ 1.2). History rows are bulk
inserted directly (they only have to exist); admits then go through SqlLedger as the gateway's
do. Everything runs on this machine; PostgreSQL is 127.0.0.1:5432/test (a fresh database is
created and dropped) unless --pg-admin-url says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from policies.compiled import Plan
from storage import migrate
from storage.engine.buckets import Source
from storage.ports import Admission, CallRecord
from storage.sql.ledger import SqlLedger

PLAN = Plan(key="bench", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)


def _fill_sqlite(url: str, account: str, rows: int) -> None:
    import sqlite3

    from sqlalchemy.engine import make_url

    conn = sqlite3.connect(make_url(url).database)
    base = int(time.time() * 1000) - rows
    batch = 50_000
    for start in range(0, rows, batch):
        n = min(batch, rows - start)
        conn.executemany(
            "INSERT INTO ledger_entries (account_id, event_type, delta, idempotency_key, reason,"
            " created_at_ms) VALUES (?, 'consumption', -1, ?, 'history', ?)",
            [(account, f"hist:{start + i}", base + start + i) for i in range(n)])
        conn.executemany(
            "INSERT INTO usage_records (id, account_id, operation, duration_ms, charged,"
            " usage_source, outcome, created_at_ms) VALUES (?, ?, 'chat', 1, 1, 'upstream',"
            " 'ok', ?)",
            [(f"hist_{start + i}", account, base + start + i) for i in range(n)])
        conn.commit()
    # the history's debits come out of a bucket so the ledger invariant still holds
    conn.execute("INSERT INTO buckets (id, account_id, source, amount, remaining, created_at_ms)"
                 " VALUES (?, ?, 'gift', ?, 0, ?)", (f"bkt_hist_{account}", account, rows, base))
    conn.execute("INSERT INTO ledger_entries (account_id, event_type, delta, idempotency_key,"
                 " reason, created_at_ms) VALUES (?, 'gift_credit', ?, 'hist:credit', 'history',"
                 " ?)", (account, rows, base))
    conn.commit()
    conn.close()


async def _fill_postgres(url: str, account: str, rows: int) -> None:
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    base = int(time.time() * 1000) - rows
    await conn.copy_records_to_table(
        "ledger_entries",
        records=((account, "consumption", -1, f"hist:{i}", "history", base + i)
                 for i in range(rows)),
        columns=["account_id", "event_type", "delta", "idempotency_key", "reason",
                 "created_at_ms"])
    await conn.copy_records_to_table(
        "usage_records",
        records=((f"hist_{i}", account, "chat", 1, 1, "upstream", "ok", base + i)
                 for i in range(rows)),
        columns=["id", "account_id", "operation", "duration_ms", "charged", "usage_source",
                 "outcome", "created_at_ms"])
    await conn.execute("INSERT INTO buckets (id, account_id, source, amount, remaining,"
                       " created_at_ms) VALUES ($1, $2, 'gift', $3, 0, $4)",
                       f"bkt_hist_{account}", account, rows, base)
    await conn.execute("INSERT INTO ledger_entries (account_id, event_type, delta,"
                       " idempotency_key, reason, created_at_ms) VALUES ($1, 'gift_credit', $2,"
                       " 'hist:credit', 'history', $3)", account, rows, base)
    await conn.execute("ANALYZE")
    await conn.close()


async def _measure(url: str, rows: int, n: int, pg: bool) -> dict[str, float]:
    ledger = SqlLedger(url)
    try:
        account = await ledger.create_account(PLAN)
        if pg:
            await _fill_postgres(url, account, rows)
        else:
            _fill_sqlite(url, account, rows)
        await ledger.grant(account, Source.GIFT, 10**12, "bench:funds", None, "bench")
        admit_ms: list[float] = []
        total_ms: list[float] = []
        for i in range(n + 200):
            t0 = time.perf_counter()
            hold = await ledger.admit(account, 1000, "chat", 600, PLAN,  # as the gateway does
                                      request_id=f"bench_{rows}_{i}", model="m")
            t1 = time.perf_counter()
            assert isinstance(hold, Admission)
            await ledger.settle(hold.hold_id, CallRecord(
                request_id=f"bench_{rows}_{i}", account_id=account, operation="chat",
                model="m", upstream_status=200, duration_ms=1, input_tokens=10,
                output_tokens=10), 500, "clamp")
            t2 = time.perf_counter()
            if i >= 200:  # warm-up excluded
                admit_ms.append((t1 - t0) * 1000)
                total_ms.append((t2 - t0) * 1000)
        totals = await ledger.totals(account)
        assert totals["remaining"] - totals["debt"] == totals["deltas"], totals
        q = statistics.quantiles
        return {"admit_p50": statistics.median(admit_ms), "admit_p99": q(admit_ms, n=100)[98],
                "cycle_p50": statistics.median(total_ms), "cycle_p99": q(total_ms, n=100)[98]}
    finally:
        await ledger.close()


async def _postgres_db(admin: str) -> tuple[str, str]:
    import asyncpg

    name = "gw_bench_" + uuid.uuid4().hex[:8]
    conn = await asyncpg.connect(admin)
    await conn.execute(f"CREATE DATABASE {name}")
    await conn.close()
    return name, admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + \
        "/" + name


async def _drop(admin: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(admin)
    await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await conn.close()


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--sizes", default="1000,1000000")
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    print("| store | ledger entries | admit p50 ms | admit p99 ms | admit+settle p50 ms |"
          " admit+settle p99 ms |")
    print("|---|---|---|---|---|---|")
    results: dict[tuple[str, int], dict[str, float]] = {}
    for store in stores:
        for rows in sizes:
            if store == "sqlite":
                with tempfile.TemporaryDirectory() as tmp:
                    url = f"sqlite:///{tmp}/bench.db"
                    await asyncio.to_thread(migrate.upgrade, url)
                    r = await _measure(url, rows, args.n, pg=False)
            else:
                name, url = await _postgres_db(args.pg_admin_url)
                try:
                    await asyncio.to_thread(migrate.upgrade, url)
                    r = await _measure(url, rows, args.n, pg=True)
                finally:
                    await _drop(args.pg_admin_url, name)
            results[(store, rows)] = r
            print(f"| {store} | {rows:,} | {r['admit_p50']:.3f} | {r['admit_p99']:.3f} |"
                  f" {r['cycle_p50']:.3f} | {r['cycle_p99']:.3f} |", flush=True)
    for store in stores:
        small, large = results[(store, sizes[0])], results[(store, sizes[-1])]
        print(f"{store}: admit p50 ratio {sizes[-1]:,}/{sizes[0]:,} = "
              f"{large['admit_p50'] / small['admit_p50']:.2f}; admit+settle p50 ratio = "
              f"{large['cycle_p50'] / small['cycle_p50']:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
