#!/usr/bin/env python3
"""The headline figures of one bench/run.sh run, as a Markdown table: each target against the
baseline (`direct`, the fake upstream measured in the same run), as difference and ratio.

  report.py results/RUN.jsonl [--baseline direct] [--json-out FILE]

Medians over rounds. The detailed per-test tables are summarize.py's job; this prints the few
numbers that answer "what does the gateway cost": added latency at c=1, throughput and tail at
c=16, streaming time to first byte, the paced-stream buffering check, gateway CPU per request.
Exit status 0 even when a check fails: the warnings below the table say what to distrust.
"""
import argparse
import json
import sys
from collections import defaultdict

from summarize import f as fmt  # same folder: the shared bench helpers
from summarize import med

ERR_KEYS = ("err_connect", "err_read", "err_write", "err_timeout", "err_status")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("file")
    ap.add_argument("--baseline", default="direct")
    ap.add_argument("--json-out", help="also write the figures as one JSON object per target")
    a = ap.parse_args()

    rows = []
    with open(a.file) as fh:
        for line in fh:
            line = line.strip()
            if line.startswith("{"):
                r = json.loads(line)
                if "target" in r and "test" in r:
                    rows.append(r)
    if not rows:
        sys.exit(f"no results in {a.file}")
    by = defaultdict(list)
    targets = []
    for r in rows:
        by[(r["target"], r["test"])].append(r)
        if r["target"] not in targets:
            targets.append(r["target"])
    base = a.baseline if a.baseline in targets else targets[0]
    targets.remove(base)
    targets.insert(0, base)
    tests = {r["test"] for r in rows}
    load = next((t for t in sorted(tests) if t.startswith("load_c")), "load_c16")
    sload = next((t for t in sorted(tests) if t.startswith("stream_c") and t != "stream_c1"),
                 "stream_c16")
    lc, sc = load.removeprefix("load_c"), sload.removeprefix("stream_c")

    def M(t, test, key):
        return med([r.get(key) for r in by.get((t, test), [])])

    # (label, test, key, digits, better) ; better: "low" | "high" | None (no diff/ratio)
    spec = [
        ("latency p50, 1 conn (ms)", "lat_c1", "p50_ms", 3, "low"),
        ("latency p99, 1 conn (ms)", "lat_c1", "p99_ms", 3, "low"),
        ("req/s, 1 conn", "lat_c1", "rps", 0, "high"),
        (f"throughput, {lc} conns (req/s)", load, "rps", 0, "high"),
        (f"latency p50, {lc} conns (ms)", load, "p50_ms", 3, "low"),
        (f"latency p99, {lc} conns (ms)", load, "p99_ms", 3, "low"),
        ("stream TTFB p50, 1 conn (ms)", "stream_c1", "ttfb_p50_ms", 3, "low"),
        ("stream TTFB p99, 1 conn (ms)", "stream_c1", "ttfb_p99_ms", 3, "low"),
        ("stream total p50, 1 conn (ms)", "stream_c1", "total_p50_ms", 3, "low"),
        (f"streams/s, {sc} conns", sload, "streams_per_s", 0, "high"),
        ("paced stream TTFB p50 (ms)", "stream_paced", "ttfb_p50_ms", 2, "low"),
        ("paced stream total p50 (ms)", "stream_paced", "total_p50_ms", 1, "low"),
        ("gateway CPU µs/req, 1 conn", "lat_c1", "gw_cpu_us_per_req", 0, None),
        (f"gateway CPU µs/req, {lc} conns", load, "gw_cpu_us_per_req", 0, None),
        (f"gateway CPU µs/stream, {sc} conns", sload, "gw_cpu_us_per_req", 0, None),
        (f"CPU0 busy % (upstream+loadgen), {lc} conns", load, "cpu0_busy_pct", 0, None),
        (f"CPU1 busy % (gateway), {lc} conns", load, "cpu1_busy_pct", 0, None),
    ]

    def errors(t):
        n = 0
        for test in ("lat_c1", load):
            for r in by.get((t, test), []):
                n += sum(r.get(k, 0) or 0 for k in ERR_KEYS)
        for test in ("stream_c1", sload, "stream_paced"):
            for r in by.get((t, test), []):
                ok = r.get("n_ok", 0) or 0
                n += (r.get("n_err", 0) or 0) + round(
                    ok * (2 - r.get("done_frac", 1) - r.get("usage_frac", 1)))
        return n

    rounds = {t: len(by.get((t, "lat_c1"), [])) for t in targets}
    meta = rows[0]
    head = ", ".join(f"{k}={meta[k]}" for k in ("run_id", "workers", "db", "lat_d", "load_d")
                     if k in meta)
    print(f"Medians over rounds {rounds}; {head}. Differences and ratios are against "
          f"`{base}` from the same run.\n")
    others = targets[1:]
    cols = [base] + [c for t in others for c in (t, f"{t} − {base}", f"{t} / {base}")]
    print("| metric | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    out = {t: {} for t in targets}
    for label, test, key, nd, better in spec:
        vb = M(base, test, key)
        if all(M(t, test, key) is None for t in targets):
            continue
        cells = [fmt(vb, nd)]
        out[base][f"{test}.{key}"] = vb
        for t in others:
            v = M(t, test, key)
            out[t][f"{test}.{key}"] = v
            if better is None or v is None or vb is None:
                cells += [fmt(v, nd), "", ""]
                continue
            d = v - vb
            ratio = v / vb if vb else None
            out[t][f"{test}.{key}.diff"] = d
            out[t][f"{test}.{key}.ratio"] = ratio
            cells += [fmt(v, nd), ("+" if d >= 0 else "") + fmt(d, nd),
                      "-" if ratio is None else f"{ratio:.2f}×"]
        print(f"| {label} | " + " | ".join(cells) + " |")
    errs = {t: errors(t) for t in targets}
    cells = [str(errs[base])] + [c for t in others for c in (str(errs[t]), "", "")]
    print("| errors + bad streams | " + " | ".join(cells) + " |")
    for t in targets:
        out[t]["errors"] = errs[t]

    notes = []
    for t in others:
        p50d = out[t].get("lat_c1.p50_ms.diff")
        p99d = out[t].get("lat_c1.p99_ms.diff")
        rr = out[t].get(f"{load}.rps.ratio")
        td = out[t].get("stream_c1.ttfb_p50_ms.diff")
        if p50d is not None:
            notes.append(f"- `{t}` adds {fmt(p50d, 3)} ms at p50 and {fmt(p99d, 3)} ms at p99 "
                         f"with one connection"
                         + (f"; keeps {100 * rr:.0f}% of direct throughput at {lc} connections"
                            if rr is not None else "")
                         + (f"; adds {fmt(td, 3)} ms to stream TTFB." if td is not None else "."))
    for t in targets:
        ttfb, total = M(t, "stream_paced", "ttfb_p50_ms"), M(t, "stream_paced", "total_p50_ms")
        if ttfb is not None and total:
            ok = ttfb < 0.25 * total
            out[t]["paced_ttfb_over_total"] = ttfb / total
            out[t]["paced_not_buffered"] = ok
            notes.append(f"- paced stream via `{t}`: TTFB {fmt(ttfb)} ms vs total {fmt(total, 1)} ms "
                         f"({100 * ttfb / total:.0f}%) → "
                         + ("chunks relayed as they arrive (not buffered)." if ok
                            else "**TTFB close to total: the stream looks BUFFERED.**"))
    for t in targets:
        if errs[t]:
            notes.append(f"- **`{t}`: {errs[t]} errors/bad streams — its figures are suspect.**")
        c0 = M(t, load, "cpu0_busy_pct")
        if t != base and c0 is not None and c0 > 90:
            notes.append(f"- CPU0 was {c0:.0f}% busy during `{t}` {load}: the upstream/load-generator "
                         "core was saturated (by other load, if the gateway's req/s are low), so "
                         f"`{t}`'s figures may be understated.")
        if t == base and c0 is not None and c0 > 97:
            notes.append(f"- CPU0 was {c0:.0f}% busy during `{t}` {load}: that throughput is "
                         "capped by the core the upstream shares with the load generator, so "
                         "throughput ratios are upper bounds; gateway CPU µs/req is the "
                         "load-independent figure.")
    if base == "direct":  # nothing of ours runs on CPU1 while direct is measured
        busy = [r.get("cpu1_busy_pct") for test in ("lat_c1", load) for r in by.get((base, test), [])]
        busy = [b for b in busy if b is not None]
        if busy and max(busy) > 15:
            notes.append(f"- CPU1 was up to {max(busy):.0f}% busy while `direct` ran (nothing of the "
                         "bench runs there then): other load on the machine; expect noise, use ROUNDS>1.")
    if meta.get("workers", 1) not in (1, "1", None):
        notes.append(f"- WORKERS={meta['workers']}: the gateway ran on both cores, sharing CPU0 with "
                     "the upstream and the load generator: throughput/latency are not isolated.")
    if notes:
        print()
        print("\n".join(notes))
    if a.json_out:
        with open(a.json_out, "w") as fh:
            for t in targets:
                fh.write(json.dumps({"target": t, "baseline": base, **{
                    k: meta[k] for k in ("run_id", "workers", "db") if k in meta}, **out[t]}) + "\n")


if __name__ == "__main__":
    main()
