"""The catalog document: currency fallback rules, display prices, ETags."""

from __future__ import annotations

import pytest

from policies.catalog import UnknownCurrency, catalog_document, display_price
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
    assert doc["packages"][0]["display_price"] == "€4.50"


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
