"""Spending limits of API keys as the CLI and the admin API take them (issue 10 item 4):
decimal amounts in the deployment's unit of account (seconds, USD or tokens), stored as ledger
units by `Policy.unit.from_api`.
"""

from __future__ import annotations

from decimal import Decimal

from policies.units import UnitOfAccount
from storage.engine.budgets import Limits

MAX_LIMIT = Decimal(10) ** 12  # API units: far above any real budget, bounded for the ledger


def limits_from_api(unit: UnitOfAccount, day: Decimal | str | None,
                    month: Decimal | str | None) -> Limits:
    """Limits in ledger units of decimal API amounts (None = no limit). Raises ValueError,
    naming the field, for a malformed, negative, too large or too precise amount."""
    out: list[int | None] = []
    for name, value in (("limit_day", day), ("limit_month", month)):
        if value is None:
            out.append(None)
            continue
        try:
            amount = Decimal(value)
            if not amount.is_finite() or amount < 0 or amount > MAX_LIMIT:
                raise ValueError(f"must be within 0..{MAX_LIMIT}")
            out.append(unit.from_api(amount))
        except (ValueError, ArithmeticError) as exc:
            raise ValueError(f"{name}: {exc}") from None
    return Limits(day=out[0], month=out[1])


def limits_to_api(unit: UnitOfAccount, limits: Limits) -> dict[str, float | int | None]:
    """`limit_day`/`limit_month` as JSON numbers in the unit (None = no limit)."""
    return {"limit_day": None if limits.day is None else unit.to_json(limits.day),
            "limit_month": None if limits.month is None else unit.to_json(limits.month)}
