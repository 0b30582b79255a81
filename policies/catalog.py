"""The public pricing catalog document (seeds: PricingCatalog + CurrencyAwareCatalog), built by a
pure function from the policy's catalog for one currency, with its strong ETag.

Currency rules (SPEC §8): one of USD EUR GBP EGP SAR AED; a currency the catalog does not offer
falls back to USD for the whole document with `currency_fallback_from`; an item without a price
in an offered currency falls back to USD for that item (its own `currency` and
`currency_fallback_from`). Amounts are integer minor units (`unit_amount_cents`); `price` is the
same amount in major units for display only (seeds' `price: number`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from policies.compiled import Plan
from policies.schema import SUPPORTED_CURRENCIES, CatalogSpec, PackageSpec, SubscriptionSpec

FALLBACK_CURRENCY = "USD"
_MINOR_DIGITS = {"USD": 2, "EUR": 2, "GBP": 2, "EGP": 2, "SAR": 2, "AED": 2}
_SYMBOL = {"USD": "$", "EUR": "€", "GBP": "£", "EGP": "E£", "SAR": "SAR ", "AED": "AED "}


class UnknownCurrency(ValueError):
    """The requested currency code is not one the gateway supports."""


def display_price(cents: int, currency: str) -> str:
    """`$5.00`, `€19.00`, `SAR 19.00`: integer minor units rendered for people."""
    digits = _MINOR_DIGITS[currency]
    major, minor = divmod(cents, 10**digits)
    return f"{_SYMBOL[currency]}{major:,}.{minor:0{digits}d}"


def price_in(
    prices: Mapping[str, int], currency: str
) -> tuple[str, int, str | None]:
    """(currency charged, unit amount in cents, fallen back from) for an item's price table."""
    if currency in prices:
        return currency, prices[currency], None
    return FALLBACK_CURRENCY, prices[FALLBACK_CURRENCY], currency


def _item_price(prices: Mapping[str, int], currency: str) -> dict[str, Any]:
    charged, cents, fallback = price_in(prices, currency)
    doc: dict[str, Any] = {
        "currency": charged,
        "unit_amount_cents": cents,
        "price": cents / 10 ** _MINOR_DIGITS[charged],
        "display_price": display_price(cents, charged),
    }
    if fallback:
        doc["currency_fallback_from"] = fallback
    return doc


def _package(p: PackageSpec, currency: str) -> dict[str, Any]:
    return {"key": p.key, "name": p.name, "minutes": p.minutes, "taxInclusive": p.tax_inclusive,
            **_item_price(p.prices, currency)}


def _subscription(s: SubscriptionSpec, plan: Plan | None, currency: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"key": s.key, "name": s.name, "plan": s.plan, "minutes": s.minutes,
                           "taxInclusive": s.tax_inclusive,
                           "advisor": {"eligible": s.advisor_eligible}}
    if plan is not None:
        if plan.daily_bonus:
            doc["bonusDaily"] = plan.daily_bonus // 60_000
        if plan.monthly_bonus_cap is not None:
            doc["monthlyBonusCap"] = plan.monthly_bonus_cap // 60_000
        if plan.rollover_cap:
            doc["rolloverCap"] = plan.rollover_cap // 60_000
    doc.update(_item_price(s.prices, currency))
    return doc


def catalog_document(
    catalog: CatalogSpec, plans: Mapping[str, Plan], currency: str | None
) -> tuple[dict[str, Any], str]:
    """(PricingCatalog document for `currency`, strong ETag). `currency` None means USD.

    Raises UnknownCurrency for a code outside USD EUR GBP EGP SAR AED.
    """
    requested = (currency or FALLBACK_CURRENCY).upper()
    if requested not in SUPPORTED_CURRENCIES:
        raise UnknownCurrency(requested)
    effective = requested if requested in catalog.currencies else FALLBACK_CURRENCY
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
