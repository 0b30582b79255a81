"""Issue 10 items 2–3: a call's provider cost is quoted from the same price source as its
charge — the upstream's `price_provider:` when set, else the protocol's provider."""

from __future__ import annotations

import asyncio
import textwrap
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
from genai_prices import data_snapshot

from gateway.proxy.costs import cost_fields, price_providers, provider_for, warm_prices
from policies.compiled import load_policy
from policies.meters import Usage
from policies.provider_prices import TokenUsage, price_book

POLICY = """\
unit: { kind: currency, currency: USD }
plans:
  free: { daily_bonus: 0.50 }
catalog:
  version: "v1"
  packages:
    - { key: ten, name: Ten, credits: 10.00, prices: { USD: 1000 } }
upstreams:
  compat: { base_url: "https://compat.example.com", price_provider: anthropic }
  plain_openai: { base_url: "https://api.example.com" }
routes:
  - operation: chat
    path: /v1/chat/completions
    upstream: compat
    protocol: openai_chat
    meter: { type: tokens, prices: provider }
    estimate: { type: fixed, units: 5 }
  - operation: responses
    path: /v1/responses
    upstream: plain_openai
    protocol: openai_responses
    meter: { type: tokens, prices: provider }
    estimate: { type: fixed, units: 5 }
"""

MODEL = "claude-3-5-haiku-20241022"


def test_cost_uses_the_upstreams_price_provider_like_the_charge(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(POLICY), encoding="utf-8")
    policy = load_policy([path], {})
    compat, plain = policy.routes
    assert provider_for(compat) == "anthropic"  # the upstream's price_provider, not openai
    assert provider_for(plain) == "openai"  # no price_provider: the protocol's provider
    tokens = TokenUsage(input_tokens=12_000, output_tokens=3_000)
    fields = cost_fields(compat, MODEL, tokens, datetime.now(UTC), None)
    charged = compat.meter.cost(MODEL, Usage(input_tokens=12_000, output_tokens=3_000,
                                             cached_tokens=0, cache_write_tokens=0), 0)
    assert fields["provider"] == "anthropic" and "cost_reason" not in fields
    # claude-3.5-haiku lists $0.80 / $4 per MTok: 12k in + 3k out = $0.0096 + $0.012
    assert fields["total_cost"] == 21_600 == charged


def test_price_data_is_warmed_once_off_the_event_loop(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(POLICY), encoding="utf-8")
    policy = load_policy([path], {})
    seen: list[tuple[set[str], int]] = []
    book = price_book()
    real_warm = book.warm

    def warm(providers) -> None:
        seen.append((set(providers), threading.get_ident()))
        real_warm(providers)

    monkeypatch.setattr(book, "warm", warm)
    loop_thread = threading.get_ident()
    assert asyncio.run(warm_prices(policy)) == {"anthropic", "openai"}
    [(providers, thread)] = seen
    assert providers == {"anthropic", "openai"} and thread != loop_thread
    assert data_snapshot._bundled_snapshot.cache_info().currsize == 1  # loaded


def test_nothing_is_warmed_when_no_route_is_priced(tmp_path: Path, monkeypatch) -> None:
    text = POLICY.replace("protocol: openai_chat\n    meter: { type: tokens, prices: provider }",
                          "protocol: plain\n    meter: { type: fixed, units: 5 }")
    text = text.split("  - operation: responses")[0]
    text = text.replace(", price_provider: anthropic", "")
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    policy = load_policy([path], {})
    monkeypatch.setattr(price_book(), "warm", lambda providers: pytest.fail("warmed"))
    assert price_providers(policy) == set()
    assert asyncio.run(warm_prices(policy)) == set()
