"""Proration of a mid-period subscription upgrade (issue 11, seed 002's plan changes).

Rule, in a sentence: a plan change paid by a proration invoice (Stripe `billing_reason:
subscription_update`) credits the difference of the two subscriptions' included amounts for the
part of the period that is left — (new − old) × remaining / period, rounded down to the ledger
unit — so that an upgrade on day 10 of 30 adds two thirds of the extra allowance, never more
than the whole difference, and a downgrade (or a change to an equal allowance) credits nothing
(downgrades take effect at the period end, where nothing is prorated).

Amounts are ledger units; times UTC epoch ms.
"""

from __future__ import annotations


def proration_credit(old_included: int, new_included: int, change_ms: int,
                     period_start_ms: int, period_end_ms: int) -> int:
    """Ledger units a change at `change_ms` within [period_start_ms, period_end_ms) from a
    subscription including `old_included` to one including `new_included` credits:
    ⌊(new − old) × (period_end − change) / (period_end − period_start)⌋, the remaining time
    clamped to the period; 0 for a downgrade, an equal allowance or an empty period."""
    extra = new_included - old_included
    period = period_end_ms - period_start_ms
    if extra <= 0 or period <= 0:
        return 0
    remaining = min(max(period_end_ms - change_ms, 0), period)
    return extra * remaining // period
