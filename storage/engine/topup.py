"""Auto top-up rules (SPEC §8: threshold, saved payment method, one pending at a time).

Rules, in sentences:
- An attempt may be claimed when top-up is enabled with a saved payment method and customer,
  no backoff is running, no attempt is pending (or only a stale one — no answer for
  `STALE_PENDING_MS` — which is reused with its idempotency key), and available balance is
  below the threshold.
- A decline clears the attempt and backs off exponentially: 1 min, 2, 4, … capped at 24 h.
- A new attempt's id is `<account id>:<attempt number>`: the PaymentIntent's idempotency key.

Times UTC epoch ms; amounts ledger units.
"""

from __future__ import annotations

from dataclasses import dataclass

from storage.clock import MS_PER_DAY, MS_PER_MINUTE

BACKOFF_BASE_MS = MS_PER_MINUTE
BACKOFF_CAP_MS = MS_PER_DAY
STALE_PENDING_MS = 15 * MS_PER_MINUTE  # a pending attempt with no answer for this long is retried


def backoff_ms(failures: int) -> int:
    """Wait after the `failures`-th consecutive decline (≥ 1): 1 min doubling, ≤ 24 h."""
    doublings: int = 2 ** max(0, min(failures - 1, 20))
    return min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * doublings)


@dataclass(frozen=True, slots=True)
class TopUpState:
    """The stored auto top-up settings of one account, as far as claiming needs them."""

    enabled: bool
    threshold: int
    has_payment_method: bool  # a saved payment method and the Stripe customer it belongs to
    next_attempt_at_ms: int
    pending_attempt: str | None
    pending_since_ms: int | None
    attempts: int


def charge_target(customer_id: str | None, payment_method_id: str | None,
                  linked_customer_id: str | None,
                  default_payment_method_id: str | None) -> tuple[str | None, str | None]:
    """(Stripe customer, payment method) an attempt charges: the ones the auto top-up settings
    name, else the account's linked customer and its default card (issue 11: the default card
    is what auto top-up charges when the settings name none). A method named without a
    customer in the settings is charged on the linked customer."""
    return customer_id or linked_customer_id, payment_method_id or default_payment_method_id


def claimable(state: TopUpState, at_ms: int) -> bool:
    """True when an attempt may be claimed at `at_ms`, balance aside (see `claim_id`)."""
    if not state.enabled or not state.has_payment_method or state.next_attempt_at_ms > at_ms:
        return False
    return state.pending_attempt is None or is_stale(state, at_ms)


def is_stale(state: TopUpState, at_ms: int) -> bool:
    """True when a pending attempt got no answer for STALE_PENDING_MS (it is retried)."""
    return (state.pending_attempt is not None and state.pending_since_ms is not None
            and state.pending_since_ms <= at_ms - STALE_PENDING_MS)


def claim_id(account_id: str, state: TopUpState, at_ms: int) -> str:
    """The id of the attempt claimed at `at_ms`: the stale pending one, else the next."""
    if is_stale(state, at_ms):
        assert state.pending_attempt is not None
        return state.pending_attempt
    return f"{account_id}:{state.attempts + 1}"


def due(state: TopUpState, payment_method: bool, at_ms: int) -> bool:
    """True when maintenance should try to claim: enabled with a saved `payment_method`, no
    backoff running, and nothing pending but a stale attempt (`claimable` and the balance
    decide the claim itself)."""
    if not state.enabled or not payment_method or state.next_attempt_at_ms > at_ms:
        return False
    return state.pending_attempt is None or is_stale(state, at_ms)
