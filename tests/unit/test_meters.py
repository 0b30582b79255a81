"""Meters and estimates (SPEC §5): integer ledger units (ms of AI time), prices per 1M tokens."""

from __future__ import annotations

import pytest

from policies.estimates import Estimator
from policies.meters import Meter, TokenPricer, UnpricedModel, Usage, duration_cost
from policies.schema import (
    DurationMeter,
    FixedEstimate,
    FixedMeter,
    LearnedEstimate,
    RequestEstimate,
    TokensMeter,
)


def tokens_meter(prices: dict, minimum: int = 0) -> TokensMeter:
    return TokensMeter.model_validate({"type": "tokens", "prices": prices, "minimum": minimum})


def duration_meter(**kw: int) -> DurationMeter:
    return DurationMeter.model_validate({"type": "duration", **kw})


MINI = {"input": 60_000, "output": 240_000, "cached_input": 30_000}


# --- tokens ----------------------------------------------------------------------------------


def test_token_cost_is_exact_integer_math() -> None:
    pricer = TokenPricer(tokens_meter({"m": MINI}))
    # 1000 × 60000 + 500 × 240000 = 180,000,000 micro-units → exactly 180
    assert pricer.cost("m", Usage(input_tokens=1000, output_tokens=500)) == 180
    # huge counts stay exact (no float rounding)
    big = 10**15 + 1
    assert pricer.cost("m", Usage(input_tokens=big)) == -(-big * 60_000 // 1_000_000)


def test_token_cost_rounds_up() -> None:
    pricer = TokenPricer(tokens_meter({"m": MINI}))
    assert pricer.cost("m", Usage(input_tokens=1)) == 1  # 0.06 → 1
    assert pricer.cost("m", Usage(input_tokens=17)) == 2  # 1.02 → 2
    assert pricer.cost("m", Usage(output_tokens=25)) == 6  # exactly 6.0
    assert pricer.cost("m", Usage()) == 0


def test_cached_input_tokens_use_the_cached_price() -> None:
    pricer = TokenPricer(tokens_meter({"m": MINI}))
    usage = Usage(input_tokens=1000, cached_tokens=400)
    assert pricer.cost("m", usage) == (600 * 60_000 + 400 * 30_000) // 1_000_000  # 48
    # more cached than input is capped at the input count
    assert pricer.cost("m", Usage(input_tokens=100, cached_tokens=500)) == 3  # 100 × 30000


def test_cached_price_defaults_to_input_and_reasoning_to_output() -> None:
    pricer = TokenPricer(tokens_meter({"m": {"input": 1_000_000, "output": 2_000_000}}))
    assert pricer.cost("m", Usage(input_tokens=10, cached_tokens=10)) == 10
    assert pricer.cost("m", Usage(output_tokens=10, reasoning_tokens=4)) == 20


def test_reasoning_tokens_use_the_reasoning_price() -> None:
    pricer = TokenPricer(tokens_meter(
        {"m": {"input": 0, "output": 1_000_000, "reasoning": 3_000_000}}))
    assert pricer.cost("m", Usage(output_tokens=10, reasoning_tokens=4)) == 6 + 12
    # reasoning is part of output: more reasoning than output is capped
    assert pricer.cost("m", Usage(output_tokens=2, reasoning_tokens=9)) == 6


def test_the_minimum_applies_to_cheap_calls() -> None:
    meter = Meter(tokens_meter({"m": MINI}, minimum=5))
    assert meter.cost("m", Usage(input_tokens=1), 0) == 5
    assert meter.cost("m", None, 0) == 5
    assert meter.cost("m", Usage(input_tokens=1000, output_tokens=500), 0) == 180


def test_model_patterns_match_with_fnmatch() -> None:
    pricer = TokenPricer(tokens_meter({"gpt-4o*": {"input": 1, "output": 1},
                                       "claude-?-haiku": {"input": 2, "output": 2}}))
    assert pricer.price_for("gpt-4o").input == 1
    assert pricer.price_for("gpt-4o-2024-08-06").input == 1
    assert pricer.price_for("claude-3-haiku").input == 2
    with pytest.raises(UnpricedModel):
        pricer.price_for("claude-35-haiku")


def test_an_exact_model_key_wins_over_an_earlier_pattern() -> None:
    pricer = TokenPricer(tokens_meter({"gpt-4o*": {"input": 1, "output": 1},
                                       "gpt-4o-mini": {"input": 2, "output": 2}}))
    assert pricer.price_for("gpt-4o-mini").input == 2
    assert pricer.price_for("gpt-4o-mini-2024").input == 1


def test_patterns_are_tried_in_file_order() -> None:
    pricer = TokenPricer(tokens_meter({"gpt-4o-mini*": {"input": 2, "output": 2},
                                       "gpt-4o*": {"input": 1, "output": 1}}))
    assert pricer.price_for("gpt-4o-mini-2024-07-18").input == 2
    assert pricer.price_for("gpt-4o-2024-08-06").input == 1


@pytest.mark.parametrize("model", ["unknown-model", "", None])
def test_an_unknown_model_is_denied_never_free(model: str | None) -> None:
    meter = Meter(tokens_meter({"m": MINI, "x*": MINI}))
    with pytest.raises(UnpricedModel) as exc:
        meter.check_model(model)
    assert exc.value.model == model
    with pytest.raises(UnpricedModel):
        meter.cost(model, Usage(input_tokens=10), 0)


def test_check_model_passes_for_priced_models_and_non_token_meters() -> None:
    Meter(tokens_meter({"m": MINI})).check_model("m")
    Meter(duration_meter()).check_model(None)
    Meter(FixedMeter(type="fixed", units=3)).check_model("anything")


# --- duration and fixed ----------------------------------------------------------------------


def test_duration_is_charged_per_millisecond_by_default() -> None:
    assert duration_cost(duration_meter(), 1234) == 1234
    assert duration_cost(duration_meter(), 0) == 0
    assert duration_cost(duration_meter(), -50) == 0  # clock skew never pays back


def test_duration_rate_rounds_up() -> None:
    assert duration_cost(duration_meter(units_per_second=500), 3) == 2  # 1.5 → 2
    assert duration_cost(duration_meter(units_per_second=2000), 3) == 6


def test_duration_rounds_up_to_a_multiple_and_respects_the_minimum() -> None:
    assert duration_cost(duration_meter(round_up_to=1000), 1001) == 2000
    assert duration_cost(duration_meter(round_up_to=1000), 1000) == 1000
    assert duration_cost(duration_meter(minimum=5000), 100) == 5000
    assert duration_cost(duration_meter(minimum=5000), 7000) == 7000
    meter = Meter(duration_meter(round_up_to=100, minimum=300))
    assert meter.kind == "duration"
    assert meter.cost("ignored", Usage(input_tokens=10**6), 101) == 300
    assert meter.cost(None, None, 301) == 400


def test_a_fixed_meter_charges_the_same_per_call() -> None:
    meter = Meter(FixedMeter(type="fixed", units=20_000))
    assert meter.kind == "fixed"
    assert meter.cost(None, None, 0) == 20_000
    assert meter.cost("x", Usage(input_tokens=10**6), 99_999) == 20_000


# --- estimates -------------------------------------------------------------------------------


def test_a_request_estimate_prices_body_size_and_max_tokens() -> None:
    meter = Meter(tokens_meter({"m": {"input": 1_000_000, "output": 2_000_000}}))
    est = Estimator(RequestEstimate(type="request", default_max_tokens=1024), meter)
    # input ≈ 400 bytes / 4 = 100 tokens at 1 unit; output 100 tokens at 2 units
    assert est.estimate("m", 100, 400) == 100 + 200
    assert est.estimate("m", 10, 0) == 20
    assert est.estimate("m", None, 0) == 2048  # no limit in the request: default_max_tokens
    with pytest.raises(UnpricedModel):
        est.estimate("unknown", None, 0)
    assert est.stats() == {"kind": "request", "samples": 0, "confidence": "fixed"}


def test_a_fixed_estimate_holds_the_same_units() -> None:
    est = Estimator(FixedEstimate(type="fixed", units=42), Meter(duration_meter()))
    assert est.estimate(None, None, 10**6) == 42
    est.observe(1000)
    assert est.estimate(None, None, 0) == 42
    assert est.stats() == {"kind": "fixed", "samples": 0, "confidence": "fixed"}


def test_a_learned_estimate_uses_its_default_until_min_samples() -> None:
    spec = LearnedEstimate(type="learned", default=500, window=10, min_samples=5, percentile=90)
    est = Estimator(spec, Meter(duration_meter()))
    for units in (1, 2, 3, 4):
        est.observe(units)
        assert est.estimate(None, None, 0) == 500
    assert est.stats() == {"kind": "learned", "samples": 4, "confidence": "low"}
    est.observe(5)
    assert est.estimate(None, None, 0) == 5  # nearest-rank p90 of [1..5]
    assert est.stats() == {"kind": "learned", "samples": 5, "confidence": "high"}


def test_a_learned_estimate_takes_the_percentile_of_a_sliding_window() -> None:
    spec = LearnedEstimate(type="learned", default=0, window=20, min_samples=5, percentile=50)
    est = Estimator(spec, Meter(duration_meter()))
    for units in range(1, 11):  # 1..10
        est.observe(units)
    assert est.estimate(None, None, 0) == 5  # median by nearest rank
    assert est.stats() == {"kind": "learned", "samples": 10, "confidence": "high"}
    for _ in range(20):  # the window forgets the old samples
        est.observe(1000)
    assert est.estimate(None, None, 0) == 1000
    assert est.stats()["samples"] == 20


def test_a_learned_estimate_reports_medium_confidence_below_half_a_window() -> None:
    spec = LearnedEstimate(type="learned", default=7, window=200, min_samples=20)
    est = Estimator(spec, Meter(duration_meter()))
    for units in range(30):
        est.observe(units)
    assert est.stats() == {"kind": "learned", "samples": 30, "confidence": "medium"}
    assert est.estimate(None, None, 0) == 26  # p90 of 0..29: rank ceil(27) → 27th value
