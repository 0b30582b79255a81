"""Meters: turn a call's usage and wall time into ledger units (SPEC §5). Integer math only."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from policies.schema import DurationMeter, FixedMeter, TokenPrice, TokensMeter
from storage.clock import MS_PER_SECOND

_PER_TOKENS = 1_000_000


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


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class TokenPricer:
    """Prices tokens per model for a `tokens` meter; patterns are tried after exact keys."""

    def __init__(self, spec: TokensMeter) -> None:
        self.minimum = spec.minimum
        self._exact = dict(spec.prices)
        self._patterns = [(k, v) for k, v in spec.prices.items() if any(c in k for c in "*?[")]

    def price_for(self, model: str | None) -> TokenPrice:
        """The price entry of `model`. Raises UnpricedModel when none matches."""
        if model:
            hit = self._exact.get(model)
            if hit is not None:
                return hit
            for pattern, price in self._patterns:
                if fnmatch.fnmatchcase(model, pattern):
                    return price
        raise UnpricedModel(model)

    def cost(self, model: str | None, usage: Usage) -> int:
        """Ledger units for `usage` on `model`: ceil(Σ tokens × price / 1e6), >= minimum.

        Raises UnpricedModel for an unknown model.
        """
        p = self.price_for(model)
        cached = min(usage.cached_tokens, usage.input_tokens)
        reasoning = min(usage.reasoning_tokens, usage.output_tokens)
        cached_price = p.input if p.cached_input is None else p.cached_input
        reasoning_price = p.output if p.reasoning is None else p.reasoning
        micro = (
            (usage.input_tokens - cached) * p.input
            + cached * cached_price
            + (usage.output_tokens - reasoning) * p.output
            + reasoning * reasoning_price
        )
        return max(self.minimum, _ceil_div(micro, _PER_TOKENS))


def duration_cost(spec: DurationMeter, duration_ms: int) -> int:
    """Ledger units for `duration_ms` of upstream wall time under a duration meter."""
    raw = _ceil_div(max(0, duration_ms) * spec.units_per_second, MS_PER_SECOND)
    rounded = _ceil_div(raw, spec.round_up_to) * spec.round_up_to
    return max(spec.minimum, rounded)


class Meter:
    """A compiled meter. `cost(model, usage, duration_ms)` returns ledger units.

    `kind` is "tokens", "duration" or "fixed". `check_model(model)` raises UnpricedModel on a
    tokens meter without a price for `model` (called before admission: unknown means denied).
    """

    def __init__(self, spec: TokensMeter | DurationMeter | FixedMeter) -> None:
        self.spec = spec
        self.kind = spec.type
        self.pricer = TokenPricer(spec) if isinstance(spec, TokensMeter) else None

    def check_model(self, model: str | None) -> None:
        """Raise UnpricedModel when a tokens meter has no price for `model`."""
        if self.pricer is not None:
            self.pricer.price_for(model)

    def cost(self, model: str | None, usage: Usage | None, duration_ms: int) -> int:
        """Ledger units of one call; `usage` None counts as zero tokens."""
        spec = self.spec
        if isinstance(spec, FixedMeter):
            return spec.units
        if isinstance(spec, DurationMeter):
            return duration_cost(spec, duration_ms)
        assert self.pricer is not None
        return self.pricer.cost(model, usage or Usage())
