"""Issue 10 item 1–2 in the policy: `unit:` compiles into Policy.unit; plans, packages and token
prices are read in the unit; `gateway policies check` refuses a policy that mixes units or prices
a token meter in a unit it cannot express, naming file, line and field."""

from __future__ import annotations

import textwrap
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.cli import main as gateway_main
from policies.compiled import load_policy
from policies.loader import PolicyError, PolicyIssue
from policies.meters import Usage
from policies.units import UnitKind

USD = """\
unit: { kind: currency, currency: USD }
plans:
  free: { daily_bonus: 0.50, included: 20.00, monthly_bonus_cap: 5 }
catalog:
  version: "v1"
  packages:
    - { key: ten, name: Ten, credits: 10.00, prices: { USD: 1000 } }
upstreams:
  up: { base_url: "https://up.example.com" }
routes:
  - operation: chat
    path: /v1/chat/completions
    upstream: up
    protocol: openai_chat
    meter:
      type: tokens
      prices: { m1: { input: 2.50, output: 10.00, cached_input: 1.25 } }
    estimate: { type: fixed, units: 5 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def issues(tmp_path: Path, text: str) -> list[PolicyIssue]:
    with pytest.raises(PolicyError) as exc:
        load_policy([write(tmp_path, text)], {})
    return exc.value.issues


def test_a_usd_policy_compiles_amounts_into_micro_units(tmp_path: Path) -> None:
    policy = load_policy([write(tmp_path, USD)], {})
    assert policy.unit.kind is UnitKind.CURRENCY and policy.unit.api_name == "USD"
    plan = policy.plans["free"]
    assert (plan.daily_bonus, plan.included, plan.monthly_bonus_cap) == (
        500_000, 20_000_000, 5_000_000)
    assert policy.document.catalog.packages[0].ledger_units(policy.unit) == 10_000_000
    meter = policy.routes[0].meter
    # 2.50 USD per 1M input tokens = 2.5 micro-USD per token; cached 1.25; output 10
    assert meter.cost("m1", Usage(input_tokens=1000, output_tokens=100, cached_tokens=400), 0) \
        == 600 * 2.5 + 400 * 1.25 + 100 * 10


def test_the_default_unit_is_time(tmp_path: Path) -> None:
    policy = load_policy([Path(__file__).resolve().parents[2] / "config" / "policies.yaml"], {})
    assert policy.unit.kind is UnitKind.TIME and policy.unit.api_name == "s"


def test_a_tokens_policy_charges_one_for_one_unless_a_model_is_weighted(tmp_path: Path) -> None:
    text = """\
    unit: { kind: tokens }
    plans: { free: { daily_bonus: 1000 } }
    catalog:
      version: "v1"
      packages: [{ key: m, name: M, tokens: 1000000, prices: { USD: 500 } }]
    upstreams: { up: { base_url: "https://up.example.com" } }
    routes:
      - { operation: chat, path: /c, upstream: up, protocol: openai_chat,
          meter: { type: tokens, prices: { "big*": { input: 1, output: 4, cached_input: 0.5 } } },
          estimate: { type: fixed, units: 5 } }
      - { operation: other, path: /o, upstream: up, protocol: openai_chat,
          meter: { type: tokens }, estimate: { type: fixed, units: 5 } }
    """
    policy = load_policy([write(tmp_path, text)], {})
    chat, other = (r.meter for r in policy.routes)
    used = Usage(input_tokens=100, output_tokens=10, cached_tokens=40)
    assert chat.cost("big-1", used, 0) == 60 + 20 + 40
    assert chat.cost("small", used, 0) == 110  # unweighted: reported tokens one for one
    assert other.cost("anything", used, 0) == 110
    assert policy.plans["free"].daily_bonus == 1000


@pytest.mark.parametrize(("change", "field", "line", "words"), [
    (("daily_bonus: 0.50", "daily_bonus_minutes: 15"),
     "plans.free.daily_bonus_minutes", 3, "mixes units"),
    (("credits: 10.00", "minutes: 60"), "catalog.packages[0].minutes", 7, "mixes units"),
    (("prices: { m1: { input: 2.50, output: 10.00, cached_input: 1.25 } }",
      "prices: provider"), None, 0, None),  # valid: USD may use provider prices
    (("currency: USD", "currency: EUR"), "routes[0].meter.prices", 17, "USD"),
])
def test_mixed_units_are_named_with_file_line_and_field(
        tmp_path: Path, change: tuple[str, str], field: str | None, line: int,
        words: str | None) -> None:
    text = USD.replace(*change)
    if change[0] == "currency: USD":
        text = text.replace("prices: { m1: { input: 2.50, output: 10.00, cached_input: 1.25 } }",
                            "prices: provider")
    if field is None:
        load_policy([write(tmp_path, text)], {})
        return
    found = issues(tmp_path, text)
    assert [(i.field, i.line) for i in found] == [(field, line)], found
    assert words in found[0].message and found[0].file.endswith("p.yaml")


def test_provider_prices_are_refused_in_a_tokens_or_time_unit(tmp_path: Path) -> None:
    provider = USD.replace("prices: { m1: { input: 2.50, output: 10.00, cached_input: 1.25 } }",
                           "prices: provider")
    as_tokens = (provider.replace("unit: { kind: currency, currency: USD }",
                                  "unit: { kind: tokens }")
                 .replace("daily_bonus: 0.50, included: 20.00, monthly_bonus_cap: 5",
                          "daily_bonus: 50").replace("credits: 10.00", "tokens: 1000"))
    [issue] = issues(tmp_path, as_tokens)
    assert (issue.field, issue.line) == ("routes[0].meter.prices", 17)
    assert "cannot express provider prices" in issue.message
    as_time = (provider.replace("unit: { kind: currency, currency: USD }\n", "")
               .replace("daily_bonus: 0.50, included: 20.00, monthly_bonus_cap: 5",
                        "daily_bonus_minutes: 5").replace("credits: 10.00", "minutes: 10"))
    [issue] = issues(tmp_path, as_time)
    assert issue.field == "routes[0].meter.prices" and "time unit" in issue.message


def test_a_fractional_ms_price_and_an_unknown_price_provider_are_refused(tmp_path: Path) -> None:
    text = (USD.replace("unit: { kind: currency, currency: USD }\n", "")
            .replace("daily_bonus: 0.50, included: 20.00, monthly_bonus_cap: 5",
                     "daily_bonus_minutes: 5").replace("credits: 10.00", "minutes: 10"))
    found = issues(tmp_path, text)
    assert {i.field for i in found} == {"routes[0].meter.prices.m1.input",
                                        "routes[0].meter.prices.m1.cached_input"}
    provider = USD.replace("prices: { m1: { input: 2.50, output: 10.00, cached_input: 1.25 } }",
                           "prices: provider").replace(
        '{ base_url: "https://up.example.com" }',
        '{ base_url: "https://up.example.com", price_provider: no-such-provider }')
    [issue] = issues(tmp_path, provider)
    assert (issue.field, issue.line) == ("upstreams.up.price_provider", 9)


def test_markup_without_provider_prices_is_a_schema_error(tmp_path: Path) -> None:
    text = USD.replace("      type: tokens\n", "      type: tokens\n      markup_percent: 10\n")
    [issue] = issues(tmp_path, text)
    assert issue.field == "routes[0].meter" and "markup_percent" in issue.message


def test_policies_check_prints_the_unit_issue(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, USD.replace("credits: 10.00", "tokens: 60"))
    assert gateway_main(["policies", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:7: catalog.packages[0].tokens: mixes units" in err


def test_plan_amounts_finer_than_a_micro_unit_are_refused(tmp_path: Path) -> None:
    [issue] = issues(tmp_path, USD.replace("daily_bonus: 0.50", "daily_bonus: 0.0000001"))
    assert issue.field == "plans.free.daily_bonus" and "decimal" in issue.message.lower()


def test_provider_prices_quote_at_list_price_with_markup(tmp_path: Path) -> None:
    text = USD.replace("prices: { m1: { input: 2.50, output: 10.00, cached_input: 1.25 } }",
                       "prices: provider\n      markup_percent: 10")
    meter = load_policy([write(tmp_path, text)], {}).routes[0].meter
    import genai_prices
    used = Usage(input_tokens=10_000, output_tokens=2_000, cached_tokens=4_000,
                 cache_write_tokens=0)
    lib = genai_prices.calc_price(
        genai_prices.Usage(input_tokens=10_000, cache_read_tokens=4_000, output_tokens=2_000),
        "gpt-4o", provider_id="openai").total_price
    exact = lib * Decimal("1.10") * 1_000_000
    charged = meter.cost("gpt-4o", used, 0)
    assert charged >= exact and charged - exact < 1
