"""The storage port: the store as a few small Protocols, and the data that crosses them.

The gateway depends on these and nothing else of storage's adapters:
- `Ledger`: admission, holds and settlement, grants, balances, usage;
- `Accounts`: accounts and API keys;
- `Payments`: purchases, Stripe events, subscriptions and period ends (expiry, rollover),
  auto top-up;
- `EventLog`: the per-account event log behind the live stream;
- `ResumeTokenStore`, `NonceStore`, `Counters`: short-lived shared state;
- `EventBus`: the live fan-out of committed events;
- `Inspection`: raw reads for audits and tests (never on a request path);
- `Alerts`: low-balance alert thresholds; `Webhooks`: outgoing webhook endpoints and their
  delivery outbox.
Adapters: storage/sql (SQLite, PostgreSQL), storage/memory (one process), storage.redis_state.
The money rules are not here nor in the adapters: they are the pure functions of
storage/engine, which every adapter calls.

Amounts are ledger units (ms of AI time); times are UTC epoch milliseconds unless typed datetime.
Every method may raise StoreUnavailable (nothing was committed).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from storage.clock import MS_PER_MINUTE
from storage.engine.alerts import AlertRules
from storage.engine.buckets import EventType, Source
from storage.engine.budgets import Limits
from storage.engine.burn_down import ShortfallRule
from storage.engine.webhooks import RetrySchedule

UsageSource = Literal["upstream", "estimate", "partial", "none"]
# Usage-record outcomes of calls that have not settled: written at admission, and set by the
# lease sweep when the hold lapsed with its process (charged 0, the estimate recorded unbilled).
IN_FLIGHT = "in_flight"
INTERRUPTED = "interrupted"


class StoreUnavailable(Exception):
    """The ledger store cannot be reached or failed mid-transaction; nothing was committed."""


class UnknownAccount(Exception):
    """No account with this id."""


class IdempotencyConflict(Exception):
    """The idempotency key was already applied to a request with a different effect (amount,
    source, reason or entry type); nothing was applied. The message names the key."""


@dataclass(frozen=True, slots=True)
class Admission:
    """A hold was placed: `hold_id` reserves `amount`; `available_after` is what is left."""

    hold_id: str
    amount: int
    available_after: int


@dataclass(frozen=True, slots=True)
class Shortfall:
    """Admission refused: `available` (<0 never shown: clamp at 0 for display) of `required`.

    `daily` and `paid` split what is available into bonus-daily and everything else (SPEC §7
    `breakdown_seconds`).
    """

    required: int
    available: int
    daily: int
    paid: int
    # What refused (issue 10): "account" (its balance), "key" (the API key's limit: the account
    # still has balance; `available` is the key's headroom) or "end_user" (the end user's).
    limit_source: str = "account"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """What one proxied call did, written as its usage record at settlement (completing the
    `in_flight` record its admission opened, or a new one for a call admitted without the
    store). `outcome`: ok, upstream_error, upstream_timeout, cut, client_disconnected, …"""

    request_id: str
    account_id: str
    operation: str
    model: str | None
    upstream_status: int | None
    duration_ms: int
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: int = 0
    usage_source: UsageSource = "upstream"
    streamed: bool = False
    outcome: str = "ok"
    # Provider cost (issue 10): the price source's provider, the cost in USD micro-units (None
    # with `cost_reason` when it could not be priced) and the price data's version; the API key
    # (`key_…`) and end user the call was made with.
    provider: str | None = None
    key_id: str | None = None
    end_user: str | None = None
    cache_write_tokens: int = 0
    prompt_cost: int | None = None
    completion_cost: int | None = None
    total_cost: int | None = None
    cost_reason: str | None = None
    price_version: str | None = None


@dataclass(frozen=True, slots=True)
class CallBudget:
    """The limits a call is admitted and settled under (storage.engine.budgets): its API key
    (`key_id`, with the key's `key_limits`) and end user (per account, with `end_user_day`:
    the policy's daily limit per end user). Ledger units; None = no limit."""

    key_id: str | None = None
    key_limits: Limits = field(default_factory=Limits)
    end_user: str | None = None
    end_user_day: int | None = None


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    """An active API key: its account, the account's plan, the key's id and limits."""

    account_id: str
    plan_key: str
    key_id: str
    limits: Limits = field(default_factory=Limits)


@dataclass(frozen=True, slots=True)
class CostQuery:
    """Filters of cost reads: an account (None: every account), [from_ms, to_ms) UTC epoch ms,
    and optionally one API key id and/or one end user."""

    account_id: str | None
    from_ms: int
    to_ms: int
    key_id: str | None = None
    end_user: str | None = None

    @property
    def filtered(self) -> bool:
        """True when a key or end-user filter applies (the rollups cannot answer it)."""
        return self.key_id is not None or self.end_user is not None


@dataclass(frozen=True, slots=True)
class CostGroup:
    """Cost totals of one (provider, model): calls, unpriced calls, prompt/completion tokens,
    provider `cost` in USD micro-units (priced calls only) and `charged` ledger units."""

    provider: str
    model: str
    calls: int
    unpriced: int
    prompt_tokens: int
    completion_tokens: int
    cost: int
    charged: int


@dataclass(frozen=True, slots=True)
class CostDay:
    """Cost totals of one UTC day (`day_ms`: its 00:00 UTC, epoch ms) from the daily cost
    rollup: calls, provider `cost` in USD micro-units and `charged` ledger units."""

    day_ms: int
    calls: int
    cost: int
    charged: int


@dataclass(frozen=True, slots=True)
class Settlement:
    """The outcome of settling one call: `charged` debited (ledger delta is −charged, or
    −requested under overdraft), `unbilled` not collected (clamp), `remaining` available after;
    `top_up` asks the caller to start an auto top-up."""

    charged: int
    unbilled: int
    remaining: int
    replayed: bool = False
    top_up: bool = False  # auto top-up is on and `remaining` fell below its threshold


@dataclass(frozen=True, slots=True)
class BucketView:
    """A bucket as shown to users (live buckets with balance only)."""

    id: str
    source: str
    remaining: int
    amount: int
    expires_at_ms: int | None
    created_at_ms: int


@dataclass(frozen=True, slots=True)
class BalanceSnapshot:
    """An account's balance at `now_ms`: live buckets in burn order, holds and debt.

    `version` is the id of the account's newest ledger entry: it grows with every change.
    """

    account_id: str
    version: int
    plan_key: str
    subscription_status: str
    buckets: list[BucketView]
    held: int
    debt: int
    daily_granted_this_month: int
    now_ms: int
    pending_plan_key: str | None = None  # a scheduled downgrade
    pending_effective_at_ms: int | None = None

    @property
    def spendable(self) -> int:
        return sum(b.remaining for b in self.buckets)

    @property
    def available(self) -> int:
        """Spendable − holds − debt; may be negative after an overdraft."""
        return self.spendable - self.held - self.debt


@dataclass(frozen=True, slots=True)
class GrantResult:
    """A credit applied (or `replayed` when its idempotency key was already applied)."""

    entry_id: int | None
    bucket_id: str | None
    amount: int
    replayed: bool = False
    metadata: dict[str, object] = field(default_factory=dict)


# ---- data of payments, subscriptions and auto top-up ----------------------------------------


@dataclass(frozen=True)
class Purchase:
    """A Checkout Session the gateway created: what it sells to whom, at what price."""

    session_id: str
    account_id: str
    package_key: str
    minutes: int
    currency: str
    unit_amount_cents: int
    operation_id: str | None
    units: int | None = None  # exact ledger units (a credit purchase); None: `minutes` of time

    @property
    def credit_units(self) -> int:
        """The ledger units this purchase credits: `units`, else `minutes` of AI time (ms)."""
        return self.units if self.units is not None else self.minutes * MS_PER_MINUTE


@dataclass(frozen=True)
class BillingProfile:
    """What the billing surface keeps of an account beside its balance: its Stripe customer
    (linked once: the first link wins), the default payment method (what auto top-up charges
    when its settings name none), when the account was created (UTC epoch ms), and the Stripe
    subscription and catalog subscription key the webhooks last linked (None: none)."""

    customer_id: str | None
    default_payment_method_id: str | None
    created_at_ms: int
    subscription_id: str | None = None
    subscription_key: str | None = None


class SessionConflict(Exception):
    """Stripe answered with a Checkout Session id already recorded for a different purchase
    (another account, package, price or operation); nothing was recorded."""


@dataclass(frozen=True)
class PlanRules:
    """What period ends need to know of the policy: rollover cap per plan key (units), the
    rollover bucket lifetime (ms) and the plan an account falls back to when it cancels."""

    rollover_caps: dict[str, int]
    rollover_ms: int
    default_plan: str


@dataclass(frozen=True)
class Invoice:
    """A paid subscription invoice: `units` credited for [period_start_ms, period_end_ms)."""

    invoice_id: str
    subscription_id: str | None
    customer_id: str | None
    subscription_key: str
    plan_key: str
    units: int
    period_start_ms: int
    period_end_ms: int


@dataclass(frozen=True)
class Attempt:
    """A claimed top-up: charge `cents` in `currency` for `package_key` (`units` of credit)
    to the saved payment method, with `attempt_id` as the idempotency key."""

    account_id: str
    attempt_id: str
    package_key: str
    currency: str
    customer_id: str
    payment_method_id: str


# ---- events and short-lived state -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """One event of an account's stream: `seq` is its SSE `id` (per account, increasing);
    `data` is the JSON object sent as the SSE `data`; `at_ms` UTC epoch milliseconds."""

    account_id: str
    seq: int
    type: str
    data: dict[str, Any]
    at_ms: int

    def to_json(self) -> str:
        """Compact JSON of the whole event (the fan-out's wire format)."""
        return json.dumps({"a": self.account_id, "s": self.seq, "t": self.type,
                           "d": self.data, "at": self.at_ms}, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> AccountEvent:
        """Inverse of `to_json`. Raises ValueError/KeyError on a malformed message."""
        return cls.from_doc(json.loads(raw))

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> AccountEvent:
        """The event of a parsed `to_json` object. Raises KeyError/ValueError/TypeError."""
        return cls(str(doc["a"]), int(doc["s"]), str(doc["t"]), dict(doc["d"]), int(doc["at"]))


EventSink = Callable[[list[AccountEvent]], None]


# ---- resume tokens (SPEC §7) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenRecord:
    """What a resume token is bound to. `expires_at_ms` is UTC epoch ms."""

    account_id: str
    binding: str
    operation_id: str
    expires_at_ms: int


class ResumeTokenStore(Protocol):
    """Store of resume tokens; implementations must make `consume` atomic (at most once).
    Tokens are stored only hashed (storage.resume_tokens.token_hash)."""

    async def issue(self, account_id: str, binding: str, operation_id: str) -> tuple[str, int]:
        """Create a token; returns (token, expires_at_ms)."""
        ...

    async def lookup(self, token: str) -> TokenRecord | None:
        """The live, unused record of `token`, or None (unknown, expired or used)."""
        ...

    async def consume(self, token: str) -> bool:
        """Mark the token used; True only for the single caller that consumed it."""
        ...


SessionKind = Literal["account", "admin"]


@dataclass(frozen=True, slots=True)
class DashboardSession:
    """A signed-in dashboard session (issue 12): `kind` "account" (an account's billing pages;
    `account_id` set) or "admin" (the operator console; `account_id` None); `csrf_token` must
    accompany every write it makes; `expires_at_ms` is UTC epoch ms (fixed at sign-in);
    `key_id` the API key an account session was opened with (None for admin sessions): the
    session ends when that key is revoked."""

    kind: SessionKind
    account_id: str | None
    csrf_token: str
    expires_at_ms: int
    key_id: str | None = None


class DashboardSessions(Protocol):
    """Server-side dashboard sessions. Session ids are opaque random strings, stored only as
    SHA-256 hashes; a session ends at its expiry or when ended (sign-out), on every process."""

    async def open_session(self, kind: SessionKind, account_id: str | None,
                           ttl_s: int, key_id: str | None = None) -> tuple[str, DashboardSession]:
        """A new session living `ttl_s` seconds, opened with API key `key_id` (account
        sessions); returns (session id, session)."""
        ...

    async def find_session(self, session_id: str) -> DashboardSession | None:
        """The live session of `session_id`, or None (unknown, ended, expired, or opened with an
        API key that has since been revoked or deleted)."""
        ...

    async def end_session(self, session_id: str) -> bool:
        """End the session; True when a live one was ended."""
        ...


class ConsoleQueries(Protocol):
    """Read-only queries of the operator console's admin endpoints (issue 12), across accounts."""

    async def search_accounts(self, query: str, limit: int,
                              after_id: str | None) -> list[dict[str, Any]]:
        """Accounts whose id contains `query` (case-insensitive; `%`, `_` literal), ordered by
        id, after `after_id`: rows with id, plan_key, subscription_status, created_at_ms."""
        ...

    async def usage_by_day(self, from_ms: int,
                           to_ms_: int) -> list[tuple[int, str, int, int]]:
        """(UTC day start ms, operation, calls, Σ charged units) of every account's usage per
        UTC day and operation of [from_ms, to_ms_), oldest first, from the daily rollup (flat in
        history size: ≤ days × operations rows, whatever the number of calls)."""
        ...


# ---- the ports --------------------------------------------------------------------------------


class PlanTerms(Protocol):
    """What the store needs of a plan (policies.compiled.Plan has it): its key and bonuses in
    ledger units (`monthly_bonus_cap` None = uncapped)."""

    @property
    def key(self) -> str: ...
    @property
    def daily_bonus(self) -> int: ...
    @property
    def monthly_bonus_cap(self) -> int | None: ...
    @property
    def welcome_bonus(self) -> int: ...


class Ledger(Protocol):
    """Admission, holds and settlement (the request path), grants, balances and usage.

    Each method is one atomic step per account. `lease_s`: a hold's lease, renewed by
    `renew_leases` while its call runs. Raises UnknownAccount for an unknown account id.
    """

    lease_s: float

    async def admit(self, account_id: str, amount: int, operation: str, ttl_s: float,
                    plan: PlanTerms, *, request_id: str | None = None,
                    model: str | None = None, streamed: bool = False,
                    budget: CallBudget | None = None) -> Admission | Shortfall:
        """Grant today's daily bonus if due, then hold `amount` if available covers it and
        the `budget`'s key and end-user limits have that headroom (one atomic step with the
        balance check; storage.engine.budgets), a call's usage record opened `in_flight`
        with it when `request_id` is given; else report the shortfall (`limit_source`). The
        hold lives `ttl_s` seconds at most."""
        ...

    async def extend_hold(self, account_id: str, hold_id: str, new_amount: int,
                          ttl_s: float) -> bool:
        """Raise a live hold to `new_amount` if the balance covers the increase."""
        ...

    async def settle(self, hold_id: str | None, record: CallRecord, charge: int,
                     on_shortfall: ShortfallRule,
                     budget: CallBudget | None = None) -> Settlement:
        """Charge a call in burn order (clamped at the `budget`'s key and end-user limits:
        the rest is unbilled), release its hold, write its usage record and the cost and
        spend rollups; idempotent by `record.request_id`."""
        ...

    async def release(self, hold_id: str) -> None:
        """Drop a hold without charging (and the `in_flight` record it opened)."""
        ...

    async def renew_leases(self, at_ms: int | None = None) -> int:
        """Sweep lapsed holds (their records closed `interrupted`) and renew this process's;
        returns how many were renewed."""
        ...

    async def ensure_daily_bonus(self, account_id: str, plan: PlanTerms,
                                 at_ms: int | None = None) -> bool:
        """Grant the daily bonus of `at_ms`'s UTC day if due (once a day, monthly cap)."""
        ...

    async def grant(self, account_id: str, source: Source, amount: int, key: str,
                    expires_at_ms: int | None, reason: str,
                    metadata: dict[str, Any] | None = None,
                    event_type: EventType | None = None) -> GrantResult:
        """Credit a new bucket, idempotent by `key` (IdempotencyConflict for another use)."""
        ...

    async def adjust_down(self, account_id: str, amount: int, key: str,
                          reason: str) -> GrantResult:
        """Take up to `amount` from live buckets in burn order (an `adjustment`)."""
        ...

    async def balance(self, account_id: str) -> BalanceSnapshot:
        """Live buckets in burn order, holds, debt and the month's daily grants."""
        ...

    async def events(self, account_id: str, limit: int,
                     before_id: int | None) -> list[dict[str, Any]]:
        """Ledger entries newest first below `before_id`: id, event_type, delta, reason,
        metadata_json, created_at_ms."""
        ...

    async def usage(self, account_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """The newest usage records (columns of `usage_records`)."""
        ...

    async def usage_summary(self, account_id: str, from_ms: int, to_ms_: int,
                            key_id: str | None = None,
                            end_user: str | None = None) -> list[tuple[str, int, int, int]]:
        """(operation, UTC day ms, Σ charged, calls) of the daily rollup in [from, to); with
        `key_id`/`end_user`, of the matching settled usage records instead."""
        ...

    async def usage_stats(self, from_ms: int, to_ms_: int, by: str) -> list[dict[str, Any]]:
        """All accounts' usage in [from, to) by `model`, `operation`, `key_id` or `end_user`:
        key, calls, input_tokens, output_tokens, charged_ms, unbilled_ms (ledger units;
        in-flight calls excluded)."""
        ...

    async def cost_records(self, query: CostQuery, limit: int,
                           after: tuple[int, str] | None) -> list[dict[str, Any]]:
        """Settled usage records matching `query` (account required), newest first, keyset
        pages below `after` = (created_at_ms, id): columns of `usage_records`."""
        ...

    async def cost_summary(self, query: CostQuery) -> list[CostGroup]:
        """Cost by (provider, model) of the settled calls matching `query`, ordered by
        provider then model. Without key/end-user filters it reads the daily cost rollup
        (UTC days of [from, to): flat in history size); with them, the usage records."""
        ...

    async def cost_by_day(self, account_id: str | None, from_ms: int,
                          to_ms_: int) -> list[CostDay]:
        """Per-UTC-day cost totals of the daily cost rollup for the days of [from, to) (the day
        of `from_ms` included), of one account or (None) every account, oldest first; days
        without calls are absent."""
        ...

    async def ping(self) -> None:
        """Round-trip to the store; raises StoreUnavailable."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class Accounts(Protocol):
    """Accounts and their API keys (stored only as SHA-256)."""

    async def create_account(self, plan: PlanTerms, account_id: str | None = None) -> str:
        """Create an account on `plan` (welcome bonus credited); returns its id."""
        ...

    async def account_exists(self, account_id: str) -> bool:
        ...

    async def create_api_key(self, account_id: str,
                             limits: Limits | None = None) -> tuple[str, str]:
        """(key id, plaintext key) — the plaintext is shown once, never stored. `limits`:
        the key's spending limits in ledger units (default none)."""
        ...

    async def set_key_limits(self, key_id: str, limits: Limits) -> str | None:
        """Replace an active key's limits; returns its account id, None for no active key."""
        ...

    async def revoke_api_key(self, key_id: str) -> bool:
        """False when no active key has that id."""
        ...

    async def resolve_key(self, key: str) -> ResolvedKey | None:
        """The account, plan key, key id and limits of an active plaintext API key, else
        None."""
        ...

    async def resolve_key_hash(self, key_hash: str) -> ResolvedKey | None:
        """As `resolve_key`, given the key's SHA-256 hex (storage.ids.hash_key)."""
        ...

    async def list_accounts(self, limit: int, after_id: str | None,
                            plan_key: str | None) -> list[dict[str, Any]]:
        """Account rows ordered by id after `after_id`, optionally of one plan."""
        ...

    async def account_keys(self, account_id: str) -> list[dict[str, Any]]:
        """The account's keys: id, prefix, created_at_ms, revoked_at_ms, limit_day,
        limit_month (never hashes)."""
        ...


class Payments(Protocol):
    """Purchases, Stripe events (each applied once), subscriptions, expiry and period ends
    (rollover), auto top-up.

    Outcomes are strings the webhook reports: credited, duplicate, applied, stale, pending,
    clawed_back, nothing_to_claw_back, unknown_session. `at_ms` defaults to the store's clock.
    """

    async def record_purchase(self, purchase: Purchase, at_ms: int | None = None) -> bool:
        """Remember a created Checkout Session; False when already recorded as is; raises
        SessionConflict when the id is recorded for another purchase."""
        ...

    async def fulfil_checkout(
        self, event_id: str, event_type: str, session_id: str, expires_at_ms: int,
        payment_intent_id: str | None = None, at_ms: int | None = None,
    ) -> tuple[str, GrantResult | None, Purchase | None]:
        """Apply checkout.session.completed once: credit the package."""
        ...

    async def refund(self, event_id: str, event_type: str, payment_intent_id: str,
                     charge_id: str, amount_cents: int, refunded_cents: int,
                     at_ms: int | None = None) -> str:
        """Apply charge.refunded once: claw back what remains of the refunded share."""
        ...

    async def record_event(self, event_id: str, event_type: str, outcome: str,
                           at_ms: int | None = None) -> bool:
        """Record a processed event that moves no money; False if already recorded."""
        ...

    async def settle_orphan_refunds(self, at_ms: int | None = None) -> int:
        """Apply pending refunds whose purchase was credited since; returns how many."""
        ...

    async def account_for_customer(self, customer_id: str) -> str | None:
        """The account linked to a Stripe customer id."""
        ...

    async def billing_profile(self, account_id: str) -> BillingProfile:
        """The account's Stripe customer, default payment method and creation time. Raises
        UnknownAccount."""
        ...

    async def link_customer(self, account_id: str, customer_id: str) -> str:
        """Link a Stripe customer to the account unless one is linked already (under the
        account lock: of racing links the first wins); returns the customer now linked.
        Raises UnknownAccount."""
        ...

    async def set_default_payment_method(self, account_id: str, payment_method_id: str | None,
                                         *, only_if: str | None = None) -> bool:
        """Set (or clear, with None) the account's default payment method; with `only_if`,
        only when the current default is that one (a detached card stops being the default).
        Returns whether it changed. Raises UnknownAccount."""
        ...

    async def invoice_paid(self, event_id: str, event_type: str, event_ms: int,
                           account_id: str, invoice: Invoice, rules: PlanRules,
                           at_ms: int | None = None) -> str:
        """Apply invoice.paid once: credit the period's subscription bucket."""
        ...

    async def subscription_changed(
        self, event_id: str, event_type: str, event_ms: int, account_id: str, status: str,
        plan_key: str | None, subscription_key: str | None, pending: tuple[str, int] | None,
        rules: PlanRules, *, stripe_ids: tuple[str | None, str | None] = (None, None),
        at_ms: int | None = None,
    ) -> str:
        """Apply a subscription change once, if newer than the last applied."""
        ...

    async def pending_change(self, event_id: str, event_type: str, event_ms: int,
                             account_id: str, pending: tuple[str, int] | None,
                             at_ms: int | None = None) -> str:
        """Record (or clear, with None) a scheduled downgrade, if newer."""
        ...

    async def expired_accounts(self, limit: int, at_ms: int | None = None) -> list[str]:
        """Up to `limit` accounts owning an expired bucket with balance left."""
        ...

    async def close_expired(self, account_id: str, rules: PlanRules,
                            at_ms: int | None = None) -> int:
        """Close the account's expired buckets (expiry, period ends rolled over); returns
        how many were closed."""
        ...

    async def topup_settings(self, account_id: str) -> dict[str, Any] | None:
        """The account's auto top-up settings (columns of `auto_topups`), or None."""
        ...

    async def configure_topup(self, account_id: str, enabled: bool, threshold: int,
                              package_key: str, currency: str, customer_id: str | None,
                              payment_method_id: str | None,
                              at_ms: int | None = None) -> dict[str, Any]:
        """Create or replace the auto top-up settings; returns them."""
        ...

    async def claim_topup(self, account_id: str, at_ms: int | None = None) -> Attempt | None:
        """Claim a top-up attempt when one is due (at most one pending per account)."""
        ...

    async def topup_failed(self, account_id: str, attempt_id: str, error: str,
                           at_ms: int | None = None) -> bool:
        """Clear a declined attempt and back off; False when it is no longer pending."""
        ...

    async def due_topups(self, limit: int, at_ms: int | None = None) -> list[str]:
        """Accounts whose auto top-up may be claimable now."""
        ...

    async def credit_topup(self, event_id: str, event_type: str, payment_intent_id: str,
                           account_id: str, attempt_id: str | None, package_key: str,
                           minutes: int, currency: str, cents: int, expires_at_ms: int,
                           at_ms: int | None = None, units: int | None = None) -> str:
        """Apply payment_intent.succeeded of an auto top-up once: credit the package
        (`units` ledger units when given — currency and tokens deployments — else
        `minutes`)."""
        ...


class EventLog(Protocol):
    """The account event log behind the live stream. `on_commit` receives each committed
    change's events (the live fan-out: EventBus.publish), never before the commit."""

    on_commit: EventSink | None

    async def stream_position(self, account_id: str) -> tuple[int, int] | None:
        """(current seq, oldest logged seq or current + 1); None for an unknown account."""
        ...

    async def catch_up(self, account_id: str, after_seq: int,
                       limit: int) -> tuple[list[AccountEvent], int]:
        """(logged events after `after_seq`, oldest first, the account's current seq)."""
        ...

    async def events_after(self, account_id: str, after_seq: int,
                           limit: int) -> list[AccountEvent]:
        """Logged events with seq > `after_seq`, oldest first, at most `limit`."""
        ...

    async def prune_events(self, before_ms: int) -> int:
        """Delete logged events older than `before_ms`; returns how many."""
        ...


class NonceStore(Protocol):
    """Seen HMAC nonces."""

    async def remember(self, key: str, ttl_s: int) -> bool:
        """Record `key` for `ttl_s` seconds; True if it was new (False = replay)."""
        ...


class Counters(Protocol):
    """Fixed-window counters of the rate limits."""

    async def add(self, keys: list[str], amounts: list[int], window_s: int) -> list[int]:
        """Add `amounts` to the counters `keys` (expiring after `window_s`); returns the
        new values."""
        ...


class Subscription(Protocol):
    """One open stream's inbox: `queue` of events; `lagged` once events were dropped."""

    account_id: str
    queue: asyncio.Queue[AccountEvent]
    lagged: bool


class EventBus(Protocol):
    """The live fan-out of committed account events to open streams (this process's, and
    other processes' through a shared bus)."""

    def publish(self, events: list[AccountEvent]) -> None:
        """Deliver committed events (called right after the commit)."""
        ...

    async def subscribe(self, account_id: str) -> Subscription:
        """Open an inbox for the account's events; pair with `unsubscribe`."""
        ...

    def unsubscribe(self, sub: Any) -> None:
        ...

    @property
    def streams(self) -> int:
        """Open subscriptions in this process."""
        ...

    async def start(self) -> None:
        ...

    async def close(self) -> None:
        ...


# ---- low-balance alerts and outgoing webhooks (issue 11 items 7, 8) ---------------------------


@dataclass(frozen=True, slots=True)
class AlertSettings:
    """An account's alert settings: its own threshold (ledger units; None = its plan's default,
    AlertRules.threshold), its plan key and its alert state (storage.engine.alerts.AlertState)."""

    own_threshold: int | None
    plan_key: str
    state: str


class Alerts(Protocol):
    """Low-balance alert settings. The crossing check itself runs inside every balance change
    of the Ledger and Payments adapters, with `alert_rules` (set on start and policy reload)."""

    alert_rules: AlertRules

    async def alert_settings(self, account_id: str) -> AlertSettings:
        """Raises UnknownAccount."""
        ...

    async def set_alert_threshold(self, account_id: str,
                                  threshold: int | None) -> AlertSettings:
        """Set the account's threshold (ledger units, 0..MAX_THRESHOLD; None: back to the plan's
        default) and check the balance against it at once (an alert may fire).
        Raises UnknownAccount."""
        ...


@dataclass(frozen=True, slots=True)
class DeliveryClaim:
    """A webhook delivery leased to one worker until `lease_until_ms`: POST `payload_json` to
    `url`, signed with `secret` (never logged) under the stable `message_id` (`webhook-id`)."""

    delivery_id: str
    message_id: str
    endpoint_id: str
    url: str
    secret: str
    payload_json: str
    attempts: int
    created_at_ms: int
    lease_until_ms: int


class Webhooks(Protocol):
    """Outgoing webhook endpoints and the outbox: deliveries are written by the store in the
    transaction of the event they carry (storage.engine.webhooks.WEBHOOK_EVENT_TYPES)."""

    async def create_endpoint(self, url: str, event_types: list[str], description: str | None,
                              secret: str) -> dict[str, Any]:
        """Register an endpoint (validated by the caller); returns it without the secret."""
        ...

    async def list_endpoints(self) -> list[dict[str, Any]]:
        """Every endpoint (id, url, event_types, description, created_at_ms), no secrets."""
        ...

    async def deliveries(self, endpoint_id: str, limit: int) -> list[dict[str, Any]] | None:
        """The endpoint's newest deliveries and their attempts; None for an unknown id."""
        ...

    async def claim_deliveries(self, lease_ms: int, limit: int) -> list[DeliveryClaim]:
        """Lease due deliveries to this worker (one worker at a time per delivery)."""
        ...

    async def record_attempt(self, claim: DeliveryClaim, status_code: int | None,
                             error: str | None, duration_ms: int,
                             schedule: RetrySchedule) -> str:
        """Log an attempt and schedule the next one by `schedule` (a 2xx delivers); returns
        the delivery's status (delivered, pending, failed)."""
        ...


class Inspection(Protocol):
    """Raw reads of what a store holds, for audits and tests (never on a request path); rows
    are dicts keyed like the SQL tables' columns (storage/sql/tables.py)."""

    async def totals(self, account_id: str) -> dict[str, int]:
        """remaining (Σ all buckets), debt, deltas (Σ ledger entries), holds (live count)."""
        ...

    async def entry_rows(self, account_id: str) -> list[dict[str, Any]]:
        """Every ledger entry of the account, oldest first."""
        ...

    async def bucket_rows(self, account_id: str) -> list[dict[str, Any]]:
        """Every bucket (expired and empty ones too), by creation time then id."""
        ...

    async def allocation_rows(self, account_id: str, key: str) -> list[tuple[str, str, int]]:
        """(bucket id, bucket source, amount) of the entry with idempotency `key`, in order."""
        ...

    async def usage_row(self, request_id: str) -> dict[str, Any] | None:
        ...

    async def rollup_rows(self, account_id: str) -> list[tuple[str, int, int]]:
        """(operation, calls, charged) of the account's daily usage rollup rows."""
        ...

    async def account_row(self, account_id: str) -> dict[str, Any]:
        ...

    async def api_key_rows(self) -> list[dict[str, Any]]:
        """Every stored API key row (what is kept of a key: its hash, never the key)."""
        ...


# ---- invoices, usage statements and reconciliation (issue 11 items 5–6) -----------------------


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """One line of a mirrored Stripe invoice: `amount_cents` in the invoice's currency (minor
    units), `credited` the ledger units this line credits (0: none; a subscription line its
    period's included amount, a package line its package), `kind` subscription, package or
    other."""

    description: str
    amount_cents: int
    quantity: int
    kind: str = "other"
    credited: int = 0
    period_start_ms: int | None = None
    period_end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MirroredInvoice:
    """The gateway's copy of one Stripe invoice (https://docs.stripe.com/api/invoices/object).

    `status` is seed 002's union (draft, open, paid, past_due, void; Stripe's `uncollectible`
    is `past_due`), `stripe_status` Stripe's own. Amounts are minor units (cents) of
    `currency` (upper-case ISO 4217). `version` orders two states of the same invoice
    (storage.engine.invoices.version_of): a state replaces the stored one only when its version
    is greater, so events delivered twice or out of order converge on Stripe's latest state.
    Times are UTC epoch ms."""

    invoice_id: str
    account_id: str
    number: str | None
    status: str
    stripe_status: str
    currency: str
    subtotal_cents: int
    tax_cents: int
    discount_cents: int
    total_cents: int
    credits_applied_cents: int
    amount_due_cents: int
    amount_paid_cents: int
    created_at_ms: int
    version: tuple[int, int, int, int]
    lines: tuple[InvoiceLine, ...] = ()
    period_start_ms: int | None = None
    period_end_ms: int | None = None
    description: str | None = None
    due_date_ms: int | None = None
    finalized_at_ms: int | None = None
    paid_at_ms: int | None = None
    hosted_invoice_url: str | None = None
    invoice_pdf: str | None = None
    subscription_id: str | None = None
    billing_reason: str | None = None


# The usage record columns a usage statement groups by, in order: the one place to extend
# (e.g. with a provider column) — both adapters group by exactly these.
STATEMENT_GROUPS: tuple[str, ...] = ("operation", "model")


@dataclass(frozen=True, slots=True)
class UsageLine:
    """One group of an account's usage in a period (the usage statement's rows): `group` the
    values of STATEMENT_GROUPS' columns (None: unknown, e.g. no model), calls, tokens, and
    ledger units charged and left unbilled."""

    group: tuple[str | None, ...]
    calls: int
    input_tokens: int
    output_tokens: int
    charged: int
    unbilled: int


@dataclass(frozen=True, slots=True)
class StripeCredit:
    """What the ledger knows of one Stripe payment: the credit keyed by its Stripe object
    (`key`: `stripe_checkout:<session>`, `stripe_invoice:<invoice>` or `stripe_pi:<payment
    intent>`; None while a recorded purchase is not credited), `kind` checkout, invoice or
    topup, `amount` ledger units credited, `cents`/`currency` the price recorded with the
    purchase (None when the ledger did not record one), `refunded_cents` the refunds applied.
    Times UTC epoch ms."""

    account_id: str
    kind: str
    object_id: str
    key: str | None
    amount: int
    created_at_ms: int
    payment_intent_id: str | None = None
    cents: int | None = None
    currency: str | None = None
    refunded_cents: int = 0


class BillingRecords(Protocol):
    """Mirrored Stripe invoices, usage statements' figures, and reconciliation: what the ledger
    credited for Stripe objects, and the stored reports. Raises StoreUnavailable."""

    async def mirror_invoice(self, invoice: MirroredInvoice) -> str:
        """Store Stripe's state of an invoice unless a newer one is stored: `created`,
        `updated`, or `stale` (an older or identical state; nothing changed)."""
        ...

    async def mirror_invoice_event(self, invoice: MirroredInvoice, event_id: str,
                                   event_type: str, failure: str | None,
                                   at_ms: int) -> str:
        """In one transaction: mirror the invoice (as `mirror_invoice`), record the Stripe
        event `event_id` (outcome `mirrored`) and, when `failure` (the provider's reason) is
        given, emit `payment.failed` (kind `invoice`, reference the invoice id) on the
        account's log and the outgoing-webhook outbox — only when the stored invoice is that
        account's (an id already mirrored for another account emits nothing). Returns the
        mirror's outcome, or `duplicate` (nothing written) when the event was already
        recorded. Raises UnknownAccount."""
        ...

    async def invoice(self, account_id: str, invoice_id: str) -> MirroredInvoice | None:
        """The account's invoice `invoice_id`; None when it does not exist or is another
        account's."""
        ...

    async def invoices(self, account_id: str, status: str | None, limit: int,
                       before: tuple[int, str] | None) -> list[MirroredInvoice]:
        """The account's invoices newest first (created_at_ms, then id, descending), of one
        seed status when `status` is given, strictly after the keyset `before` =
        (created_at_ms, invoice_id) of the previous page's last item."""
        ...

    async def usage_breakdown(self, account_id: str, from_ms: int,
                              to_ms_: int) -> list[UsageLine]:
        """The account's settled and interrupted usage in [from, to) by operation and model,
        ordered by operation then model (in-flight calls excluded)."""
        ...

    async def stripe_credits(self, from_ms: int, to_ms_: int,
                             object_ids: list[str]) -> list[StripeCredit]:
        """Every Stripe-keyed credit made in [from, to), and the credits and recorded purchases
        of the Stripe objects `object_ids` (Checkout Session, invoice or payment intent ids)
        whenever they were made."""
        ...

    async def save_report(self, report_id: str, from_ms: int, to_ms_: int, created_at_ms: int,
                          applied: bool, document: dict[str, Any]) -> None:
        """Store a reconciliation report (its JSON document) under a new `report_id`."""
        ...

    async def report(self, report_id: str) -> dict[str, Any] | None:
        """A stored report: id, from_ms, to_ms, created_at_ms, applied, document; or None."""
        ...

    async def reports(self, limit: int, before: str | None) -> list[dict[str, Any]]:
        """Stored reports newest first (by id, which grows with time), after `before`."""
        ...
