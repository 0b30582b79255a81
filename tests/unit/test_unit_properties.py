"""Hypothesis properties of the unit of account and of charges (issue 10): converting never
creates money, and every charge rounds in the operator's favour by less than one ledger unit —
explicit prices, token weights, and provider list prices with a markup."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import genai_prices
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.proxy.payment_required import insufficient_balance
from policies.meters import Meter, Usage
from policies.schema import CatalogSpec, TokensMeter
from policies.units import TIME, UnitKind, UnitOfAccount
from storage.ports import Shortfall

USD = UnitOfAccount(UnitKind.CURRENCY, "USD")
TOKENS = UnitOfAccount(UnitKind.TOKENS)
UNITS = st.sampled_from([TIME, USD, TOKENS])
LEDGER = st.integers(min_value=-(2**53), max_value=2**53)
MICRO_PRICE = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False,
                          allow_infinity=False)
USAGE = st.builds(
    lambda i, c, o, r: Usage(input_tokens=i, cached_tokens=min(c, i), output_tokens=o,
                             reasoning_tokens=min(r, o)),
    st.integers(0, 2_000_000), st.integers(0, 2_000_000), st.integers(0, 200_000),
    st.integers(0, 200_000))


@given(UNITS, LEDGER)
def test_ledger_to_api_and_back_is_exact(unit: UnitOfAccount, units: int) -> None:
    assert unit.from_api(unit.to_api(units)) == units
    assert unit.from_api(unit.to_text(units)) == units
    if abs(units) < 10**15:  # a JSON float keeps 15 significant digits (hence the *_micros twin)
        assert unit.from_api(Decimal(str(unit.to_json(units)))) == units


@given(UNITS, st.decimals(min_value=-10**9, max_value=10**9, allow_nan=False,
                          allow_infinity=False))
@example(TIME, Decimal("5.0000000000000000000000000005000E-31"))  # found by Hypothesis
@example(TOKENS, Decimal("5.00000000000000000000000000050E-29"))  # found by Hypothesis
@example(USD, Decimal("1.0000000000000000000000000001"))  # 29 digits: beyond Decimal's default
def test_converting_an_amount_never_creates_money(unit: UnitOfAccount, amount: Decimal) -> None:
    exact = Fraction(amount) * unit.scale  # exact rational arithmetic (Decimal rounds at 28)
    charged = unit.from_api(amount, round_up=True)
    assert exact <= charged < exact + 1  # a charge: < one ledger unit in the operator's favour
    try:
        credited = unit.from_api(amount)
    except ValueError:
        assert exact.denominator != 1  # only amounts finer than the ledger unit fail
    else:
        assert credited == exact  # a credit is exact or refused, never rounded up


@given(st.sampled_from([USD, TOKENS]), MICRO_PRICE, MICRO_PRICE, MICRO_PRICE, USAGE)
def test_explicit_prices_round_up_by_less_than_one_ledger_unit(
        unit: UnitOfAccount, inp: Decimal, out: Decimal, cached: Decimal, usage: Usage) -> None:
    spec = TokensMeter(type="tokens", prices={"m": {"input": inp, "output": out,
                                                    "cached_input": cached}})
    meter = Meter(spec, unit)
    # USD per 1M tokens is micro-USD per token; a token weight is ledger tokens per token
    exact = ((usage.input_tokens - usage.cached_tokens) * inp + usage.cached_tokens * cached
             + usage.output_tokens * out)
    charged = meter.cost("m", usage, 0)
    assert exact <= charged < exact + 1


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["gpt-4o", "gpt-4o-mini", "o3-mini"]),
       st.decimals(min_value=0, max_value=500, places=2, allow_nan=False, allow_infinity=False),
       USAGE)
def test_provider_prices_with_markup_round_up_by_less_than_one_micro_usd(
        model: str, markup: Decimal, usage: Usage) -> None:
    spec = TokensMeter(type="tokens", prices="provider", markup_percent=markup)
    meter = Meter(spec, USD, "openai")
    lib = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=usage.input_tokens, cache_read_tokens=usage.cached_tokens,
                           output_tokens=usage.output_tokens), model, provider_id="openai")
    exact = lib.total_price * (100 + markup) / 100 * 1_000_000
    charged = meter.cost(model, usage, 0)
    assert exact <= charged < exact + 1


@given(st.sampled_from([USD, TOKENS]), st.integers(0, 10**12), st.integers(0, 10**12),
       st.integers(1, 10**12))
def test_the_402_breakdown_adds_up_to_the_balance(
        unit: UnitOfAccount, available: int, daily: int, extra: int) -> None:
    catalog = CatalogSpec(version="v1")
    error = insufficient_balance(
        Shortfall(available + extra, available, min(daily, available), 0), unit=unit,
        operation_id="req_x", catalog=catalog, plan_key=None, resume_token="t",
        resume_expires_at_ms=0)
    body = error.extra
    key = "_micros" if unit.kind is UnitKind.CURRENCY else ""
    assert body["breakdown"]["paid" + key] + body["breakdown"]["bonus_daily" + key] == \
        body["balance" + key] == available
    assert body["required" + key] == available + extra
    assert body["error"] == unit.error_code and body["unit"] == unit.api_name
