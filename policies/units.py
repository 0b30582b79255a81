"""The deployment's unit of account: what one ledger unit is and how the API writes amounts.

Shapes (issue 10): the ledger always holds integers; the API writes decimal amounts.
- `time`: ledger unit 1 ms of AI time; API unit the second (`s`), existing `*_seconds` /
  `*_minutes` fields and `-ms` headers unchanged (seeds 000/001).
- `currency`: ledger unit 1 micro-unit (1e-6) of an ISO 4217 currency (`USD`); API amounts are
  decimal numbers with at most 6 decimals (seed 002's USD credits).
- `tokens`: ledger unit 1 token; API amounts are whole tokens (seed 003's token balances).

Every module that writes or reads an amount in the API's unit goes through `UnitOfAccount`, so
that conversions and rounding live in one place. The policy's `unit:` key selects one
(`Policy.unit`, default `TIME`).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal, InvalidOperation, localcontext
from enum import StrEnum


class UnitKind(StrEnum):
    """What the ledger counts."""

    TIME = "time"
    CURRENCY = "currency"
    TOKENS = "tokens"


_SCALE = {UnitKind.TIME: 1_000, UnitKind.CURRENCY: 1_000_000, UnitKind.TOKENS: 1}


@dataclass(frozen=True, slots=True)
class UnitOfAccount:
    """One deployment's unit. `currency`: upper-case ISO 4217 code for `CURRENCY`, else None."""

    kind: UnitKind = UnitKind.TIME
    currency: str | None = None

    @property
    def scale(self) -> int:
        """Ledger units per API unit: 1000 (ms per s), 1_000_000 (micros per currency unit), 1."""
        return _SCALE[self.kind]

    @property
    def api_name(self) -> str:
        """The API unit's name (`x-gateway-unit`, `unit` fields): `s`, `USD` or `tokens`."""
        if self.kind is UnitKind.TIME:
            return "s"
        if self.kind is UnitKind.TOKENS:
            return "tokens"
        assert self.currency is not None
        return self.currency

    def to_api(self, ledger_units: int) -> Decimal:
        """Exact decimal amount in the API's unit of an integer ledger amount (no rounding)."""
        return Decimal(ledger_units).scaleb(-len(str(self.scale)) + 1)

    def to_json(self, ledger_units: int) -> int | float:
        """A JSON number for `ledger_units`: an int when whole, else a float of at most 6 decimals
        (a float keeps 15 significant digits: exact for |ledger_units| < 10**15, e.g. below a
        billion USD in micro-units; callers add an integer twin where it matters)."""
        amount = self.to_api(ledger_units)
        return int(amount) if amount == amount.to_integral_value() else float(amount)

    def to_text(self, ledger_units: int) -> str:
        """The exact amount as a plain decimal string in the API's unit, no exponent and no
        trailing zeros (`1.5` USD, `0.000001` USD, `1200` tokens, `1.234` s): headers, CLI."""
        text = format(self.to_api(ledger_units), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text

    @property
    def error_code(self) -> str:
        """The 402's `error`: INSUFFICIENT_AI_TIME, INSUFFICIENT_CREDITS or INSUFFICIENT_TOKENS."""
        return {UnitKind.TIME: "INSUFFICIENT_AI_TIME", UnitKind.CURRENCY: "INSUFFICIENT_CREDITS",
                UnitKind.TOKENS: "INSUFFICIENT_TOKENS"}[self.kind]

    def json_fields(self, name: str, ledger_units: int) -> dict[str, int | float]:
        """`{name: amount}` in the API unit, plus the exact integer twin `{name}_micros` for a
        currency (where a float could round): the JSON convention of currency and token
        amounts (issue 10). Time deployments keep their own `*_seconds` fields instead."""
        out: dict[str, int | float] = {name: self.to_json(ledger_units)}
        if self.kind is UnitKind.CURRENCY:
            out[f"{name}_micros"] = ledger_units
        return out

    def from_api(self, amount: Decimal | int | str, *, round_up: bool = False) -> int:
        """Ledger units of a decimal API amount. Raises ValueError for a non-finite or malformed
        amount, or one finer than the ledger unit unless it is rounded (`round_up`: toward +inf,
        in the operator's favour for charges; otherwise finer amounts are an error)."""
        try:
            value = Decimal(amount) if not isinstance(amount, Decimal) else amount
        except (InvalidOperation, ValueError) as exc:
            raise ValueError(f"not a decimal amount: {amount!r}") from exc
        if not value.is_finite():
            raise ValueError(f"not a finite amount: {amount!r}")
        with localcontext() as ctx:  # exact: enough digits for the amount times the scale
            ctx.prec = max(28, len(value.as_tuple().digits) + 8)
            scaled = value * self.scale
            whole = scaled.to_integral_value(rounding=ROUND_CEILING if round_up else ROUND_FLOOR)
        if whole != scaled and not round_up:
            raise ValueError(f"{amount} has more precision than the ledger unit of {self.api_name}")
        return int(whole)


TIME = UnitOfAccount()
"""The default unit: milliseconds of AI time."""
