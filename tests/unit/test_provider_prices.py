"""Provider list prices (issue 10 items 2–3) from genai-prices' bundled data, pinned at the
version below: a test that fails after an upgrade says the prices moved, not that the code broke.
Quotes agree with the library's own calculation on every usage; sides are rounded up to the
micro-unit; a marked-up charge is never below the marked-up price and at most one micro-unit
above it; unknown providers and models raise UnpricedModel (cached, never priced as free)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.provider_prices import (
    PRICE_DATA_VERSION,
    PriceBook,
    TokenUsage,
    UnpricedModel,
    ceil_micros,
)

FAST = settings(max_examples=200, deadline=None)
AT = datetime(2026, 6, 1, tzinfo=UTC)
MODELS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("openai", "o3-mini"),
          ("anthropic", "claude-sonnet-4-5"), ("anthropic", "claude-3-5-haiku-latest")]


def test_the_price_data_version_is_pinned() -> None:
    assert PRICE_DATA_VERSION == "0.2.3" == genai_prices.__version__


def test_gpt_4o_mini_at_its_list_price() -> None:
    # $0.15 / MTok input, $0.075 / MTok cached input, $0.60 / MTok output (genai-prices 0.2.3).
    cost = PriceBook().quote("openai", "gpt-4o-mini-2024-07-18",
                             TokenUsage(input_tokens=1000, cached_input_tokens=200,
                                        output_tokens=500, reasoning_tokens=0), AT)
    assert (cost.provider, cost.model) == ("openai", "gpt-4o-mini")
    assert cost.classes == {"input": Decimal("0.00012"), "cached_input": Decimal("0.000015"),
                            "output": Decimal("0.0003")}
    assert (cost.prompt_micros, cost.completion_micros, cost.total_micros) == (135, 300, 435)
    assert cost.price_version == "0.2.3"


def test_anthropic_cache_writes_and_reads_are_priced_apart() -> None:
    cost = PriceBook().quote("anthropic", "claude-sonnet-4-5",
                             TokenUsage(1000, 200, 100, 500), AT)
    # $3 input, $0.30 cache read, $3.75 cache write, $15 output per MTok.
    assert cost.classes == {"input": Decimal("0.0021"), "cached_input": Decimal("0.00006"),
                            "cache_write": Decimal("0.000375"), "output": Decimal("0.0075")}
    assert cost.total_micros == 10_035


@FAST
@given(model=st.sampled_from(MODELS), n=st.integers(0, 400_000), cached=st.integers(0, 400_000),
       write=st.integers(0, 400_000), out=st.integers(0, 100_000))
def test_quotes_agree_with_the_library(model: tuple[str, str], n: int, cached: int, write: int,
                                       out: int) -> None:
    usage = TokenUsage(n, min(cached, n), min(write, n - min(cached, n)), out)
    cost = BOOK.quote(*model, usage, AT)
    lib = genai_prices.calc_price(usage.library_usage(), model[1], provider_id=model[0],
                                  genai_request_timestamp=AT)
    assert cost.total_usd == lib.total_price
    assert cost.output_usd == lib.output_price
    assert sum(cost.classes.values()) == lib.total_price
    assert cost.total_micros == ceil_micros(cost.input_usd) + ceil_micros(cost.output_usd)
    assert 0 <= cost.total_micros - lib.total_price * 1_000_000 < 2


@FAST
@given(model=st.sampled_from(MODELS), n=st.integers(0, 10**6), out=st.integers(0, 10**5),
       markup=st.integers(0, 500))
def test_a_marked_up_charge_rounds_up_by_less_than_one_micro(
        model: tuple[str, str], n: int, out: int, markup: int) -> None:
    cost = BOOK.quote(*model, TokenUsage(n, 0, 0, out), AT)
    exact = cost.total_usd * (100 + markup) / 100 * 1_000_000
    charge = cost.charge_micros(markup)
    assert exact <= charge < exact + 1


BOOK = PriceBook()


def test_unknown_models_and_providers_are_unpriced_and_cached() -> None:
    book = PriceBook()
    with pytest.raises(UnpricedModel) as e:
        book.quote("openai", "no-such-model", TokenUsage(1, 0, 0, 1), AT)
    assert e.value.reason == "unknown-model"
    with pytest.raises(UnpricedModel) as e:
        book.quote("no-such-provider", "gpt-4o", TokenUsage(1, 0, 0, 1), AT)
    assert e.value.reason == "unknown-provider"
    with pytest.raises(UnpricedModel) as e:
        book.quote("openai", None, TokenUsage(1, 0, 0, 1), AT)
    assert e.value.reason == "no-model"
    assert not book.knows("openai", "no-such-model")
    assert ("openai", "no-such-model") in book._models  # looked up once


def test_a_negative_markup_is_refused() -> None:
    cost = BOOK.quote("openai", "gpt-4o-mini", TokenUsage(10, 0, 0, 10), AT)
    with pytest.raises(ValueError):
        cost.charge_micros(-1)
