"""Refund clawback (SPEC §8): a refund takes back the refunded share of a purchase's credit,
only from that purchase's own bucket and never below zero.

Rules, in sentences:
- The share owed back is minutes × refunded / paid (cumulative across refunds: what earlier
  refunds already took is subtracted), rounded down to whole ledger units.
- It is taken from the purchase's bucket while that bucket is live, at most what it still
  holds; spent time is forgiven, never turned into debt.

Amounts: ledger units (ms); prices: minor units (cents).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Clawback:
    """A refund decided: take `taken` units from the bucket; `share` is the purchase's new
    cumulative clawed-back total; `unrecovered` of what was owed is forgiven."""

    share: int
    owed: int
    taken: int

    @property
    def unrecovered(self) -> int:
        return self.owed - self.taken


def clawback(units: int, amount_cents: int, refunded_cents: int, clawed_back: int,
             bucket_remaining: int, bucket_live: bool) -> Clawback | None:
    """The clawback of a refund of `refunded_cents` (cumulative) of `amount_cents` paid for
    `units` of credit, after `clawed_back` units were taken by earlier refunds, from a bucket
    holding `bucket_remaining` (`bucket_live`: not expired). None when nothing is owed."""
    if amount_cents <= 0:
        return None
    share = units * min(refunded_cents, amount_cents) // amount_cents
    owed = share - clawed_back
    if owed <= 0:
        return None
    return Clawback(share, owed, min(owed, bucket_remaining) if bucket_live else 0)


def refund_status(refunded_cents: int, amount_cents: int) -> str:
    """A purchase's status after a refund: `refunded` when all was refunded, else
    `part_refunded`."""
    return "refunded" if refunded_cents >= amount_cents else "part_refunded"
