"""The public pricing catalog document (seeds: PricingCatalog + CurrencyAwareCatalog), built by a
pure function from the policy's catalog for one currency, with its strong ETag.

Currency rules (SPEC §8, seed 001's `CurrencyAwareCatalog`): one of USD EUR GBP EGP SAR AED; when
the catalog does not offer the requested currency, or any of its items has no price in it, the
whole document is in USD with the top-level `currency_fallback_from` (the guide shows its notice
from that field and labels every card "Charged in USD", so no item is ever in another currency
than the document). Checkout charges by the same rule (`effective_currency`), so a buyer pays
in the currency the catalog showed. Amounts are integer minor units (`unit_amount_cents`);
`price` and `display_price` are the same amount in major units for display only (seeds'
`price: number`, `PurchaseResponse.display_price: number`); `display_price_text` is it
formatted for people (`$5.00`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from policies.compiled import Plan
from policies.schema import (
    SUPPORTED_CURRENCIES,
    CatalogSpec,
    Currency,
    PackageSpec,
    SubscriptionSpec,
)
from policies.units import TIME, UnitKind, UnitOfAccount
from storage.clock import MS_PER_MINUTE

FALLBACK_CURRENCY: Currency = "USD"
_MINOR_DIGITS = {"USD": 2, "EUR": 2, "GBP": 2, "EGP": 2, "SAR": 2, "AED": 2}
_SYMBOL = {"USD": "$", "EUR": "€", "GBP": "£", "EGP": "E£", "SAR": "SAR ", "AED": "AED "}


class UnknownCurrency(ValueError):
    """The requested currency code is not one the gateway supports."""


def display_price(cents: int, currency: str) -> str:
    """`$5.00`, `€19.00`, `SAR 19.00`: integer minor units rendered for people."""
    digits = _MINOR_DIGITS[currency]
    major, minor = divmod(cents, 10**digits)
    return f"{_SYMBOL[currency]}{major:,}.{minor:0{digits}d}"


def major_units(cents: int, currency: str) -> float:
    """Integer minor units as a major-unit number for display (`500` USD → `5.0`)."""
    scale: int = 10 ** _MINOR_DIGITS[currency]
    return cents / scale


def price_fields(cents: int, currency: str) -> dict[str, Any]:
    """The price members of a catalog item or a checkout reply: `unit_amount_cents` (the
    amount), `price` and `display_price` (major units, a number) and `display_price_text`."""
    major = major_units(cents, currency)
    return {"unit_amount_cents": cents, "price": major, "display_price": major,
            "display_price_text": display_price(cents, currency)}


def effective_currency(catalog: CatalogSpec, requested: str) -> Currency:
    """The currency the catalog is shown and sold in for a requested (supported, upper-case)
    code: itself when the catalog offers it and every subscription and package has a price in
    it, else USD."""
    items = [*catalog.subscriptions, *catalog.packages]
    for code in catalog.currencies:
        if code == requested:
            return code if all(code in i.prices for i in items) else FALLBACK_CURRENCY
    return FALLBACK_CURRENCY


def _item_price(prices: Mapping[Any, int], currency: str) -> dict[str, Any]:
    return {"currency": currency, **price_fields(prices[currency], currency)}


def item_amount(item: PackageSpec | SubscriptionSpec, unit: UnitOfAccount) -> dict[str, Any]:
    """What a catalog item grants, in the unit: `minutes` (time); `credits` + `credits_micros`
    and `unit` (currency); `tokens` and `unit` (tokens)."""
    if unit.kind is UnitKind.TIME:
        return {"minutes": item.minutes}
    name = "credits" if unit.kind is UnitKind.CURRENCY else "tokens"
    return {**unit.json_fields(name, item.ledger_units(unit)), "unit": unit.api_name}


def _package(p: PackageSpec, currency: str, unit: UnitOfAccount) -> dict[str, Any]:
    return {"key": p.key, "name": p.name, **item_amount(p, unit), "taxInclusive": p.tax_inclusive,
            **_item_price(p.prices, currency)}


def _subscription(s: SubscriptionSpec, plan: Plan | None, currency: str,
                  unit: UnitOfAccount) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": s.key, "name": s.name, "plan": s.plan, **item_amount(s, unit),
                           "taxInclusive": s.tax_inclusive,
                           "advisor": {"eligible": s.advisor_eligible}}

    def shown(units: int) -> int | float:
        return units // MS_PER_MINUTE if unit.kind is UnitKind.TIME else unit.to_json(units)

    if plan is not None:
        if plan.daily_bonus:
            doc["bonusDaily"] = shown(plan.daily_bonus)
        if plan.monthly_bonus_cap is not None:
            doc["monthlyBonusCap"] = shown(plan.monthly_bonus_cap)
        if plan.rollover_cap:
            doc["rolloverCap"] = shown(plan.rollover_cap)
    doc.update(_item_price(s.prices, currency))
    return doc


def catalog_document(
    catalog: CatalogSpec, plans: Mapping[str, Plan], currency: str | None,
    unit: UnitOfAccount = TIME,
) -> tuple[dict[str, Any], str]:
    """(PricingCatalog document for `currency`, strong ETag of that document). `currency` None
    means USD. Items name what they grant in `unit` (`item_amount`). The document is wholly
    in `effective_currency`; on fallback it names the requested code in
    `currency_fallback_from`, so every requested currency has its own document and ETag.

    Raises UnknownCurrency for a code outside USD EUR GBP EGP SAR AED.
    """
    requested = (currency or FALLBACK_CURRENCY).upper()
    if requested not in SUPPORTED_CURRENCIES:
        raise UnknownCurrency(requested)
    effective = effective_currency(catalog, requested)
    doc: dict[str, Any] = {
        "version": catalog.version,
        "currency": effective,
        "rollover_policy": {"days": catalog.rollover_policy.days},
        "subscriptions": [_subscription(s, plans.get(s.plan), effective, unit)
                          for s in catalog.subscriptions],
        "packages": [_package(p, effective, unit) for p in catalog.packages],
    }
    if effective != requested:
        doc["currency_fallback_from"] = requested
    body = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(body).hexdigest()[:16]
    return doc, f'"{catalog.version}-{requested}-{digest}"'
