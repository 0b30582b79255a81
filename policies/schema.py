"""The policy schema: what an operator may write in the YAML files (SPEC §5).

Money is integers: meter prices and estimates are ledger units (milliseconds of AI time), catalog
prices are minor currency units (cents). Durations of timeouts are seconds (float).
Every model forbids unknown keys so a typo is an error naming the field, never silently ignored.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from policies.headers import FEATURE_HEADERS, forwardable
from policies.units import UnitKind, UnitOfAccount

Currency = Literal["USD", "EUR", "GBP", "EGP", "SAR", "AED"]
SUPPORTED_CURRENCIES: tuple[Currency, ...] = ("USD", "EUR", "GBP", "EGP", "SAR", "AED")
NonNeg = Annotated[int, Field(ge=0)]
Amount = Annotated[Decimal, Field(ge=0, le=10**12, decimal_places=6, allow_inf_nan=False)]
"""A decimal amount in the deployment's unit (USD, tokens, ...), at most 6 decimals."""
Positive = Annotated[int, Field(gt=0)]
_KEY = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UpstreamSpec(_Strict):
    """An upstream service. The credential is read from the env var `api_key_env` at load time.

    `base_url_env` names an env var that, when set, replaces `base_url` (the SDKs' own
    convention: OPENAI_BASE_URL includes /v1, ANTHROPIC_BASE_URL does not). `strip_prefix` is
    removed from the gateway path before it is appended to the base URL.

    Caller headers are forwarded by allow-list only (policies/headers.py): the protocol's
    built-in names, plus `forward_headers` (names), plus `forward_header_values` (feature
    headers such as `anthropic-beta`, of whose comma-separated value only the listed items
    pass). Credentials, hop-by-hop and framing headers can never be listed.
    """

    base_url: str
    base_url_env: str | None = None
    api_key_env: str | None = None
    auth: Literal["bearer", "x-api-key", "none"] = "bearer"
    strip_prefix: str = ""
    headers: dict[str, str] = Field(default_factory=dict)
    forward_headers: list[str] = Field(default_factory=list)
    forward_header_values: dict[str, list[str]] = Field(default_factory=dict)
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(300.0, gt=0)
    total_timeout_s: float = Field(600.0, gt=0)
    price_provider: str | None = Field(None, pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s/]+", v):
            raise ValueError("must be an absolute http(s) URL")
        return v.rstrip("/")

    @field_validator("forward_headers")
    @classmethod
    def _forwardable_names(cls, v: list[str]) -> list[str]:
        out = [_header_name(n) for n in v]
        for name in out:
            if name in FEATURE_HEADERS:
                raise ValueError(f"'{name}' is a feature header: list the values that may "
                                 "pass under forward_header_values")
        return out

    @field_validator("forward_header_values")
    @classmethod
    def _forwardable_values(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for name, items in v.items():
            if not items:
                raise ValueError(f"'{name}' lists no value")
            for item in items:
                if not _HEADER_ITEM.fullmatch(item):
                    raise ValueError(f"'{name}': {item!r} is not one header value item "
                                     "(no commas, spaces or control characters)")
            out[_header_name(name)] = items
        return out

    @model_validator(mode="after")
    def _names_listed_once(self) -> UpstreamSpec:
        both = sorted(set(self.forward_headers) & set(self.forward_header_values))
        if both:
            raise ValueError(f"{', '.join(both)} listed in both forward_headers and "
                             "forward_header_values")
        return self


_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")
_HEADER_ITEM = re.compile(r"^[\x21-\x2b\x2d-\x7e]+$")  # visible ASCII but ','


def _header_name(name: str) -> str:
    name = name.lower()
    if not _HEADER_NAME.fullmatch(name):
        raise ValueError(f"{name!r} is not a header name")
    if not forwardable(name):
        raise ValueError(f"'{name}' is never forwarded (credentials, hop-by-hop, framing)")
    return name


class TokenPrice(_Strict):
    """A model's token price, in the deployment's unit (policies.prices.ledger_per_million):
    time — ledger ms per 1,000,000 tokens (integers); currency — currency units (e.g. USD) per
    1,000,000 tokens; tokens — ledger tokens per token (a weight). `cached_input` defaults to
    `input`; `reasoning` (a part of output tokens) defaults to `output`."""

    input: Amount
    output: Amount
    cached_input: Amount | None = None
    reasoning: Amount | None = None


class TokensMeter(_Strict):
    """Charge tokens × per-model price (model keys may be fnmatch patterns like `gpt-4o*`).

    `prices: provider` (currency units only) charges the provider's list price from
    genai-prices × (1 + `markup_percent` / 100), rounded up to the ledger unit; `overrides`
    are explicit per-model prices that win over it. A model matching no key (or unknown to the
    price source) is denied, never free (SPEC §5).
    """

    type: Literal["tokens"]
    prices: Annotated[dict[str, TokenPrice], Field(min_length=1)] | Literal["provider"] | None = (
        None)
    markup_percent: Annotated[Decimal, Field(ge=0, le=10_000, decimal_places=4,
                                             allow_inf_nan=False)] | None = None
    overrides: dict[str, TokenPrice] = Field(default_factory=dict)
    minimum: NonNeg = 0

    @model_validator(mode="after")
    def _provider_keys(self) -> TokensMeter:
        if self.prices != "provider":
            if self.markup_percent is not None:
                raise ValueError("markup_percent applies to 'prices: provider' only")
            if self.overrides:
                raise ValueError("overrides apply to 'prices: provider' only; list the "
                                 "model under prices")
        return self


class DurationMeter(_Strict):
    """Charge the upstream call's wall time: ceil(ms × units_per_second / 1000), rounded up to
    a multiple of `round_up_to`, at least `minimum` (ledger units)."""

    type: Literal["duration"]
    units_per_second: Positive = 1000
    round_up_to: Positive = 1
    minimum: NonNeg = 0


class FixedMeter(_Strict):
    """Charge `units` per successful call (e.g. one image generation)."""

    type: Literal["fixed"]
    units: NonNeg


MeterSpec = Annotated[TokensMeter | DurationMeter | FixedMeter, Field(discriminator="type")]


class FixedEstimate(_Strict):
    """Hold `units` ledger units for every call."""

    type: Literal["fixed"]
    units: NonNeg


class RequestEstimate(_Strict):
    """Estimate from the request: input ≈ body bytes / 4 tokens, output = the largest of
    `max_tokens`, `max_completion_tokens`, `max_output_tokens` present (policies.estimates.
    output_limit), else `default_max_tokens`. Tokens meters only."""

    type: Literal["request"]
    default_max_tokens: Positive = 1024


class LearnedEstimate(_Strict):
    """The `percentile` of the last `window` actual costs of the operation once `min_samples`
    are seen, else `default` units."""

    type: Literal["learned"]
    default: NonNeg
    window: Positive = 200
    min_samples: Positive = 20
    percentile: int = Field(90, ge=1, le=100)

    @model_validator(mode="after")
    def _window_holds_samples(self) -> LearnedEstimate:
        if self.window < self.min_samples:
            raise ValueError("window must be >= min_samples, or the estimate never learns")
        return self


EstimateSpec = Annotated[
    FixedEstimate | RequestEstimate | LearnedEstimate, Field(discriminator="type")
]


class UpstreamErrorRule(_Strict):
    """What a failed upstream call costs (SPEC §6). Default: nothing.

    `charge: duration_after` charges the duration meter for a 5xx (or a broken connection)
    that took longer than `after_ms` — only on routes whose meter is `duration`.
    """

    charge: Literal["none", "duration_after"] = "none"
    after_ms: NonNeg = 0


class LimitSpec(_Strict):
    """Per-minute limits (fixed one-minute windows): requests and total tokens (input + output,
    counted when calls settle). None = unlimited."""

    requests_per_minute: Positive | None = None
    tokens_per_minute: Positive | None = None


class RateLimitSpec(_Strict):
    """Rate limits of a route: per API key and per account, shared across gateway processes
    through Redis when it is configured."""

    per_key: LimitSpec = Field(default_factory=LimitSpec)
    per_account: LimitSpec = Field(default_factory=LimitSpec)


Protocol = Literal[
    "openai_chat", "openai_responses", "openai_embeddings", "anthropic_messages", "plain"
]


class RouteSpec(_Strict):
    """A proxied route: method + path pattern → operation, upstream, meter and estimate.

    `path` may hold `{name}` segments. `protocol` selects how usage is read from responses.
    """

    operation: str = Field(pattern=_KEY)
    method: str = "POST"
    path: str = Field(pattern=r"^/")
    upstream: str
    upstream_path: str | None = None
    protocol: Protocol = "plain"
    meter: MeterSpec
    estimate: EstimateSpec
    fail_mode: Literal["deny", "allow"] = "deny"
    on_shortfall: Literal["clamp", "overdraft"] = "clamp"
    on_stream_exhausted: Literal["cut", "overdraft"] = "cut"
    upstream_errors: UpstreamErrorRule = Field(default_factory=UpstreamErrorRule)
    max_body_bytes: Positive = 10 * 1024 * 1024
    rate_limits: RateLimitSpec = Field(default_factory=RateLimitSpec)

    @field_validator("method")
    @classmethod
    def _upper(cls, v: str) -> str:
        v = v.upper()
        if v not in {"GET", "POST", "PUT", "PATCH", "DELETE"}:
            raise ValueError("must be one of GET, POST, PUT, PATCH, DELETE")
        return v

    @model_validator(mode="after")
    def _estimate_fits_meter(self) -> RouteSpec:
        if isinstance(self.estimate, RequestEstimate) and not isinstance(self.meter, TokensMeter):
            raise ValueError("estimate type 'request' needs a 'tokens' meter")
        if self.upstream_errors.charge == "duration_after" and not isinstance(
            self.meter, DurationMeter
        ):
            raise ValueError("upstream_errors.charge 'duration_after' needs a 'duration' meter")
        return self


class PlanSpec(_Strict):
    """A plan's bonuses and allowances: in minutes of AI time in a time deployment (seeds:
    free = 15-min daily bonus, 300-min monthly bonus cap), in the unit elsewhere
    (`daily_bonus: 0.50`, `included: 20.00` in USD; `included: 1000000` tokens). A policy
    mixing the two is rejected (policies.unit_checks)."""

    name: str | None = None
    daily_bonus_minutes: NonNeg = 0
    monthly_bonus_cap_minutes: NonNeg | None = None
    welcome_bonus_minutes: NonNeg = 0
    included_minutes: NonNeg = 0
    rollover_cap_minutes: NonNeg = 0
    daily_bonus: Amount | None = None
    monthly_bonus_cap: Amount | None = None
    welcome_bonus: Amount | None = None
    included: Amount | None = None
    rollover_cap: Amount | None = None
    # Default low-balance alert threshold of the plan's accounts, in the API's unit (seconds,
    # the currency or tokens; policies.alerts); accounts may set their own. None: no default.
    low_balance_threshold: Annotated[Decimal, Field(ge=0, le=10**9, decimal_places=6)] | None = (
        None)


class _Sellable(_Strict):
    """What the catalog sells: a key, a name, an amount of the unit — `minutes` of AI time,
    `credits` (decimal, currency deployments) or `tokens` (tokens deployments), exactly the
    one the unit takes (policies.unit_checks) — and prices in minor units (cents) per
    currency — USD always, as the fallback currency (seeds: currency_fallback_from)."""

    key: str = Field(pattern=_KEY)
    name: str
    minutes: NonNeg = 0
    credits: Amount | None = None
    tokens: Positive | None = None
    prices: dict[Currency, Positive] = Field(min_length=1)
    tax_inclusive: bool = False

    @field_validator("prices")
    @classmethod
    def _needs_usd(cls, v: dict[str, int], info: ValidationInfo) -> dict[str, int]:
        if "USD" not in v:
            key = info.data.get("key", "?")
            raise ValueError(f"'{key}' needs a USD price (the fallback currency)")
        return v

    def ledger_units(self, unit: UnitOfAccount) -> int:
        """The ledger units this item grants under `unit` (ms, micro-units or tokens)."""
        if unit.kind is UnitKind.CURRENCY:
            return unit.from_api(self.credits or 0)
        if unit.kind is UnitKind.TOKENS:
            return self.tokens or 0
        return self.minutes * 60_000


class PackageSpec(_Sellable):
    """A one-time package."""


class SubscriptionSpec(_Sellable):
    """A subscription: the plan it puts the account on; `minutes` are credited per period."""

    plan: str
    advisor_eligible: bool = False


class RolloverPolicy(_Strict):
    """Days a rollover bucket lives (seeds: 90)."""

    days: Positive = 90


class CreditPurchaseSpec(_Strict):
    """Bounds of a credit purchase of any amount (`POST /v1/billing/credits/checkout`, currency
    units of account only), in major units of the unit's currency with at most 2 decimals
    (seed 002: `0 < amount <= 1000`)."""

    min: Decimal = Field(Decimal("1.00"), gt=0, le=10**7, decimal_places=2)
    max: Decimal = Field(Decimal("1000.00"), gt=0, le=10**7, decimal_places=2)
    tax_inclusive: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> CreditPurchaseSpec:
        if self.min > self.max:
            raise ValueError("credit_purchase: min must not exceed max")
        return self


class CatalogSpec(_Strict):
    """What is for sale. `version` is the catalog version shown in balances and 402s."""

    version: str
    currencies: list[Currency] = Field(default_factory=lambda: list(SUPPORTED_CURRENCIES))
    rollover_policy: RolloverPolicy = Field(default_factory=RolloverPolicy)
    package_expiry_days: Positive = 90
    subscriptions: list[SubscriptionSpec] = Field(default_factory=list)
    packages: list[PackageSpec] = Field(default_factory=list)
    credit_purchase: CreditPurchaseSpec = Field(default_factory=CreditPurchaseSpec)

    @model_validator(mode="after")
    def _usd_everywhere(self) -> CatalogSpec:
        keys = [p.key for p in self.packages] + [s.key for s in self.subscriptions]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"duplicate catalog keys: {', '.join(dupes)}")
        return self


class HoldSpec(_Strict):
    """Hold lifetimes, so a crashed gateway never strands balance (SPEC §3).

    A hold is a lease of `lease_s` seconds that the gateway process renews while its call is in
    flight (every lease_s / 3); a killed process's holds stop counting within `lease_s` plus one
    renewal period. Renewal stops `ttl_margin_s` after the route's total timeout.
    """

    lease_s: int = Field(30, ge=3, le=600)
    ttl_margin_s: Positive = 30


class UnitSpec(_Strict):
    """The deployment's unit of account (issue 10): `time` (default; ledger ms), `currency`
    with an ISO 4217 `currency` (ledger micro-units), or `tokens` (ledger tokens)."""

    kind: Literal["time", "currency", "tokens"] = "time"
    currency: Currency | None = None

    @model_validator(mode="after")
    def _currency_iff_currency(self) -> UnitSpec:
        if (self.kind == "currency") != (self.currency is not None):
            raise ValueError("a currency unit names its currency (and only it does)")
        return self

    def compile(self) -> UnitOfAccount:
        """The UnitOfAccount the rest of the gateway works with."""
        return UnitOfAccount(UnitKind(self.kind), self.currency)


class EndUserLimits(_Strict):
    """Spending limits per end user (the `user` a call is made for, within one account;
    issue 10 item 4), in the deployment's unit of account (API amounts: seconds, USD or
    tokens). `day`: per UTC day; None = no limit."""

    day: Decimal | None = Field(None, ge=0, le=Decimal(10) ** 12)


class PolicyDocument(_Strict):
    """One whole policy (after merging every file): the root of the YAML schema."""

    version: Literal[1] = 1
    unit: UnitSpec = Field(default_factory=UnitSpec)
    ledger_unit: Literal["ms"] | None = Field(
        None, description="Legacy: `ms` (time deployments); a currency or tokens `unit` refuses "
                          "it.")
    default_plan: str = "free"
    holds: HoldSpec = Field(default_factory=HoldSpec)
    plans: dict[str, PlanSpec] = Field(min_length=1)
    catalog: CatalogSpec
    upstreams: dict[str, UpstreamSpec] = Field(default_factory=dict)
    routes: list[RouteSpec] = Field(default_factory=list)
    # Provider cost (issue 10 item 3): the account's own API key may read its cost records and
    # summaries only when this is true (HMAC and admin callers always may).
    expose_provider_cost: bool = False
    end_user_limits: EndUserLimits = Field(default_factory=EndUserLimits)
