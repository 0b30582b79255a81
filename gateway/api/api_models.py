"""Response shapes of the billing and admin API (and the Stripe event the webhook receives) as
pydantic models, for the OpenAPI document only.

Handlers build plain dicts (orjson, no validation on the way out); these models say what those
dicts contain so gateway/api/openapi.py can publish them as JSON Schema. tests/e2e/test_openapi.py
checks every response of a running gateway against them, so a handler and its model cannot drift
apart unnoticed. Conventions: `*_seconds` are whole seconds unless typed `number`; `*_ms` are
exact ledger units (milliseconds of AI time); times are RFC 3339 UTC strings with a `Z`.

A member the handler leaves out when it does not apply (never sends as null) is declared with
`omitted(...)`; a member that is always there but may be null is typed `X | None` without default.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from storage.engine.buckets import EventType

Currency = Literal["USD", "EUR", "GBP", "EGP", "SAR", "AED"]
_DATE_TIME = {"format": "date-time"}


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
    return Field(description=description, json_schema_extra=_DATE_TIME)


class _Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


# --- catalog ---------------------------------------------------------------------------------


class _Priced(_Reply):
    currency: Currency = Field(description="Currency of this item's price: always the "
                                           "document's `currency`.")
    unit_amount_cents: int = Field(ge=0, description="Price in minor units (cents).")
    price: float = Field(ge=0, description="The same amount in major units, for display only.")
    display_price: float = Field(ge=0, description="The same amount in major units (a number, "
                                                   "as `price`), for display only.")
    display_price_text: str = Field(description="Formatted price, e.g. `$5.00`, `€19.00`.")


class CatalogPackage(_Priced):
    """A one-off package of AI minutes."""

    key: str
    name: str
    minutes: int = Field(ge=0)
    taxInclusive: bool


class Advisor(_Reply):
    eligible: bool


class CatalogSubscription(_Priced):
    """A subscription: minutes per period on `plan`, with the plan's bonus and rollover caps."""

    key: str
    name: str
    plan: str
    minutes: int = Field(ge=0)
    taxInclusive: bool
    advisor: Advisor
    bonusDaily: int | None = omitted("Daily bonus minutes of the plan.", ge=0)
    monthlyBonusCap: int | None = omitted("Monthly cap of bonus minutes.", ge=0)
    rolloverCap: int | None = omitted("Minutes that may roll over.", ge=0)


class RolloverPolicy(_Reply):
    days: int = Field(ge=0)


class Catalog(_Reply):
    """The seeds' PricingCatalog in one currency."""

    version: str = Field(description="Catalog version; part of the ETag.")
    currency: Currency = Field(description="Currency of the document and of every item (USD "
                                           "on fallback).")
    rollover_policy: RolloverPolicy
    subscriptions: list[CatalogSubscription]
    packages: list[CatalogPackage]
    currency_fallback_from: str | None = omitted(
        "The requested currency, when the catalog does not offer it or any item has no price "
        "in it: the whole document is then in USD.")


# --- balance ---------------------------------------------------------------------------------


class BalanceTotals(_Reply):
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
                                       json_schema_extra=_DATE_TIME)


BucketStatus = Literal["active", "expiring", "expired"]
_PRIORITY = "1-based position in burn order, across daily and paid buckets."
_STATUS = "`expiring` when the bucket expires within 24 h, else `active` (`expired` after it)."


class DailyBucket(_Reply):
    """A daily bonus bucket (seed 000's BucketWithDisplay with `type: 'daily'`)."""

    id: str
    source: Literal["daily"]
    type: Literal["daily"]
    seconds: int = Field(ge=0, description="Whole seconds left, rounded down.")
    expires_at: str = timestamp("Midnight UTC of the bucket's day.")
    priority: int = Field(ge=1, description=_PRIORITY)
    status: BucketStatus = Field(description=_STATUS)


class PaidBucket(_Reply):
    """Any other bucket (seed 000's BucketWithDisplay with `type: 'paid'`)."""

    id: str
    source: Literal["subscription", "rollover", "package", "welcome", "gift"]
    type: Literal["paid"]
    seconds: int = Field(ge=0, description="Whole seconds left, rounded down.")
    expires_at: str | None = Field(description="Null for buckets that never expire.",
                                   json_schema_extra=_DATE_TIME)
    priority: int = Field(ge=1, description=_PRIORITY)
    status: BucketStatus = Field(description=_STATUS)


class BalanceBuckets(_Reply):
    daily: list[DailyBucket] = Field(description="The daily buckets, in burn order.")
    paid: list[PaidBucket] = Field(description="Every non-daily bucket (subscription, rollover, "
                                               "package, welcome, gift), in burn order.")


class BonusInfo(_Reply):
    daily_minutes: int = Field(ge=0)
    used_this_month_minutes: int = Field(ge=0)
    monthly_cap_minutes: int = Field(ge=0)


class ScheduledChange(_Reply):
    """A scheduled downgrade (the seeds' DowngradeRolloverWarning)."""

    new_plan: str
    effective_date: str = timestamp("When the new plan takes effect (the period end).")
    will_discard_rollover: bool = Field(description="Rollover minutes are lost at the change.")
    minutes_to_discard: int = Field(ge=0)


class EnhancedBalance(_Reply):
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


# --- events, usage, batch preflight ----------------------------------------------------------


class BillingEvent(_Reply):
    """A ledger entry (the seeds' BillingEvent plus `id` and the exact `amount_ms`)."""

    id: str = Field(pattern=r"^le_[0-9]+$")
    type: EventType
    seconds: float = Field(description="Signed amount in seconds (3 decimals), for display.")
    amount_ms: int = Field(description="Signed exact amount in ledger units.")
    reason: str
    timestamp: str = timestamp("When the entry was written.")
    metadata: dict[str, Any]


class EventsPage(_Reply):
    events: list[BillingEvent] = Field(description="Newest first.")
    next_cursor: str | None = Field(pattern=r"^le_[0-9]+$",
                                    description="`cursor` of the next page; null on the last.")


class TrendDay(_Reply):
    date: str = Field(json_schema_extra={"format": "date"})
    seconds: float = Field(ge=0)


class UsageAnalytics(_Reply):
    """The seeds' UsageAnalytics of one account (seconds charged, 3 decimals)."""

    period: Literal["day", "week", "month"]
    from_: str = Field(alias="from", description="Start of the period (00:00 UTC).",
                       json_schema_extra=_DATE_TIME)
    to: str = timestamp("End of the window: tomorrow 00:00 UTC.")
    total_seconds: float = Field(ge=0)
    by_operation: dict[str, float] = Field(description="Seconds charged per operation.")
    count_by_operation: dict[str, int] = Field(description="Calls settled per operation.")
    daily_trend: list[TrendDay] = Field(description="Every UTC day of the period, oldest first.")


class PackageSuggestion(_Reply):
    type: Literal["package"]
    key: str
    minutes: int = Field(ge=0)


class UpgradeSuggestion(_Reply):
    type: Literal["upgrade"]
    plan: str


Suggestion = PackageSuggestion | UpgradeSuggestion


class BatchCheckItem(_Reply):
    """One operation's verdict (seed 001's BatchOperationResult, with what it was checked
    against)."""

    operation: str
    ok: bool = Field(description="The balance covers this and every earlier operation.")
    deficit_seconds: int = Field(ge=0, description="Cumulative shortfall up to this operation.")
    estimate_seconds: int = Field(ge=0)
    required_seconds: int = Field(ge=0, description="Sum of the estimates up to this one.")
    balance_seconds: int = Field(ge=0, description="The available balance checked against "
                                                   "(whole seconds, rounded down).")
    unit: Literal["seconds"] = Field(description="Unit of every `*_seconds` member.")
    estimate_source: Literal["client", "fixed", "learned"]
    confidence: Literal["high", "medium", "low", "fixed"] | None = omitted(
        "How sure the route's estimate is (not for client estimates).")
    based_on_samples: int | None = omitted("Samples behind a learned estimate.", ge=0)
    suggestions: list[Suggestion] | None = omitted("What to buy to cover the deficit.")


class BatchCheckResult(RootModel[Annotated[list[BatchCheckItem],
                                           Field(min_length=1, max_length=10)]]):
    """The bare array of seed 001's `BatchOperationResult[]`, one per operation, in order."""


# --- purchases -------------------------------------------------------------------------------


class PurchaseResult(_Reply):
    """A Stripe Checkout Session for one package."""

    checkout_url: str = Field(description="Where to send the buyer.",
                              json_schema_extra={"format": "uri"})
    session_id: str
    currency: Currency
    unit_amount_cents: int = Field(ge=0)
    price: float = Field(ge=0, description="The amount in major units, for display only.")
    display_price: float = Field(ge=0, description="The same number (seed 001's "
                                                   "PurchaseResponse).")
    display_price_text: str = Field(description="Formatted price, e.g. `€5.00`.")
    package_minutes: int = Field(ge=0)
    currency_fallback_from: str | None = Field(
        description="The requested currency when the catalog is in USD for it (it is not "
                    "offered, or some item has no price in it), else null.")


class SubscriptionCheckoutResult(_Reply):
    """A Stripe Checkout Session (subscription mode) for one catalog subscription, monthly."""

    checkout_url: str = Field(description="Where to send the buyer.",
                              json_schema_extra={"format": "uri"})
    session_id: str
    currency: Currency
    unit_amount_cents: int = Field(ge=0, description="Monthly price in minor units (cents).")
    price: float = Field(ge=0, description="The amount in major units, for display only.")
    display_price: float = Field(ge=0, description="The same number.")
    display_price_text: str = Field(description="Formatted price, e.g. `€29.00`.")
    subscription_key: str
    plan_key: str = Field(description="The plan the account moves to once Stripe confirms.")
    minutes_per_period: int = Field(ge=0)
    currency_fallback_from: str | None = Field(
        description="The requested currency when the catalog is in USD for it (it is not "
                    "offered, or some item has no price in it), else null.")


class AutoTopUp(_Reply):
    """An account's auto top-up settings and state. Before the first PUT only `enabled` (false)
    and `configured` (false) are sent; afterwards every member is."""

    configured: bool = Field(description="Settings were saved at least once.")
    enabled: bool
    threshold_minutes: int | None = omitted("Top up when a settlement leaves fewer minutes.",
                                            ge=1)
    package_key: str | None = omitted("The catalog package bought each time.")
    currency: Currency | None = omitted("A catalog currency; the charge falls back to USD when "
                                        "the package has no price in it.")
    payment_method_id: str | None = Field(
        None, description="Saved off-session payment method (`pm_…`); null until given.")
    customer_id: str | None = Field(
        None, description="The Stripe customer (`cus_…`) owning it; null until given.")
    pending: bool | None = omitted("A charge was started; its credit waits for Stripe's "
                                   "`payment_intent.succeeded`.")
    consecutive_failures: int | None = omitted("Declines or errors since the last success.",
                                               ge=0)
    next_attempt_at: str | None = Field(
        None, description="Backoff after failures: no attempt before this time; null when "
                          "none is pending.", json_schema_extra=_DATE_TIME)
    last_error: str | None = Field(None, description="Why the last attempt failed, or null.")


class StripeEvent(BaseModel):
    """The webhook's input: a Stripe Event object (https://docs.stripe.com/api/events/object),
    verified on the raw bytes; `checkout.session.completed` is applied, others are recorded."""

    model_config = ConfigDict(extra="allow")
    id: str
    type: str
    data: dict[str, Any]


class WebhookAck(_Reply):
    received: Literal[True]
    outcome: str = Field(description="What the event did, e.g. `fulfilled`, `duplicate`, "
                                     "`awaiting_payment`, `ignored`.")


# --- admin -----------------------------------------------------------------------------------


class AccountCreated(_Reply):
    account_id: str
    plan_key: str


class AccountSummary(_Reply):
    account_id: str
    plan_key: str
    subscription_status: str
    created_at: str = timestamp("When the account was created.")


class AccountsPage(_Reply):
    accounts: list[AccountSummary] = Field(description="Ordered by account id.")
    next_cursor: str | None = Field(description="`cursor` of the next page (an account id); "
                                                "null on the last.")


class ApiKeyInfo(_Reply):
    key_id: str
    prefix: str = Field(description="The first 10 characters of the key.")
    created_at: str = timestamp("When the key was created.")
    revoked_at: str | None = Field(description="When it was revoked; null while active.",
                                   json_schema_extra=_DATE_TIME)


class AccountDetail(_Reply):
    account_id: str
    balance: EnhancedBalance
    api_keys: list[ApiKeyInfo]


class KeyCreated(_Reply):
    key_id: str
    key: str = Field(pattern=r"^gw_", description="The API key; shown once, stored only hashed.")
    note: str


class KeyRevoked(_Reply):
    revoked: str = Field(description="The key id.")


class GrantApplied(_Reply):
    bucket_id: str | None = Field(description="The credited bucket (the original one on a "
                                               "replay).")
    amount_ms: int = Field(gt=0)
    replayed: bool = Field(description="The same request was already applied under this "
                                       "idempotency key: this is its original result (200).")


class AdjustmentApplied(_Reply):
    amount_ms: int = Field(description="Signed amount applied (credit > 0, take-back < 0).")
    replayed: bool = Field(description="The same request was already applied under this "
                                       "idempotency key: this is its original result (200).")
    unrecovered_ms: int = Field(ge=0, description="What a take-back could not find.")


class UsageGroup(_Reply):
    key: str | None = Field(description="The model or operation (null: model unknown).")
    calls: int = Field(ge=0)
    input_tokens: int = Field(ge=0)
    output_tokens: int = Field(ge=0)
    charged_ms: int = Field(ge=0)
    unbilled_ms: int = Field(ge=0)


class UsageStats(_Reply):
    """Usage across every account, grouped by model and by operation."""

    period: Literal["day", "week", "month"]
    from_: str = Field(alias="from", description="Start of the period (00:00 UTC).",
                       json_schema_extra=_DATE_TIME)
    to: str = timestamp("End of the window: tomorrow 00:00 UTC.")
    by_model: list[UsageGroup]
    by_operation: list[UsageGroup]
