"""CPU cost of tracing per proxied call (issue 13 item 5: "no cost when disabled").

One process per measurement: a gateway on the in-process store (`memory://`), called through
httpx's ASGITransport (no gateway socket), against the fake upstream (its own thread). The
figure is the calling thread's CPU time (`time.thread_time`: the gateway's work plus the
in-process client's, not the fake upstream's) per non-streamed chat call, after a warm-up.

    python bench/tracing_cost.py [ROUNDS] [CALLS] [TREE=off ...]

runs, alternated for ROUNDS rounds, each `label=path` as a child process whose PYTHONPATH is
that source tree (`off`: tracing off; a label ending in `+on` traces to a discarding exporter,
synchronously), and prints the median µs per call of each and the ratios to the first.
Example: `python bench/tracing_cost.py 5 2000 main=/work/main off=. on+on=.`
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


async def _measure(calls: int, traced: bool) -> float:
    import httpx

    from gateway.app import MEMORY_URL, Gateway
    from gateway.settings import Settings
    from storage.engine.buckets import Source
    from tests.fakes.upstream import FakeUpstream

    options: dict[str, Any] = {}
    if traced:
        from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

        class Discard(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        options["span_exporter"] = Discard()
    with FakeUpstream() as up, tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env({
            "GATEWAY_POLICY_PATH": str(HERE.parent / "tests" / "e2e" / "policies.yaml"),
            "GATEWAY_UNBILLED_PATH": str(Path(tmp) / "unbilled.jsonl"),
            "GATEWAY_KEY_CACHE_TTL_S": "600", "OPENAI_BASE_URL": up.url + "/v1",
            "OPENAI_API_KEY": "sk-upstream", "ANTHROPIC_BASE_URL": up.url,
            "ANTHROPIC_API_KEY": "sk-upstream"})
        app = Gateway(settings.model_copy(update={"database_url": MEMORY_URL}), **options)
        async with app.web.router.lifespan_context(app.web):
            s = app.services
            assert s is not None
            account = await s.accounts.create_account(s.policy.plans["payg"])
            await s.ledger.grant(account, Source.GIFT, 10**12, "bench", None, "bench")
            _key_id, key = await s.accounts.create_api_key(account)
            body = {"model": "gpt-fake", "max_tokens": 7,
                    "messages": [{"role": "user", "content": "how much does a span cost?"}]}
            headers = {"authorization": f"Bearer {key}"}
            transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                for _ in range(max(100, calls // 10)):  # warm-up: caches, pools, JIT-less paths
                    r = await client.post("/v1/chat/completions", json=body, headers=headers)
                    assert r.status_code == 200, r.text
                up.requests.clear()
                start = time.thread_time()
                for _ in range(calls):
                    await client.post("/v1/chat/completions", json=body, headers=headers)
                return (time.thread_time() - start) / calls * 1e6


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--child":
        print(asyncio.run(_measure(int(argv[1]), argv[2] == "on")))
        return
    rounds, calls = (int(argv[0]), int(argv[1])) if len(argv) >= 2 else (5, 2000)
    variants = [a.split("=", 1) for a in argv[2:]] or [["off", "."]]
    results: dict[str, list[float]] = {label: [] for label, _ in variants}
    for _ in range(rounds):
        for label, tree in variants:
            env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
            # the fake upstream and this script come from this tree's tests/ either way
            env["PYTHONPATH"] += os.pathsep + str(HERE.parent)
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(calls),
                 "on" if label.endswith("+on") else "off"],
                env=env, check=True, capture_output=True, text=True).stdout
            results[label].append(float(out.strip().splitlines()[-1]))
    base = statistics.median(results[variants[0][0]])
    for label, values in results.items():
        median = statistics.median(values)
        print(f"{label:>10}: median {median:8.1f} µs CPU/call  ratio {median / base:.3f}  "
              f"runs {[round(v, 1) for v in values]}")


if __name__ == "__main__":
    main(sys.argv[1:])
