#!/usr/bin/env python3
"""Create bench accounts through a running gateway's admin API and print one API key a line.

    accounts.py --url http://127.0.0.1:8080 --token ADMIN_TOKEN --n 100 [--plan payg]
                [--minutes 10000000] [--concurrency 8] > keys.txt

Per account: `POST /v1/admin/accounts {"plan"}`, `POST /v1/admin/accounts/{id}/keys`,
`POST /v1/admin/accounts/{id}/grants {"minutes", "source": "gift", "idempotency_key"}` (the
account never runs dry during a bench). The admin API is the same in every gateway version the
bench compares, and one HTTP call costs milliseconds where a CLI call costs a Python start-up
(seconds), so 100 accounts take about a second. Exits non-zero on any non-2xx answer.
"""
from __future__ import annotations

import argparse
import asyncio
import sys

import httpx


async def one(client: httpx.AsyncClient, gate: asyncio.Semaphore, i: int, plan: str,
              minutes: int) -> str:
    async with gate:
        r = await client.post("/v1/admin/accounts", json={"plan": plan})
        r.raise_for_status()
        account = r.json()["account_id"]
        r = await client.post(f"/v1/admin/accounts/{account}/keys", json={})
        r.raise_for_status()
        key = r.json()["key"]
        r = await client.post(f"/v1/admin/accounts/{account}/grants", json={
            "minutes": minutes, "source": "gift", "idempotency_key": f"bench-funds-{account}"})
        r.raise_for_status()
        return str(key)


async def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--url", required=True, help="gateway origin, e.g. http://127.0.0.1:8080")
    ap.add_argument("--token", required=True, help="GATEWAY_ADMIN_TOKEN of that gateway")
    ap.add_argument("--n", type=int, default=1, help="accounts (one key each)")
    ap.add_argument("--plan", default="payg")
    ap.add_argument("--minutes", type=int, default=10_000_000)
    ap.add_argument("--concurrency", type=int, default=8)
    a = ap.parse_args()
    gate = asyncio.Semaphore(a.concurrency)
    headers = {"authorization": f"Bearer {a.token}"}
    async with httpx.AsyncClient(base_url=a.url, headers=headers, timeout=30) as client:
        try:
            keys = await asyncio.gather(*(one(client, gate, i, a.plan, a.minutes)
                                          for i in range(a.n)))
        except httpx.HTTPStatusError as exc:
            sys.exit(f"accounts.py: {exc.request.method} {exc.request.url.path} -> "
                     f"{exc.response.status_code} {exc.response.text[:300]}")
    sys.stdout.write("".join(k + "\n" for k in keys))


if __name__ == "__main__":
    asyncio.run(main())
