"""Shapes shared by the API modules: the problem document, the conventions of every reply
model (`Shape`, `omitted`, `timestamp`) and the balance document (billing and admin both answer
it). Each API module declares its own request and reply models next to its handlers; the handlers
build their responses through them (`Shape.wire()`), and gateway/api/openapi.py publishes the
same models as JSON Schema.

Conventions: `*_seconds` are whole seconds unless typed `number`; `*_ms` are exact ledger units
(milliseconds of AI time); times are RFC 3339 UTC strings with a `Z`. A member the handler leaves
out when it does not apply (never sends as null) is declared with `omitted(...)` and simply not
passed: `wire()` drops members that were not set. A member that is always there but may be null
is typed `X | None` without default.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, RootModel

DATE_TIME: dict[str, JsonValue] = {"format": "date-time"}


def _not_null(schema: dict[str, Any]) -> None:
    """JSON Schema hook: `X | None = None` documented as an optional, non-null X."""
    branches = [s for s in schema.pop("anyOf", []) if s.get("type") != "null"]
    schema.pop("default", None)
    if len(branches) == 1:
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches


def omitted(description: str, **constraints: Any) -> Any:
    """A member present only when it applies (absent, never null, otherwise)."""
    return Field(None, description=description, json_schema_extra=_not_null, **constraints)


def timestamp(description: str) -> Any:
    """An RFC 3339 UTC time with second precision, e.g. `2025-09-01T13:00:00Z`."""
    return Field(description=description, json_schema_extra=DATE_TIME)


class Shape(BaseModel):
    """A reply body: no members beyond the declared ones; aliased members (`from`) may be given
    by field name too."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def wire(self) -> dict[str, Any]:
        """The JSON-ready body: members by their wire names; a member that was not set (an
        `omitted(...)` one that does not apply) is absent, not null."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Problem(BaseModel):
    """An RFC 9457 problem document (`application/problem+json`). Members beyond the five
    standard ones are extensions of a particular problem type."""

    model_config = ConfigDict(extra="allow")
    type: str = Field(description="`<GATEWAY_PUBLIC_URL or http://HOST:PORT>/problems/<slug>`; "
                                  "dereferences to the type's documentation.",
                      json_schema_extra={"format": "uri"})
    title: str = Field(description="Short summary of the problem type (stable per type).")
    status: int = Field(ge=400, le=599, description="The HTTP status code.")
    detail: str = Field(description="What went wrong with this request, for people.")
    instance: str | None = omitted("URI of this occurrence, e.g. `urn:op:<operation id>`.")


# --- balance ---------------------------------------------------------------------------------


class BalanceTotals(Shape):
    total_seconds: int = Field(ge=0, description="`paid_seconds` + `bonus_seconds`: the sum of "
                                                 "every listed bucket's seconds.")
    paid_seconds: int = Field(ge=0, description="The sum of `buckets.paid[].seconds` (every "
                                                "non-daily bucket, welcome and gift included).")
    bonus_seconds: int = Field(ge=0, description="The sum of `buckets.daily[].seconds`.")
    available_seconds: int = Field(ge=0, description="What a call can use now (after holds "
                                                     "and debt); never above total_seconds.")
    held_seconds: int = Field(ge=0, description="Held by calls in flight.")
    debt_seconds: int = Field(ge=0, description="Overdraft to be netted against the next credit.")
    next_expiry_at: str | None = Field(description="Earliest bucket expiry, or null.",
                                       json_schema_extra=DATE_TIME)


BucketStatus = Literal["active", "expiring", "expired"]
_PRIORITY = "1-based position in burn order, across daily and paid buckets."
_STATUS = "`expiring` when the bucket expires within 24 h, else `active` (`expired` after it)."


class DailyBucket(Shape):
    """A daily bonus bucket (seed 000's BucketWithDisplay with `type: 'daily'`)."""

    id: str
    source: Literal["daily"]
    type: Literal["daily"]
    seconds: int = Field(ge=0, description="Whole seconds left, rounded down.")
    expires_at: str = timestamp("Midnight UTC of the bucket's day.")
    priority: int = Field(ge=1, description=_PRIORITY)
    status: BucketStatus = Field(description=_STATUS)


class PaidBucket(Shape):
    """Any other bucket (seed 000's BucketWithDisplay with `type: 'paid'`)."""

    id: str
    source: Literal["subscription", "rollover", "package", "welcome", "gift"]
    type: Literal["paid"]
    seconds: int = Field(ge=0, description="Whole seconds left, rounded down.")
    expires_at: str | None = Field(description="Null for buckets that never expire.",
                                   json_schema_extra=DATE_TIME)
    priority: int = Field(ge=1, description=_PRIORITY)
    status: BucketStatus = Field(description=_STATUS)


class BalanceBuckets(Shape):
    daily: list[DailyBucket] = Field(description="The daily buckets, in burn order.")
    paid: list[PaidBucket] = Field(description="Every non-daily bucket (subscription, rollover, "
                                               "package, welcome, gift), in burn order.")


class BonusInfo(Shape):
    daily_minutes: int = Field(ge=0)
    used_this_month_minutes: int = Field(ge=0)
    monthly_cap_minutes: int = Field(ge=0)


class ScheduledChange(Shape):
    """A scheduled downgrade (the seeds' DowngradeRolloverWarning)."""

    new_plan: str
    effective_date: str = timestamp("When the new plan takes effect (the period end).")
    will_discard_rollover: bool = Field(description="Rollover minutes are lost at the change.")
    minutes_to_discard: int = Field(ge=0)


class EnhancedBalance(Shape):
    """The seeds' EnhancedBalance (whole seconds, rounded down per bucket; each total is the sum
    of the seconds of the buckets it counts)."""

    version: str = Field(description="Changes whenever the balance changes.")
    plan_key: str
    subscription_status: str
    catalog_version: str
    totals: BalanceTotals
    buckets: BalanceBuckets
    scheduled_change: ScheduledChange | None = Field(
        description="A scheduled downgrade, or null.")
    bonus: BonusInfo


class PeriodWindow(Shape):
    """The UTC window a usage report covers (`period=day|week|month`)."""

    period: Literal["day", "week", "month"]
    from_: str = Field(alias="from", description="Start of the period (00:00 UTC).",
                       json_schema_extra=DATE_TIME)
    to: str = timestamp("End of the window: tomorrow 00:00 UTC.")


# --- balance in a currency or tokens unit (issue 10) ------------------------------------------

_AMOUNT = "In the deployment's unit (`unit`): a number of at most 6 decimals."
_MICROS = "The same amount in micro-units (integer, exact); currency units only."


def _amount(description: str = _AMOUNT) -> Any:
    return Field(ge=0, description=description)


class UnitTotals(Shape):
    total: int | float = _amount("`paid` + `bonus`: the sum of every listed bucket's amount.")
    total_micros: int | None = omitted(_MICROS, ge=0)
    paid: int | float = _amount("The sum of `buckets.paid[].amount`.")
    paid_micros: int | None = omitted(_MICROS, ge=0)
    bonus: int | float = _amount("The sum of `buckets.daily[].amount`.")
    bonus_micros: int | None = omitted(_MICROS, ge=0)
    available: int | float = _amount("What a call can use now (after holds and debt).")
    available_micros: int | None = omitted(_MICROS, ge=0)
    held: int | float = _amount("Held by calls in flight.")
    held_micros: int | None = omitted(_MICROS, ge=0)
    debt: int | float = _amount("Overdraft to be netted against the next credit.")
    debt_micros: int | None = omitted(_MICROS, ge=0)
    next_expiry_at: str | None = Field(description="Earliest bucket expiry, or null.",
                                       json_schema_extra=DATE_TIME)


class UnitBucket(Shape):
    """A bucket with its exact amount (`type` as in the seeds' BucketWithDisplay)."""

    id: str
    source: Literal["daily", "subscription", "rollover", "package", "welcome", "gift"]
    type: Literal["daily", "paid"]
    amount: int | float = _amount()
    amount_micros: int | None = omitted(_MICROS, ge=0)
    expires_at: str | None = Field(description="Null for buckets that never expire.",
                                   json_schema_extra=DATE_TIME)
    priority: int = Field(ge=1, description=_PRIORITY)
    status: BucketStatus = Field(description=_STATUS)


class UnitBuckets(Shape):
    daily: list[UnitBucket] = Field(description="The daily buckets, in burn order.")
    paid: list[UnitBucket] = Field(description="Every non-daily bucket, in burn order.")


class UnitBonus(Shape):
    daily: int | float = _amount("The plan's daily bonus.")
    daily_micros: int | None = omitted(_MICROS, ge=0)
    used_this_month: int | float = _amount("Daily bonus granted this month.")
    used_this_month_micros: int | None = omitted(_MICROS, ge=0)
    monthly_cap: int | float = _amount("Monthly cap of the daily bonus (0: none).")
    monthly_cap_micros: int | None = omitted(_MICROS, ge=0)


class UnitScheduledChange(Shape):
    """A scheduled downgrade and the rollover amount it will discard."""

    new_plan: str
    effective_date: str = timestamp("When the new plan takes effect (the period end).")
    will_discard_rollover: bool
    amount_to_discard: int | float = _amount()
    amount_to_discard_micros: int | None = omitted(_MICROS, ge=0)


class UnitBalance(Shape):
    """The balance of a currency or tokens deployment (policy `unit:`): EnhancedBalance's
    members with exact amounts in `unit` instead of seconds and minutes."""

    version: str = Field(description="Changes whenever the balance changes.")
    plan_key: str
    subscription_status: str
    catalog_version: str
    unit: str = Field(description="`USD` (or another ISO 4217 code) or `tokens`.")
    totals: UnitTotals
    buckets: UnitBuckets
    scheduled_change: UnitScheduledChange | None = Field(
        description="A scheduled downgrade, or null.")
    bonus: UnitBonus


class BalanceDocument(RootModel[EnhancedBalance | UnitBalance]):
    """The balance document: EnhancedBalance in a time deployment (the seeds'), UnitBalance in
    a currency or tokens one (it has `unit`)."""

    def wire(self) -> dict[str, Any]:
        """The JSON-ready body (as Shape.wire)."""
        return self.root.wire()

    @classmethod
    def of(cls, doc: dict[str, Any]) -> BalanceDocument:
        """Validate a balance_view.balance_document result against the shape of its unit."""
        return cls(UnitBalance.model_validate(doc) if "unit" in doc
                   else EnhancedBalance.model_validate(doc))
