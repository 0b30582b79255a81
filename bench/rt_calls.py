#!/usr/bin/env python3
"""Make exactly N metered calls (non-streaming chat), keys taken round-robin from a file,
sequentially or CONCURRENCY at a time; used by suite.sh to count database round trips and Redis
commands per call, and by workers_instructions.sh to count instructions per call.

    rt_calls.py --base http://127.0.0.1:8080/v1 --keys-file keys.txt --n 50 --body-file body.json
                [--concurrency 16]

Every answer must be 200 with a `usage` object, else exit 1 (a window of failed calls would
count the wrong statements). Prints `{"calls": N, "seconds": wall}` as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--keys-file", required=True)
    ap.add_argument("--body-file", required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=1, help="calls in flight (threads)")
    a = ap.parse_args()
    if not 1 <= a.concurrency <= 256:
        ap.error("--concurrency must be within 1..256")
    with open(a.keys_file) as fh:
        keys = [k.strip() for k in fh if k.strip()]
    with open(a.body_file, "rb") as fb:
        body = fb.read()
    t0 = time.perf_counter()
    limits = httpx.Limits(max_connections=a.concurrency)
    with httpx.Client(base_url=a.base, timeout=120, limits=limits) as client:
        def call(i: int) -> None:
            r = client.post("/chat/completions", content=body, headers={
                "content-type": "application/json",
                "authorization": f"Bearer {keys[i % len(keys)]}"})
            if r.status_code != 200 or "usage" not in r.json():
                sys.exit(f"rt_calls.py: call {i}: {r.status_code} {r.text[:300]}")

        with ThreadPoolExecutor(a.concurrency) as pool:
            list(pool.map(call, range(a.n)))
    print(json.dumps({"calls": a.n, "seconds": round(time.perf_counter() - t0, 3)}))


if __name__ == "__main__":
    main()
