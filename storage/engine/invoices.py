"""The order of a Stripe invoice's states, so that a mirror converges whatever order Stripe's
events arrive in (https://docs.stripe.com/webhooks#event-ordering: not guaranteed).

An invoice moves draft → open → (paid | void | uncollectible), and uncollectible → (paid |
void); paid and void are final (https://docs.stripe.com/invoicing/overview#invoice-statuses).
A state's version is (status rank, the time Stripe stamped its latest status transition, the
payment attempts made, the event's `created`): a state replaces the stored one only when its
version is greater, so an older event delivered late — or the same one twice — changes nothing.
Times are UTC epoch ms.
"""

from __future__ import annotations

from collections.abc import Mapping

Version = tuple[int, int, int, int]

# Stripe status → rank in its lifecycle
_RANK = {"draft": 0, "open": 1, "uncollectible": 2, "paid": 3, "void": 3}

# Stripe status → seed 002's InvoiceResponse.status union
SEED_STATUS = {"draft": "draft", "open": "open", "paid": "paid", "void": "void",
               "uncollectible": "past_due"}
SEED_STATUSES = ("draft", "open", "paid", "past_due", "void")


def seed_status(stripe_status: str) -> str:
    """Seed 002's status of a Stripe invoice status (`uncollectible` → `past_due`). Raises
    ValueError for a status Stripe does not define."""
    try:
        return SEED_STATUS[stripe_status]
    except KeyError:
        raise ValueError(f"unknown Stripe invoice status {stripe_status!r}") from None


def version_of(stripe_status: str, transitions_ms: Mapping[str, int | None],
               attempt_count: int, event_ms: int) -> Version:
    """The version of one state: `transitions_ms` are Stripe's `status_transitions`
    (finalized_at, paid_at, voided_at, marked_uncollectible_at) in ms, `attempt_count` its
    payment attempts, `event_ms` the delivering event's `created` (0 when read from the API).
    Raises ValueError for an unknown status."""
    seed_status(stripe_status)
    latest = max((t for t in transitions_ms.values() if t), default=0)
    return (_RANK[stripe_status], latest, attempt_count, event_ms)


def supersedes(new: Version, stored: Version | None) -> bool:
    """True when a state of version `new` must replace the stored one (none stored, or `new`
    is strictly greater: identical states are a duplicate)."""
    return stored is None or tuple(new) > tuple(stored)
