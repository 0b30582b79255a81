"""The storage port: the results the gateway gets back from any ledger adapter.

Amounts are ledger units (ms of AI time); times are UTC epoch milliseconds unless typed datetime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

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
