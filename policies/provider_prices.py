"""Provider list prices from pydantic's `genai-prices` (issue 10 items 2–3).

The library bundles its price data (no network at run time); prices move when the package is
upgraded, and every quote carries the price-data version (`PRICE_DATA_VERSION`, the package's
version) so a usage record says which prices it was priced with.

Units: token counts are integers; money is USD. `ProviderCost` gives each usage class exactly
(`Decimal` USD) and the prompt/completion/total sides in USD micro-units (1e-6 USD, integers),
each side rounded up to the micro-unit (the operator's favour: a cost is never understated) and
`total_micros = prompt_micros + completion_micros`, so records always add up to their sums.

Usage classes (the library's units, `genai_prices/data_units.py`): input (uncached prompt
tokens), cached input (`cache_read_tokens`), cache writes (`cache_write_tokens`), output (which
includes reasoning tokens: the library prices reasoning as output, so it has no class of its
own), and a per-request price where a model has one. Tiered prices (e.g. above 200k input
tokens) are chosen by the call's total input tokens, as the library does.

Performance: the (provider, model) → price entry resolution is cached once per pair (misses
too), and so is the plan of each price entry; a quote is then a handful of Decimal products.
A plan is checked once against the library's own `ModelPrice.calc_price` on probe usages; an
entry the plan does not reproduce exactly (prices on modalities the gateway does not report)
is priced by the library on every call instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import ModelInfo, ModelPrice, Provider, calc_unit_price

PRICE_DATA_VERSION: str = genai_prices.__version__
"""Version of the bundled price data (the `genai-prices` package version), e.g. `0.2.3`."""

_MICROS = Decimal(1_000_000)
_PER_MTOK = 1_000_000

# The provider the library knows for each upstream protocol, when the policy names none.
DEFAULT_PROVIDERS: dict[str, str] = {
    "openai_chat": "openai",
    "openai_responses": "openai",
    "openai_embeddings": "openai",
    "anthropic_messages": "anthropic",
}


class UnpricedModel(LookupError):
    """The price source does not know this (provider, model): the call cannot be priced.

    `reason` is a short machine-readable cause: `unknown-provider`, `unknown-model` or
    `no-model` (the call named none)."""

    def __init__(self, provider: str, model: str | None, reason: str) -> None:
        self.provider = provider
        self.model = model
        self.reason = reason
        super().__init__(f"{reason}: no provider price for {provider}/{model}")


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token usage of one call, in the price source's terms (all counts are tokens, ≥ 0).

    - `input_tokens`: every prompt token, cached reads and cache writes included (OpenAI
      `prompt_tokens`/`input_tokens`; Anthropic `input_tokens + cache_read_input_tokens +
      cache_creation_input_tokens`).
    - `cached_input_tokens`: the part of the input read from the provider's prompt cache.
    - `cache_write_tokens`: the part of the input written to the prompt cache (Anthropic).
    - `output_tokens`: every completion token, reasoning included.
    - `reasoning_tokens`: the part of the output spent reasoning (informational: priced as
      output).
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def library_usage(self) -> genai_prices.Usage:
        """The same usage as a `genai_prices.Usage` (cached/cache-write parts clamped to input)."""
        cached = min(self.cached_input_tokens, self.input_tokens)
        write = min(self.cache_write_tokens, self.input_tokens - cached)
        return genai_prices.Usage(input_tokens=self.input_tokens, cache_read_tokens=cached,
                                  cache_write_tokens=write, output_tokens=self.output_tokens)


@dataclass(frozen=True, slots=True)
class ProviderCost:
    """A call's provider cost at the provider's list price.

    `provider`/`model`: the price source's ids (`openai`, `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`).
    `classes`: exact USD per usage class priced (`input`, `cached_input`, `cache_write`,
    `output`, `requests`; or only `input`/`output` when the library priced the call itself).
    `input_usd`/`output_usd`/`total_usd`: exact USD sides (Decimal).
    `prompt_micros`/`completion_micros`: USD micro-units, each side rounded up;
    `total_micros` is their sum. `price_version`: the price data's version.
    """

    provider: str
    model: str
    input_usd: Decimal
    output_usd: Decimal
    prompt_micros: int
    completion_micros: int
    price_version: str
    classes: dict[str, Decimal] = field(default_factory=dict)

    @property
    def total_usd(self) -> Decimal:
        """Exact USD of the call (input + output sides)."""
        return self.input_usd + self.output_usd

    @property
    def total_micros(self) -> int:
        """USD micro-units of the call: `prompt_micros + completion_micros`."""
        return self.prompt_micros + self.completion_micros

    def charge_micros(self, markup_percent: Decimal | int = 0) -> int:
        """The exact cost times (1 + markup_percent/100), rounded up to the micro-unit: a charge
        never below the marked-up list price and at most one micro-unit above it. Raises
        ValueError for a negative markup."""
        markup = Decimal(markup_percent)
        if markup < 0:
            raise ValueError("markup_percent must be ≥ 0")
        return ceil_micros(self.total_usd * (100 + markup) / 100)


def ceil_micros(usd: Decimal) -> int:
    """USD micro-units of an exact USD amount, rounded up (toward +inf)."""
    return int((usd * _MICROS).to_integral_value(rounding=ROUND_CEILING))


_PROBES = (TokenUsage(1_003, 101, 17, 509), TokenUsage(250_007, 30_011, 5_003, 7_001),
           TokenUsage(12, 0, 0, 0), TokenUsage(0, 0, 0, 3))


@dataclass(frozen=True, slots=True)
class _Plan:
    """How to price one `ModelPrice`: the four token prices, or None to call the library."""

    input: Any
    cache_read: Any
    cache_write: Any
    output: Any
    requests: Any

    def quote(self, u: TokenUsage) -> dict[str, Decimal]:
        cached = min(u.cached_input_tokens, u.input_tokens) if self.cache_read is not None else 0
        write = (min(u.cache_write_tokens, u.input_tokens - cached)
                 if self.cache_write is not None else 0)
        n = u.input_tokens
        out = {"input": calc_unit_price(self.input, n - cached - write, n, _PER_MTOK),
               "output": calc_unit_price(self.output, u.output_tokens, n, _PER_MTOK)}
        if self.cache_read is not None:
            out["cached_input"] = calc_unit_price(self.cache_read, cached, n, _PER_MTOK)
        if self.cache_write is not None:
            out["cache_write"] = calc_unit_price(self.cache_write, write, n, _PER_MTOK)
        if self.requests is not None:
            out["requests"] = calc_unit_price(self.requests, 1, n, 1_000)
        return out


def _plan_for(price: ModelPrice) -> _Plan | None:
    """A fast plan reproducing the library on every probe, else None (price by the library)."""
    plan = _Plan(input=price.input_mtok, cache_read=price.cache_read_mtok,
                 cache_write=price.cache_write_mtok, output=price.output_mtok,
                 requests=price.requests_kcount)
    if plan.input is None and plan.output is None:
        return None
    try:
        for probe in _PROBES:
            mine = plan.quote(probe)
            lib = price.calc_price(probe.library_usage())
            inp = sum((v for k, v in mine.items() if k != "output"), Decimal(0))
            if lib["total_price"] != inp + mine["output"] or lib["output_price"] != mine["output"]:
                return None
    except ValueError:
        return None
    return plan


class PriceBook:
    """Quotes calls at provider list prices; resolution cached per (provider, model).

    Thread-safe (the caches are filled under a lock). `quote(...)` raises `UnpricedModel` for a
    provider or model the bundled price data does not know."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[tuple[str, str], tuple[Provider, ModelInfo] | UnpricedModel] = {}
        self._plans: dict[int, tuple[ModelPrice, _Plan | None]] = {}

    def resolve(self, provider: str, model: str | None) -> tuple[Provider, ModelInfo]:
        """The price source's provider and model for a provider id and a model name as the call
        named it. Raises UnpricedModel (cached: unknown pairs are looked up once)."""
        if not model:
            raise UnpricedModel(provider, model, "no-model")
        key = (provider, model)
        hit = self._models.get(key)
        if hit is None:
            hit = self._lookup(provider, model)
            with self._lock:
                self._models[key] = hit
        if isinstance(hit, UnpricedModel):
            raise hit
        return hit

    @staticmethod
    def _lookup(provider: str, model: str) -> tuple[Provider, ModelInfo] | UnpricedModel:
        snapshot = data_snapshot.get_snapshot()
        try:
            snapshot.find_provider(None, provider, None)
        except LookupError:
            return UnpricedModel(provider, model, "unknown-provider")
        try:
            return snapshot.find_provider_model(model, None, provider, None)
        except LookupError:
            return UnpricedModel(provider, model, "unknown-model")

    def warm(self, providers: Iterable[str]) -> None:
        """Load the bundled price data (genai-prices parses it on first use: tenths of a second
        of CPU, more on a cold start) and look each provider up once, so that the first priced
        call does not pay for it. Blocking: call it off the event loop. Unknown providers are
        ignored (their calls are recorded unpriced)."""
        snapshot = data_snapshot.get_snapshot()
        for provider in providers:
            with contextlib.suppress(LookupError):
                snapshot.find_provider(None, provider, None)

    def knows(self, provider: str, model: str | None) -> bool:
        """True when `quote` can price this pair."""
        try:
            self.resolve(provider, model)
        except UnpricedModel:
            return False
        return True

    def _plan(self, price: ModelPrice) -> _Plan | None:
        hit = self._plans.get(id(price))
        if hit is None or hit[0] is not price:
            hit = (price, _plan_for(price))
            with self._lock:
                self._plans[id(price)] = hit
        return hit[1]

    def quote(self, provider: str, model: str | None, usage: TokenUsage,
              at: datetime | None = None) -> ProviderCost:
        """The provider cost of `usage` on `model` at time `at` (UTC; default now: the price in
        force then, for prices with start dates). Raises UnpricedModel."""
        prov, info = self.resolve(provider, model)
        when = at if at is not None else datetime.now(UTC)
        price = info.get_prices(when)
        plan = self._plan(price)
        if plan is not None:
            classes = plan.quote(usage)
            output = classes["output"]
            inp = sum((v for k, v in classes.items() if k != "output"), Decimal(0))
        else:
            calc = price.calc_price(usage.library_usage())
            output = calc["output_price"]
            inp = calc["total_price"] - output  # input side plus any per-request price
            classes = {"input": inp, "output": output}
        return ProviderCost(
            provider=prov.id, model=info.id, input_usd=inp, output_usd=output,
            prompt_micros=ceil_micros(inp), completion_micros=ceil_micros(output),
            price_version=PRICE_DATA_VERSION, classes=classes)


_DEFAULT_BOOK = PriceBook()


def price_book() -> PriceBook:
    """The process-wide price book (its caches are shared by every caller)."""
    return _DEFAULT_BOOK


def quote(provider: str, model: str | None, usage: TokenUsage,
          at: datetime | None = None) -> ProviderCost:
    """`price_book().quote(...)`: the provider cost of a call. Raises UnpricedModel."""
    return _DEFAULT_BOOK.quote(provider, model, usage, at)
