#!/usr/bin/env python3
"""Billing reads on long histories: latency of `GET /v1/billing/usage/{id}?period=month|day`, of
one page of `GET /v1/billing/events/{id}` (first page and a page deep in the history), and of the
provider-cost reads (issue 10: `GET /v1/billing/costs/{id}/summary`, the first page of
`GET /v1/billing/costs/{id}`, `GET /v1/admin/costs/summary?period=month`) for an account with
10^3 and with 10^6 usage records (and as many ledger entries), through a real `gateway serve`
on a socket, on SQLite and/or PostgreSQL.

    python bench/history.py [--store sqlite|postgres|both] [--sizes 1000,1000000] [--n 200]

The history is bulk inserted (bench/admission.py's fill: every record inside the current month
and day, the worst case for `period=month`), and the daily rollup is built from it with the
same statement as the migration's backfill — at run time the gateway maintains it at
settlement. For contrast the table also times the query the rollup replaces (summing the
period's usage records directly): the cost that grows with history.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from admission import PLAN, _drop, _fill_postgres, _fill_sqlite, _postgres_db

from storage import migrate
from storage.sql.ledger import SqlLedger

REPO = Path(__file__).resolve().parent.parent
SCAN = ("SELECT operation, SUM(charged) FROM usage_records WHERE account_id = {p}"
        " AND created_at_ms >= {p2} GROUP BY operation")
# The history as priced calls (provider, model, cost), and the daily rollup (usage, cost, key
# spend: one row per day, operation, provider, model, key) built from it as settlement
# maintains it at run time, with the grouping of migration 0016's backfill.
PRICED = ("UPDATE usage_records SET provider = 'openai', model = 'gpt-4o-mini', input_tokens = 10,"
          " output_tokens = 5, prompt_cost = 2, completion_cost = 3, total_cost = 5"
          " WHERE account_id = {p}")
ROLLUP = ("INSERT INTO usage_daily (account_id, day_ms, operation, provider, model, key_id, calls,"
          " late, charged, unpriced, prompt_tokens, completion_tokens, cost)"
          " SELECT account_id, (created_at_ms / 86400000) * 86400000, operation,"
          " COALESCE(provider, ''), COALESCE(model, ''), COALESCE(key_id, ''), COUNT(*), 0,"
          " SUM(charged), 0, SUM(input_tokens), SUM(output_tokens), SUM(COALESCE(total_cost, 0))"
          " FROM usage_records WHERE account_id = {p} AND outcome <> 'in_flight'"
          " GROUP BY account_id, (created_at_ms / 86400000) * 86400000, operation,"
          " COALESCE(provider, ''), COALESCE(model, ''), COALESCE(key_id, '')")
ADMIN_TOKEN = "bench-admin-token-" + "x" * 32


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _prepare(url: str, rows: int, pg: bool) -> tuple[str, str, float]:
    """(account, API key, ms of one direct scan of the month's usage records)."""
    ledger = SqlLedger(url)
    try:
        account = await ledger.create_account(PLAN)
        _key_id, key = await ledger.create_api_key(account)
    finally:
        await ledger.close()
    month_start = int(time.time() * 1000) - 40 * 86_400_000
    if pg:
        import asyncpg

        await _fill_postgres(url, account, rows)
        conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
        await conn.execute(PRICED.format(p="$1"), account)
        await conn.execute(ROLLUP.format(p="$1"), account)
        await conn.execute("ANALYZE")
        t0 = time.perf_counter()
        await conn.fetch(SCAN.format(p="$1", p2="$2"), account, month_start)
        scan = (time.perf_counter() - t0) * 1000
        await conn.close()
    else:
        import sqlite3

        from sqlalchemy.engine import make_url

        _fill_sqlite(url, account, rows)
        conn = sqlite3.connect(make_url(url).database)
        conn.execute(PRICED.format(p="?"), (account,))
        conn.execute(ROLLUP.format(p="?"), (account,))
        conn.commit()
        t0 = time.perf_counter()
        conn.execute(SCAN.format(p="?", p2="?"), (account, month_start)).fetchall()
        scan = (time.perf_counter() - t0) * 1000
        conn.close()
    return account, key, scan


def _time(client: httpx.Client, url: str, headers: dict[str, str], n: int) -> dict[str, float]:
    for _ in range(10):
        assert client.get(url, headers=headers).status_code == 200
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        r = client.get(url, headers=headers)
        samples.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, r.text
    return {"p50": statistics.median(samples), "p95": statistics.quantiles(samples, n=20)[18]}


def _measure(url: str, account: str, key: str, n: int) -> dict[str, dict[str, float]]:
    port = _free_port()
    env = {**os.environ, "GATEWAY_DATABASE_URL": url, "GATEWAY_PORT": str(port),
           "GATEWAY_LOG_LEVEL": "warning", "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
           "GATEWAY_POLICY_PATH": str(REPO / "config/policies.yaml")}
    env.pop("GATEWAY_REDIS_URL", None)
    cmd = [sys.executable, "-m", "gateway.cli", "serve"]
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=30) as client:
            for _ in range(1200):  # up to 2 minutes on a loaded machine
                try:
                    if client.get(base + "/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            headers = {"authorization": f"Bearer {key}"}
            page = client.get(f"{base}/v1/billing/events/{account}?limit=50",
                              headers=headers).json()
            deep_id = int(page["next_cursor"][3:]) // 2 if page["next_cursor"] else 1
            admin = {"authorization": f"Bearer {ADMIN_TOKEN}"}
            return {
                "usage month": _time(client, f"{base}/v1/billing/usage/{account}?period=month",
                                     headers, n),
                "usage day": _time(client, f"{base}/v1/billing/usage/{account}?period=day",
                                   headers, n),
                "events first page": _time(client, f"{base}/v1/billing/events/{account}?limit=50",
                                           headers, n),
                "events deep page": _time(
                    client, f"{base}/v1/billing/events/{account}?limit=50&cursor=le_{deep_id}",
                    headers, n),
                "cost summary": _time(client, f"{base}/v1/billing/costs/{account}/summary",
                                      admin, n),
                "cost records page": _time(client, f"{base}/v1/billing/costs/{account}?limit=50",
                                           admin, n),
                "admin cost summary": _time(client, f"{base}/v1/admin/costs/summary",
                                            admin, n),
            }
    finally:
        proc.terminate()
        proc.wait(timeout=20)


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=["sqlite", "postgres", "both"], default="both")
    ap.add_argument("--sizes", default="1000,1000000")
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--pg-admin-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    stores = ["sqlite", "postgres"] if args.store == "both" else [args.store]
    print("| store | usage records | request | p50 ms | p95 ms |")
    print("|---|---|---|---|---|")
    results: dict[tuple[str, int], dict[str, dict[str, float]]] = {}
    scans: dict[tuple[str, int], float] = {}
    for store in stores:
        for rows in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                name = None
                if store == "sqlite":
                    url = f"sqlite:///{tmp}/bench.db"
                else:
                    name, url = await _postgres_db(args.pg_admin_url)
                try:
                    await asyncio.to_thread(migrate.upgrade, url)
                    account, key, scan = await _prepare(url, rows, store == "postgres")
                    r = await asyncio.to_thread(_measure, url, account, key, args.n)
                finally:
                    if name is not None:
                        await _drop(args.pg_admin_url, name)
            results[(store, rows)], scans[(store, rows)] = r, scan
            for request, t in r.items():
                print(f"| {store} | {rows:,} | {request} | {t['p50']:.2f} | {t['p95']:.2f} |",
                      flush=True)
            print(f"| {store} | {rows:,} | (direct scan of the month's records, replaced by "
                  f"the rollup) | {scan:.2f} | |", flush=True)
    for store in stores:
        small, large = results[(store, sizes[0])], results[(store, sizes[-1])]
        ratios = ", ".join(f"{req} {large[req]['p50'] / small[req]['p50']:.2f}" for req in large)
        print(f"{store}: p50 ratio {sizes[-1]:,}/{sizes[0]:,} records: {ratios}; the scan it "
              f"replaces: {scans[(store, sizes[-1])] / max(scans[(store, sizes[0])], 1e-3):.0f}×")


if __name__ == "__main__":
    asyncio.run(main())
