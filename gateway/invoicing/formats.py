"""How the gateway's documents write amounts and dates for people: money in minor units of a
currency, ledger units in the deployment's unit (exact), UTC dates."""

from __future__ import annotations

from policies.units import UnitOfAccount
from storage.clock import iso_utc

ZERO_DECIMAL = {"JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF"}


def money(cents: int, currency: str) -> str:
    """Minor units as `1,234.50 USD` (0 decimals for zero-decimal currencies)."""
    if currency.upper() in ZERO_DECIMAL:
        return f"{cents:,} {currency.upper()}"
    sign = "-" if cents < 0 else ""
    major, minor = divmod(abs(cents), 100)
    return f"{sign}{major:,}.{minor:02d} {currency.upper()}"


def amount(ledger_units: int, unit: UnitOfAccount) -> str:
    """Ledger units in the API's unit, exact (`12.5 s`, `0.000125 USD`, `1,200 tokens`)."""
    value = unit.to_api(ledger_units).normalize()
    text = f"{value:,f}" if value == value.to_integral_value() else f"{value:f}"
    return f"{text} {unit.api_name}"


def date_of(ms: int | None) -> str:
    """`YYYY-MM-DD` (UTC) of epoch ms, or `-` for none."""
    return iso_utc(ms)[:10] if ms else "-"
