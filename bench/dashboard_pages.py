"""Server time of the dashboard's pages with 10⁶ usage records (issue 12: under 300 ms).

Seeds a fresh SQLite ledger with N usage records (default 1 000 000; half of them — and as many
consumption ledger entries — for the account whose page is measured, the rest over 99 other
accounts, spread over this month's UTC days, with the daily rollup that settlement writes), serves
a gateway on 127.0.0.1, signs in to /dashboard and /admin as a browser does, and times every
request each page makes: the HTML page itself and each API call its scripts send. Prints the
median and p95 per request over `--runs` rounds and the total per page (the scripts send their
calls concurrently; the total is the sum, an upper bound).

    python bench/dashboard_pages.py                # 10⁶ records, ~1–2 min to seed
    python bench/dashboard_pages.py --records 100000 --runs 10

Not timed: `GET /v1/admin/stats/usage` (usage by model, which reads every usage record of the
period); the console loads it only on demand.

The proxy's hot path is untouched by the dashboard (sessions are resolved only on the web app's
path), so nothing here measures it; bench/run.sh does.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.app import create_app  # noqa: E402
from gateway.settings import Settings  # noqa: E402
from storage import migrate  # noqa: E402
from storage.clock import MS_PER_DAY, now_ms  # noqa: E402

ADMIN_TOKEN = "b" * 40
OPERATIONS = ("openai.chat", "openai.embeddings", "anthropic.messages")
MODELS = ("gpt-4o-mini", "text-embedding-3-small", "claude-3-5-haiku-latest")


def seed(db: Path, account: str, others: list[str], records: int) -> None:
    """Write `records` usage records (half for `account`), as many consumption entries for it,
    and the daily rollup, straight into the SQLite file (what settlement writes per call)."""
    now = now_ms()
    month_start = time.gmtime(now // 1000)
    first_day = now - (month_start.tm_mday - 1) * MS_PER_DAY
    days = month_start.tm_mday
    span = max(1, now - (first_day - first_day % MS_PER_DAY))
    conn = sqlite3.connect(db)
    rollup: dict[tuple[str, int, str, str], list[int]] = {}

    def rows():
        for i in range(records):
            owner = account if i % 2 == 0 else others[i % len(others)]
            at = now - (i * 7919) % span
            op = i % len(OPERATIONS)
            charged = 500 + i % 2000
            day = at - at % MS_PER_DAY
            r = rollup.setdefault((owner, day, OPERATIONS[op], MODELS[op]), [0, 0, 0, 0])
            r[0] += 1
            r[1] += charged
            r[2] += 50
            r[3] += 20
            yield (f"req_bench_{i}", owner, OPERATIONS[op], MODELS[op], 200, 800, 50, 20,
                   0, 0, 1000, charged, 0, "upstream", 0, "settled", at)

    conn.executemany(
        "INSERT INTO usage_records (id, account_id, operation, model, upstream_status,"
        " duration_ms, input_tokens, output_tokens, cached_tokens, reasoning_tokens, estimated,"
        " charged, unbilled, usage_source, streamed, outcome, created_at_ms)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
    conn.executemany(
        "INSERT INTO ledger_entries (account_id, event_type, delta, idempotency_key, reason,"
        " metadata_json, created_at_ms) VALUES (?, 'consumption', ?, ?, 'openai.chat', NULL, ?)",
        ((account, -(500 + i % 2000), f"req_bench_{i}", now - (records - i) * 10)
         for i in range(0, records, 2)))
    conn.executemany(
        "INSERT INTO usage_daily (account_id, day_ms, operation, provider, model, key_id, calls,"
        " late, charged, unpriced, prompt_tokens, completion_tokens, cost)"
        " VALUES (?, ?, ?, '', ?, '', ?, 0, ?, 0, ?, ?, 0)",
        ((a, d, o, m, *sums) for (a, d, o, m), sums in rollup.items()))
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    print(f"seeded {records} usage records over {days} day(s), {len(rollup)} rollup rows",
          file=sys.stderr)


def serve(db_url: str, port: int) -> uvicorn.Server:
    settings = Settings.from_env({"GATEWAY_DATABASE_URL": db_url, "GATEWAY_HOST": "127.0.0.1",
                                  "GATEWAY_PORT": str(port), "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
                                  "GATEWAY_LOG_LEVEL": "warning"})
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_config=None, access_log=False, lifespan="on"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return server


def signed_in(base: str, page: str, field: str, credential: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=base, timeout=30)
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get(page).text)
    assert token is not None
    r = client.post(page + "/login", data={"csrf_token": token.group(1), field: credential})
    assert r.status_code == 303, r.text
    return client, client.get(page).text


def timed(client: httpx.Client, path: str, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        start = time.perf_counter()
        r = client.get(path)
        out.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, (path, r.status_code, r.text[:200])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--port", type=int, default=18481)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dash-bench-"))
    db = tmp / "bench.db"
    db_url = f"sqlite:///{db}"
    migrate.upgrade(db_url)
    server = serve(db_url, args.port)
    base = f"http://127.0.0.1:{args.port}"
    admin = httpx.Client(base_url=base, headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                         timeout=30)
    ids = [admin.post("/v1/admin/accounts", json={}).json()["account_id"] for _ in range(100)]
    account = ids[0]
    key = admin.post(f"/v1/admin/accounts/{account}/keys").json()["key"]
    admin.post(f"/v1/admin/accounts/{account}/grants",
               json={"minutes": 600, "idempotency_key": "bench-grant-1"})
    started = time.perf_counter()
    seed(db, account, ids[1:], args.records)
    print(f"seeding took {time.perf_counter() - started:.0f} s", file=sys.stderr)

    user, _ = signed_in(base, "/dashboard", "api_key", key)
    console, _ = signed_in(base, "/admin", "admin_token", ADMIN_TOKEN)
    pages = {
        "/dashboard": (user, ["/dashboard", f"/v1/billing/balance/{account}",
                              f"/v1/billing/events/{account}?limit=20",
                              "/v1/billing/catalog?currency=USD",
                              f"/v1/billing/usage/{account}?period=month",
                              f"/v1/billing/auto-topup/{account}"]),
        "/admin": (console, ["/admin", "/v1/admin/accounts?limit=20",
                             "/v1/admin/stats/daily?period=month",
                             "/v1/admin/policy", "/v1/admin/unbilled?limit=20",
                             f"/v1/admin/accounts/{account}"]),
    }
    print(f"\n{args.records:,} usage records; {args.runs} runs each; client-measured on "
          "loopback (≈ server time)\n")
    print(f"{'request':60} {'median ms':>10} {'p95 ms':>8}")
    for page, (client, paths) in pages.items():
        total = 0.0
        for path in paths:
            times = sorted(timed(client, path, args.runs))
            median = statistics.median(times)
            p95 = times[max(0, int(len(times) * 0.95) - 1)]
            total += median
            print(f"{path:60} {median:10.1f} {p95:8.1f}")
        print(f"{'  Σ medians of ' + page:60} {total:10.1f}\n")
    server.should_exit = True


if __name__ == "__main__":
    main()
