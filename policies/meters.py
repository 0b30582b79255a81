"""Meters: turn a call's usage and wall time into ledger units (SPEC §5). Integer math only."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from decimal import Decimal

from policies import provider_prices
from policies.provider_prices import PriceBook, TokenUsage
from policies.schema import DurationMeter, FixedMeter, TokenPrice, TokensMeter
from policies.units import TIME, UnitKind, UnitOfAccount
from storage.clock import MS_PER_SECOND

_PER_TOKENS = 1_000_000
_MATCHED_MAX = 1024  # pattern-priced model names remembered per pricer


class UnpricedModel(Exception):
    """The route meters tokens but has no price for this model: the call is denied."""

    def __init__(self, model: str | None) -> None:
        self.model = model
        super().__init__(f"no price for model {model!r}")


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage of one call, normalized across providers.

    `input_tokens` counts every prompt token including cached ones; `cached_tokens` is the
    cached part of them; `reasoning_tokens` is the part of `output_tokens` spent reasoning.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    # The part of input written to a prompt cache (Anthropic). Only provider prices tell it
    # apart (explicit prices charge it as input), so it takes no part in equality.
    cache_write_tokens: int = field(default=0, compare=False)

    def token_usage(self) -> TokenUsage:
        """The price source's view of this usage (provider_prices.TokenUsage)."""
        return TokenUsage(input_tokens=self.input_tokens, cached_input_tokens=self.cached_tokens,
                          cache_write_tokens=self.cache_write_tokens,
                          output_tokens=self.output_tokens, reasoning_tokens=self.reasoning_tokens)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True, slots=True)
class LedgerPrice:
    """A model's price in ledger units per 1,000,000 tokens of each usage class (integers)."""

    input: int
    output: int
    cached_input: int
    reasoning: int


def ledger_price(price: TokenPrice, unit: UnitOfAccount) -> LedgerPrice:
    """`price` as written in the policy (schema.TokenPrice: time — ms per 1M tokens; currency —
    currency units per 1M tokens; tokens — ledger tokens per token) in ledger units per 1M
    tokens. Exact: the schema allows at most 6 decimals, unit_checks whole ms for time."""
    def per_million(value: Decimal) -> int:
        if unit.kind is UnitKind.CURRENCY:
            return unit.from_api(value)
        if unit.kind is UnitKind.TOKENS:
            return int(value * _PER_TOKENS)
        return int(value)

    inp, out = per_million(price.input), per_million(price.output)
    return LedgerPrice(
        input=inp, output=out,
        cached_input=inp if price.cached_input is None else per_million(price.cached_input),
        reasoning=out if price.reasoning is None else per_million(price.reasoning))


ONE_FOR_ONE = LedgerPrice(_PER_TOKENS, _PER_TOKENS, _PER_TOKENS, _PER_TOKENS)
"""A tokens deployment's price of a model no key weights: a ledger token per token."""


class TokenPricer:
    """Prices tokens per model for a `tokens` meter from its explicit prices (`prices`, or
    `overrides` under `prices: provider`); patterns are tried after exact keys. A tokens
    deployment prices a model no key matches one for one; elsewhere such a model is unpriced
    (the provider pricer, when there is one, is asked next: Meter)."""

    def __init__(self, spec: TokensMeter, unit: UnitOfAccount = TIME) -> None:
        self.minimum = spec.minimum
        prices = spec.overrides if spec.prices == "provider" else (spec.prices or {})
        self.fallback = ONE_FOR_ONE if unit.kind is UnitKind.TOKENS else None
        self._exact = {k: ledger_price(v, unit) for k, v in prices.items()}
        self._patterns = [(k, v) for k, v in self._exact.items() if any(c in k for c in "*?[")]
        # Models a pattern priced, so a call pays one dict lookup, not a glob match per pattern
        # (bounded: model names come from requests).
        self._matched: dict[str, LedgerPrice] = {}

    def lookup(self, model: str | None) -> LedgerPrice | None:
        """The explicit price of `model` (exact key, then patterns in order), else None."""
        if model:
            hit = self._exact.get(model) or self._matched.get(model)
            if hit is not None:
                return hit
            for pattern, price in self._patterns:
                if fnmatch.fnmatchcase(model, pattern):
                    if len(self._matched) < _MATCHED_MAX:
                        self._matched[model] = price
                    return price
        return None

    def price_for(self, model: str | None) -> LedgerPrice:
        """The price of `model`. Raises UnpricedModel when none matches and there is no
        fallback."""
        hit = self.lookup(model)
        if hit is not None:
            return hit
        if self.fallback is not None:
            return self.fallback
        raise UnpricedModel(model)

    def cost(self, model: str | None, usage: Usage) -> int:
        """Ledger units for `usage` on `model`: ceil(Σ tokens × price / 1e6), >= minimum.

        Raises UnpricedModel for an unknown model.
        """
        p = self.price_for(model)
        cached = min(usage.cached_tokens, usage.input_tokens)
        reasoning = min(usage.reasoning_tokens, usage.output_tokens)
        micro = (
            (usage.input_tokens - cached) * p.input
            + cached * p.cached_input
            + (usage.output_tokens - reasoning) * p.output
            + reasoning * p.reasoning
        )
        return max(self.minimum, _ceil_div(micro, _PER_TOKENS))


def duration_cost(spec: DurationMeter, duration_ms: int) -> int:
    """Ledger units for `duration_ms` of upstream wall time under a duration meter."""
    raw = _ceil_div(max(0, duration_ms) * spec.units_per_second, MS_PER_SECOND)
    rounded = _ceil_div(raw, spec.round_up_to) * spec.round_up_to
    return max(spec.minimum, rounded)


class ProviderPricer:
    """`prices: provider` (issue 10): a call's charge is the provider's list price for its usage
    (genai-prices: input, cached input, cache writes, output with reasoning) × (1 + markup/100),
    rounded up to the ledger unit (USD micro-units: the ledger unit of a USD deployment).
    Resolution is cached per (provider, model) by the price book."""

    def __init__(self, provider: str | None, markup_percent: Decimal,
                 book: PriceBook | None = None) -> None:
        self.provider = provider
        self.markup_percent = markup_percent
        self.book = book or provider_prices.price_book()

    def check(self, model: str | None) -> None:
        """Raise UnpricedModel unless the price source knows `model` at this provider."""
        if self.provider is None or not self.book.knows(self.provider, model):
            raise UnpricedModel(model)

    def cost(self, model: str | None, usage: Usage) -> int:
        """USD micro-units of `usage` at list price with the markup, rounded up. Raises
        UnpricedModel for a model the price source does not know."""
        if self.provider is None:
            raise UnpricedModel(model)
        try:
            quote = self.book.quote(self.provider, model, usage.token_usage())
        except provider_prices.UnpricedModel:
            raise UnpricedModel(model) from None
        return quote.charge_micros(self.markup_percent)


class Meter:
    """A compiled meter. `cost(model, usage, duration_ms)` returns ledger units of `unit`.

    `kind` is "tokens", "duration" or "fixed". `check_model(model)` raises UnpricedModel on a
    tokens meter without a price for `model` (called before admission: unknown means denied).
    A tokens meter prices a model by its explicit price (`prices`, or `overrides` over provider
    prices), else by the provider's list price (`prices: provider`, with `price_provider`: the
    genai-prices provider id of the route's upstream), else one for one (tokens deployments).
    """

    def __init__(self, spec: TokensMeter | DurationMeter | FixedMeter,
                 unit: UnitOfAccount = TIME, price_provider: str | None = None) -> None:
        self.spec = spec
        self.kind = spec.type
        self.unit = unit
        self.pricer: TokenPricer | None = None
        self.provider: ProviderPricer | None = None
        if isinstance(spec, TokensMeter):
            self.pricer = TokenPricer(spec, unit)
            if spec.prices == "provider":
                self.provider = ProviderPricer(price_provider, spec.markup_percent or Decimal(0))

    def check_model(self, model: str | None) -> None:
        """Raise UnpricedModel when a tokens meter has no price for `model`."""
        if self.pricer is None:
            return
        if self.provider is not None and self.pricer.lookup(model) is None:
            self.provider.check(model)
        else:
            self.pricer.price_for(model)

    def cost(self, model: str | None, usage: Usage | None, duration_ms: int) -> int:
        """Ledger units of one call; `usage` None counts as zero tokens."""
        spec = self.spec
        if isinstance(spec, FixedMeter):
            return spec.units
        if isinstance(spec, DurationMeter):
            return duration_cost(spec, duration_ms)
        assert self.pricer is not None
        used = usage or Usage()
        if self.provider is not None and self.pricer.lookup(model) is None:
            return max(self.pricer.minimum, self.provider.cost(model, used))
        return self.pricer.cost(model, used)
