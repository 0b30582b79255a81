"""Unit-of-account checks of a policy (issue 10): every amount is written in the deployment's
unit, and nothing asks the unit for what it cannot express. Run by `gateway policies check` and
at load, on plain data (merged YAML, valid or not, or a validated document's `model_dump()`),
each problem with file, line and field like policies.compiled.reference_issues.

Rules:
- `time` (default): plans use `*_minutes`, catalog items `minutes`; token prices are integer
  ledger ms per 1,000,000 tokens; `prices: provider` is refused (time cannot express USD).
- `currency`: plans use the unit amounts (`daily_bonus`, `included`, ...), catalog items
  `credits`; `prices: provider` needs USD (the price source's currency); `ledger_unit: ms`
  is refused.
- `tokens`: like currency but catalog items carry `tokens`, amounts are whole tokens, and
  `prices: provider` is refused (tokens cannot express USD); explicit prices are weights
  (ledger tokens per token).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from genai_prices import data_snapshot

from policies.loader import Loc, PolicyIssue, dotted, origin_of
from policies.provider_prices import DEFAULT_PROVIDERS, PRICE_DATA_VERSION

PLAN_AMOUNTS = ("daily_bonus", "monthly_bonus_cap", "welcome_bonus", "included", "rollover_cap")
PLAN_MINUTES = tuple(f"{k}_minutes" for k in PLAN_AMOUNTS)
_ITEM_AMOUNT = {"time": "minutes", "currency": "credits", "tokens": "tokens"}


def unit_kind(data: Mapping[str, Any]) -> str:
    """The unit kind a policy declares (`time` when it declares none or a malformed one)."""
    unit = data.get("unit")
    kind = unit.get("kind", "time") if isinstance(unit, dict) else "time"
    return kind if kind in _ITEM_AMOUNT else "time"


def _whole(value: Any) -> bool:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return True  # the schema reports malformed numbers
    return d.is_finite() and d == d.to_integral_value()


Problem = Callable[[Loc, str], None]


def unit_issues(
    data: Mapping[str, Any],
    origins: Mapping[Loc, tuple[str, int]] | None = None,
    default_file: str = "<policy>",
) -> list[PolicyIssue]:
    """Problems of units in `data`: amounts written in another unit than the deployment's,
    and token meters priced in a way the unit cannot express. Shapes the schema rejects are
    skipped (it reports them)."""
    origins = origins or {}
    issues: list[PolicyIssue] = []
    kind = unit_kind(data)
    unit = data.get("unit")
    currency = unit.get("currency") if isinstance(unit, dict) else None

    def problem(loc: Loc, message: str) -> None:
        file, line = origin_of(loc, origins, default_file)
        issues.append(PolicyIssue(file, line, dotted(loc), message))

    if kind != "time" and data.get("ledger_unit") is not None:
        problem(("ledger_unit",), f"ledger_unit is for time deployments; the unit is {kind}")
    plans = data.get("plans")
    for key, plan in (plans.items() if isinstance(plans, dict) else ()):
        if isinstance(plan, dict):
            _plan_issues(kind, key, plan, problem)
    catalog = data.get("catalog")
    if isinstance(catalog, dict):
        _catalog_issues(kind, catalog, problem)
    routes = data.get("routes")
    for i, route in enumerate(routes if isinstance(routes, list) else []):
        meter = route.get("meter") if isinstance(route, dict) else None
        if isinstance(meter, dict) and meter.get("type") == "tokens":
            _meter_issues(kind, currency, ("routes", i, "meter"), meter, problem)
            if kind == "currency" and meter.get("prices") == "provider":
                _provider_issues(data, i, route, problem)
    return issues


def _plan_issues(kind: str, key: str, plan: Mapping[str, Any], problem: Problem) -> None:
    for field in PLAN_MINUTES if kind != "time" else PLAN_AMOUNTS:
        value = plan.get(field)
        if value is None or (kind != "time" and value == 0):
            continue  # model_dump() fills the other unit's fields with their defaults
        other = field.removesuffix("_minutes") if kind != "time" else f"{field}_minutes"
        problem(("plans", key, field), f"mixes units: the deployment counts {kind}; write {other}")
    if kind == "tokens":
        for field in PLAN_AMOUNTS:
            if plan.get(field) is not None and not _whole(plan[field]):
                problem(("plans", key, field), "finer than the ledger unit (1 token)")


def _catalog_issues(kind: str, catalog: Mapping[str, Any], problem: Problem) -> None:
    want = _ITEM_AMOUNT[kind]
    for section in ("packages", "subscriptions"):
        items = catalog.get(section)
        for i, item in enumerate(items if isinstance(items, list) else []):
            if not isinstance(item, dict):
                continue
            mixed = False
            for other in _ITEM_AMOUNT.values():
                if other != want and item.get(other) not in (None, 0):
                    mixed = True
                    problem(("catalog", section, i, other),
                            f"mixes units: the deployment counts {kind}; write {want}")
            if not mixed and item.get(want) in (None, 0):
                problem(("catalog", section, i), f"needs {want} (the amount it grants)")


def _meter_issues(kind: str, currency: Any, loc: Loc, meter: Mapping[str, Any],
                  problem: Problem) -> None:
    prices = meter.get("prices")
    if prices is None and kind != "tokens":
        problem(loc, "needs prices (a model → price map, or 'provider' in a USD deployment)")
    elif prices == "provider":
        if kind != "currency":
            problem((*loc, "prices"),
                    f"a {kind} unit cannot express provider prices (USD); price each model"
                    + (" as ledger tokens per token" if kind == "tokens" else ""))
        elif currency != "USD":
            problem((*loc, "prices"), f"provider prices are in USD; the unit is {currency}")
    elif isinstance(prices, dict) and kind == "time":
        for model, price in prices.items():
            for cls, value in (price.items() if isinstance(price, dict) else ()):
                if value is not None and not _whole(value):
                    problem((*loc, "prices", model, cls), "finer than the ledger unit: ms per "
                            "1,000,000 tokens are whole numbers")


def _provider_issues(data: Mapping[str, Any], i: int, route: Mapping[str, Any],
                     problem: Problem) -> None:
    """A `prices: provider` route needs a provider the price data knows: its upstream's
    `price_provider`, else its protocol's (provider_prices.DEFAULT_PROVIDERS)."""
    upstreams = data.get("upstreams")
    spec = upstreams.get(route.get("upstream")) if isinstance(upstreams, dict) else None
    named = spec.get("price_provider") if isinstance(spec, dict) else None
    provider = named or DEFAULT_PROVIDERS.get(str(route.get("protocol", "plain")))
    if provider is None:
        problem(("routes", i, "meter", "prices"), "provider prices need the upstream's "
                "price_provider (the protocol names none)")
    elif not known_provider(str(provider)):
        where: Loc = (("upstreams", str(route.get("upstream")), "price_provider") if named
                      else ("routes", i, "protocol"))
        problem(where, f"the price data ({PRICE_DATA_VERSION}) knows no provider {provider!r}")


def known_provider(provider: str) -> bool:
    """True when the bundled genai-prices data has a provider with this id."""
    try:
        data_snapshot.get_snapshot().find_provider(None, provider, None)
    except LookupError:
        return False
    return True
