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


def _package(p: PackageSpec, currency: str) -> dict[str, Any]:
    return {"key": p.key, "name": p.name, "minutes": p.minutes, "taxInclusive": p.tax_inclusive,
            **_item_price(p.prices, currency)}


def _subscription(s: SubscriptionSpec, plan: Plan | None, currency: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": s.key, "name": s.name, "plan": s.plan, "minutes": s.minutes,
                           "taxInclusive": s.tax_inclusive,
                           "advisor": {"eligible": s.advisor_eligible}}
    if plan is not None:
        if plan.daily_bonus:
            doc["bonusDaily"] = plan.daily_bonus // MS_PER_MINUTE
        if plan.monthly_bonus_cap is not None:
            doc["monthlyBonusCap"] = plan.monthly_bonus_cap // MS_PER_MINUTE
        if plan.rollover_cap:
            doc["rolloverCap"] = plan.rollover_cap // MS_PER_MINUTE
    doc.update(_item_price(s.prices, currency))
    return doc


def catalog_document(
    catalog: CatalogSpec, plans: Mapping[str, Plan], currency: str | None
) -> tuple[dict[str, Any], str]:
    """(PricingCatalog document for `currency`, strong ETag of that document). `currency` None
    means USD. The document is wholly in `effective_currency`; on fallback it names the
    requested code in `currency_fallback_from`, so every requested currency has its own
    document and ETag.

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
        "subscriptions": [_subscription(s, plans.get(s.plan), effective)
                          for s in catalog.subscriptions],
        "packages": [_package(p, effective) for p in catalog.packages],
    }
    if effective != requested:
        doc["currency_fallback_from"] = requested
    body = orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(body).hexdigest()[:16]
    return doc, f'"{catalog.version}-{requested}-{digest}"'
