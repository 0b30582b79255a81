#!/usr/bin/env python3
"""The headline table of one bench/suite.sh run: one row per target (direct, peers, each gateway
setup), medians over rounds, compared with `direct`, Portkey and SQLite from the same run.

  suite_report.py results/RUN.jsonl [--json-out FILE]

Columns (see bench/README.md): latency p50 / p99 with one connection, the p50 added to `direct`,
req/s with 16 connections and its ratio to Portkey's, the measured process's CPU µs per request
at 16 connections and its ratio to the same gateway setup on SQLite, the streaming time to first
byte added to `direct`'s, PostgreSQL statements (round trips) and Redis commands per proxied call,
errors. Below the table: CPU per call with N workers against one worker, warnings.
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from typing import Any

from report import ERR_KEYS  # same folder: the shared bench helpers
from summarize import f as fmt
from summarize import med

Row = dict[str, Any]


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def diff(a: float | None, b: float | None) -> float | None:
    return a - b if a is not None and b is not None else None


def sqlite_twin(target: str) -> str:
    """The SQLite setup compared with a gateway setup: `new-pg-a100-w2` -> `new-sqlite-a100-w2`."""
    parts = target.split("-")
    return "-".join(["sqlite" if p == "pg" and i == 1 else p for i, p in enumerate(parts)])


def one_worker_twin(target: str) -> str | None:
    """`new-pg-a1-w2` -> `new-pg-a1`; None for a one-worker setup."""
    head, _, last = target.rpartition("-")
    return head if last.startswith("w") and last[1:].isdigit() else None


def figures(records: list[Row]) -> tuple[list[str], dict[str, Row]]:
    """Per target (in first-seen order, `direct` first): the table's figures, from measure.sh's
    and the round-trip window's JSON lines."""
    by: dict[tuple[str, str], list[Row]] = defaultdict(list)
    order: list[str] = []
    for r in records:
        by[(r["target"], r["test"])].append(r)
        if r["target"] not in order:
            order.append(r["target"])
    if "direct" in order:
        order.remove("direct")
        order.insert(0, "direct")
    tests = {r["test"] for r in records}
    load = next((t for t in sorted(tests) if t.startswith("load_c")), "load_c16")
    sload = next((t for t in sorted(tests) if t.startswith("stream_c") and t != "stream_c1"),
                 "stream_c16")

    def M(t: str, test: str, key: str) -> float | None:
        return med(r.get(key) for r in by.get((t, test), []))

    def errors(t: str) -> int:
        n = 0
        for test in ("lat_c1", load):
            n += sum(sum(r.get(k, 0) or 0 for k in ERR_KEYS) for r in by.get((t, test), []))
        for test in ("stream_c1", sload, "stream_paced"):
            for r in by.get((t, test), []):
                ok = r.get("n_ok", 0) or 0
                n += (r.get("n_err", 0) or 0) + round(
                    ok * (2 - r.get("done_frac", 1) - r.get("usage_frac", 1)))
        return n

    out: dict[str, Row] = {}
    for t in order:
        first = (by.get((t, "lat_c1")) or by.get((t, load)) or [{}])[0]
        out[t] = {
            "kind": first.get("kind"), "workers": first.get("workers", 1),
            "rounds": len(by.get((t, "lat_c1"), [])),
            "p50_ms": M(t, "lat_c1", "p50_ms"), "p99_ms": M(t, "lat_c1", "p99_ms"),
            "rps": M(t, load, "rps"), "load_p99_ms": M(t, load, "p99_ms"),
            "cpu_us": M(t, load, "gw_cpu_us_per_req"),
            "cpu_us_c1": M(t, "lat_c1", "gw_cpu_us_per_req"),
            "cpu0_busy_pct": M(t, load, "cpu0_busy_pct"),
            "ttfb_ms": M(t, "stream_c1", "ttfb_p50_ms"),
            "paced_ttfb_ms": M(t, "stream_paced", "ttfb_p50_ms"),
            "paced_total_ms": M(t, "stream_paced", "total_p50_ms"),
            "pg_per_call": M(t, "roundtrips", "pg_per_call"),
            "redis_per_call": M(t, "roundtrips", "redis_per_call"),
            "pg_by_kind": next((r.get("pg_by_kind") for r in by.get((t, "roundtrips"), [])), None),
            "errors": errors(t),
        }
    d, pk = out.get("direct", {}), out.get("portkey", {})
    for t, f in out.items():
        f["added_p50_ms"] = None if t == "direct" else diff(f["p50_ms"], d.get("p50_ms"))
        f["ttfb_added_ms"] = None if t == "direct" else diff(f["ttfb_ms"], d.get("ttfb_ms"))
        f["rps_vs_portkey"] = None if t in ("portkey", "direct") else ratio(f["rps"], pk.get("rps"))
        twin = out.get(sqlite_twin(t)) if f["kind"] == "gateway" else None
        f["cpu_vs_sqlite"] = ratio(f["cpu_us"], twin["cpu_us"]) if twin else None
        one = out.get(one_worker_twin(t) or "")
        f["cpu_vs_1_worker"] = ratio(f["cpu_us"], one["cpu_us"]) if one else None
    return order, out


COLUMNS = [  # header, key, digits
    ("p50 1 conn (ms)", "p50_ms", 3), ("p99 1 conn (ms)", "p99_ms", 3),
    ("added p50 vs direct (ms)", "added_p50_ms", 3), ("req/s 16 conns", "rps", 0),
    ("req/s ÷ Portkey", "rps_vs_portkey", 2), ("CPU µs/req 16 conns", "cpu_us", 0),
    ("CPU ÷ SQLite", "cpu_vs_sqlite", 2), ("stream TTFB added (ms)", "ttfb_added_ms", 3),
    ("PG round trips/call", "pg_per_call", 1), ("Redis cmds/call", "redis_per_call", 1),
    ("errors", "errors", 0),
]


def table(order: list[str], out: dict[str, Row]) -> str:
    lines = ["| target | " + " | ".join(h for h, _, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for t in order:
        cells = []
        for _, key, nd in COLUMNS:
            v = out[t].get(key)
            if key == "errors":
                cells.append(str(v))
            elif key in ("rps_vs_portkey", "cpu_vs_sqlite"):
                cells.append("-" if v is None else f"{v:.2f}×")
            elif key in ("added_p50_ms", "ttfb_added_ms") and v is not None:
                cells.append(("+" if v >= 0 else "") + fmt(v, nd))
            else:
                cells.append(fmt(v, nd))
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes(order: list[str], out: dict[str, Row]) -> list[str]:
    n = []
    for t in order:
        f = out[t]
        if f["cpu_vs_1_worker"] is not None:
            one = out[one_worker_twin(t) or ""]
            verdict = "within" if f["cpu_vs_1_worker"] <= 1.10 else "**above**"
            n.append(f"- `{t}`: CPU {fmt(f['cpu_us'], 0)} µs/req vs {fmt(one['cpu_us'], 0)} with "
                     f"one worker = {f['cpu_vs_1_worker']:.2f}× ({verdict} the 1.10× budget).")
    for t in order:
        f = out[t]
        if f["pg_by_kind"]:
            kinds = ", ".join(f"{k} {v}" for k, v in f["pg_by_kind"].items())
            n.append(f"- `{t}` statements in the round-trip window: {kinds}.")
    for t in order:
        f = out[t]
        ttfb, total = f["paced_ttfb_ms"], f["paced_total_ms"]
        if ttfb is not None and total and ttfb >= 0.25 * total:
            n.append(f"- **`{t}`: paced stream TTFB {fmt(ttfb)} ms vs total {fmt(total, 1)} ms: "
                     "the stream looks BUFFERED.**")
        if f["errors"]:
            n.append(f"- **`{t}`: {f['errors']} errors/bad streams — its figures are suspect.**")
        c0 = f["cpu0_busy_pct"]
        if t == "direct" and c0 is not None and c0 > 97:
            n.append(f"- CPU0 was {c0:.0f}% busy during `direct` at 16 connections: that "
                     "throughput is capped by the core the upstream shares with wrk, so "
                     "throughput ratios to it are upper bounds; CPU µs/req is the "
                     "load-independent figure.")
    multi = [f"`{t}`" for t in order if out[t]["workers"] not in (1, None)]
    if multi:
        n.append(f"- {', '.join(multi)}: several workers on both cores, sharing CPU0 with the "
                 "upstream and wrk: latency and req/s are not isolated; compare CPU µs/req.")
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("--json-out", help="also write the figures, one JSON object per target")
    a = ap.parse_args()
    with open(a.file) as fh:
        records = [json.loads(x) for x in fh if x.strip().startswith("{")]
    records = [r for r in records if "target" in r and "test" in r]
    if not records:
        raise SystemExit(f"no results in {a.file}")
    order, out = figures(records)
    meta = records[0]
    print(f"Run {meta.get('run_id')}: medians over rounds, lat_d={meta.get('lat_d')} s, "
          f"load_d={meta.get('load_d')} s; all ratios within this run.\n")
    print(table(order, out))
    n = notes(order, out)
    if n:
        print("\n" + "\n".join(n))
    if a.json_out:
        with open(a.json_out, "w") as fh:
            for t in order:
                fh.write(json.dumps({"target": t, "run_id": meta.get("run_id"), **out[t]}) + "\n")


if __name__ == "__main__":
    main()
