#!/usr/bin/env python3
"""What pricing costs (issue 10): before (AI time, explicit per-model prices) and after (USD
credits at provider list prices via genai-prices with a markup; tokens one for one), in one run.

    python bench/pricing.py [--calls 20000] [--requests 300] [--rounds 3]

1. The meter alone: ns per `Meter.cost` call for each pricing, and its ratio to the time
   meter. Provider prices are resolved once per (provider, model) and cached (PriceBook), so a
   call costs a dict hit plus a handful of Decimal products.
2. The proxy path: mean and p50 latency of non-stream chat calls through a gateway on SQLite
   against the fake upstream, time policy vs USD provider-price policy, alternating rounds so
   both see the same machine load; the ratio after/before is what pricing adds.

Everything runs on this machine (loopback only), bounded in count.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from policies.meters import Meter, Usage
from policies.schema import TokensMeter
from policies.units import TIME, UnitKind, UnitOfAccount
from tests.fakes.upstream import FakeUpstream
from tests.support import start_gateway

ROOT = Path(__file__).resolve().parent.parent
TIME_POLICY = ROOT / "tests" / "e2e" / "policies.yaml"
USD_POLICY = ROOT / "tests" / "e2e" / "policies_usd.yaml"
USAGE = Usage(input_tokens=1_234, output_tokens=321, cached_tokens=200, reasoning_tokens=0)


def meter_ns(meter: Meter, model: str, calls: int) -> float:
    meter.cost(model, USAGE, 0)  # resolve (and cache) once
    start = time.perf_counter_ns()
    for _ in range(calls):
        meter.cost(model, USAGE, 0)
    return (time.perf_counter_ns() - start) / calls


def meters(calls: int) -> None:
    usd = UnitOfAccount(UnitKind.CURRENCY, "USD")
    cases = [
        ("time, explicit prices (before)", Meter(TokensMeter(
            type="tokens", prices={"gpt-4o*": {"input": 150_000, "output": 600_000}}), TIME),
         "gpt-4o-mini"),
        ("USD, explicit prices", Meter(TokensMeter(
            type="tokens", prices={"gpt-4o*": {"input": 0.15, "output": 0.60}}), usd),
         "gpt-4o-mini"),
        ("USD, provider prices +25%", Meter(TokensMeter(
            type="tokens", prices="provider", markup_percent=25), usd, "openai"), "gpt-4o-mini"),
        ("tokens, one for one", Meter(TokensMeter(type="tokens"), UnitOfAccount(
            UnitKind.TOKENS)), "gpt-4o-mini"),
    ]
    base = None
    print(f"meter cost per call ({calls} calls each)")
    for name, meter, model in cases:
        ns = meter_ns(meter, model, calls)
        base = base or ns
        print(f"  {name:<32} {ns / 1000:8.2f} µs   ×{ns / base:5.2f}")


def proxy(requests: int, rounds: int) -> None:
    body = {"model": "gpt-4o-mini", "max_tokens": 8,
            "messages": [{"role": "user", "content": "How much does this cost?"}]}
    timings: dict[str, list[float]] = {"time": [], "usd": []}
    with FakeUpstream() as up, tempfile.TemporaryDirectory() as tmp:
        env = {"OPENAI_BASE_URL": up.url + "/v1", "OPENAI_API_KEY": "sk-bench",
               "ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": "sk-bench"}
        gateways = {}
        for name, policy in (("time", TIME_POLICY), ("usd", USD_POLICY)):
            path = Path(tmp) / name
            path.mkdir()
            gateways[name] = start_gateway(path, env, [policy])
        try:
            keys = {n: g.ledger.funded(10**15)[1] for n, g in gateways.items()}
            models = {"time": "gpt-fake", "usd": "gpt-4o-mini"}
            for _ in range(rounds):
                for name, gw in gateways.items():
                    with httpx.Client(base_url=gw.url, timeout=10) as client:
                        sent = {**body, "model": models[name]}
                        head = {"authorization": f"Bearer {keys[name]}"}
                        for _ in range(10):  # warm the connection and caches
                            client.post("/v1/chat/completions", json=sent, headers=head)
                        for _ in range(requests):
                            t0 = time.perf_counter()
                            r = client.post("/v1/chat/completions", json=sent, headers=head)
                            timings[name].append(time.perf_counter() - t0)
                            assert r.status_code == 200, r.text
        finally:
            for gw in gateways.values():
                gw.stop()
    print(f"proxy path, non-stream chat ({rounds} alternating rounds × {requests} calls)")
    mean = {n: statistics.fmean(v) for n, v in timings.items()}
    p50 = {n: statistics.median(v) for n, v in timings.items()}
    for n in timings:
        print(f"  {n:<5} mean {mean[n] * 1000:7.3f} ms   p50 {p50[n] * 1000:7.3f} ms")
    print(f"  after/before: mean ×{mean['usd'] / mean['time']:.3f}, "
          f"p50 ×{p50['usd'] / p50['time']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="meter calls per case")
    parser.add_argument("--requests", type=int, default=300, help="proxy calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating proxy rounds")
    args = parser.parse_args()
    meters(args.calls)
    proxy(args.requests, args.rounds)


if __name__ == "__main__":
    main()
