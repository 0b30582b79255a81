"""The storage port: the store as a few small Protocols, and the data that crosses them.

The gateway depends on these and nothing else of storage's adapters:
- `Ledger`: admission, holds and settlement, grants, balances, usage;
- `Accounts`: accounts and API keys;
- `Payments`: purchases, Stripe events, subscriptions and period ends (expiry, rollover),
  auto top-up;
- `EventLog`: the per-account event log behind the live stream;
- `ResumeTokenStore`, `NonceStore`, `Counters`: short-lived shared state;
- `EventBus`: the live fan-out of committed events;
- `Inspection`: raw reads for audits and tests (never on a request path).
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

from storage.engine.buckets import EventType, Source
from storage.engine.budgets import Limits
from storage.engine.burn_down import ShortfallRule

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
                           at_ms: int | None = None) -> str:
        """Apply payment_intent.succeeded of an auto top-up once: credit the package."""
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
