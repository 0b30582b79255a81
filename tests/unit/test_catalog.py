"""The catalog document: currency fallback rules, display prices, ETags."""

from __future__ import annotations

import pytest

from policies.catalog import (
    UnknownCurrency,
    catalog_document,
    display_price,
    effective_currency,
)
from policies.schema import CatalogSpec

CATALOG = CatalogSpec.model_validate({
    "version": "v1", "currencies": ["USD", "EUR"],
    "packages": [{"key": "mini", "name": "Mini", "minutes": 60,
                  "prices": {"USD": 500, "EUR": 450}}],
})


def test_a_currency_the_catalog_does_not_offer_falls_back_to_usd_for_the_whole_document():
    doc, _ = catalog_document(CATALOG, {}, "GBP")
    assert doc["currency"] == "USD" and doc["currency_fallback_from"] == "GBP"
    assert doc["packages"][0]["unit_amount_cents"] == 500


def test_an_offered_currency_uses_its_own_prices():
    doc, _ = catalog_document(CATALOG, {}, "eur")
    assert doc["currency"] == "EUR" and "currency_fallback_from" not in doc
    assert doc["packages"][0]["display_price"] == 4.5
    assert doc["packages"][0]["display_price_text"] == "€4.50"


PARTLY_EUR = CatalogSpec.model_validate({
    "version": "v1", "currencies": ["USD", "EUR"],
    "packages": [{"key": "mini", "name": "Mini", "minutes": 60,
                  "prices": {"USD": 500, "EUR": 450}},
                 {"key": "max", "name": "Max", "minutes": 1200, "prices": {"USD": 6900}}],
})


def test_an_item_without_a_price_in_the_currency_puts_the_whole_catalog_in_usd():
    doc, etag = catalog_document(PARTLY_EUR, {}, "EUR")
    assert doc["currency"] == "USD" and doc["currency_fallback_from"] == "EUR"
    assert [(p["currency"], p["unit_amount_cents"], p["display_price"])
            for p in doc["packages"]] == [("USD", 500, 5.0), ("USD", 6900, 69.0)]
    assert not any("currency_fallback_from" in p for p in doc["packages"])
    assert effective_currency(PARTLY_EUR, "EUR") == "USD"
    assert effective_currency(CATALOG, "EUR") == "EUR"
    _, usd = catalog_document(PARTLY_EUR, {}, "USD")
    assert etag != usd  # the fallback document names EUR: its own ETag


def test_etags_differ_by_requested_currency_even_when_the_document_falls_back():
    _, gbp = catalog_document(CATALOG, {}, "GBP")
    _, usd = catalog_document(CATALOG, {}, "USD")
    assert gbp != usd and gbp.startswith('"v1-GBP-')


def test_unknown_codes_are_refused():
    with pytest.raises(UnknownCurrency):
        catalog_document(CATALOG, {}, "JPY")


def test_display_prices_group_thousands_and_keep_two_decimals():
    assert display_price(123456, "USD") == "$1,234.56"
    assert display_price(1900, "SAR") == "SAR 19.00"
