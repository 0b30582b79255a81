"""Outgoing webhooks (issue 11 item 8): which account events operators' systems receive, the
message they receive, and the retry schedule — pure rules shared by every adapter and the
delivery worker (gateway.webhooks).

- Event types: the balance alerts (storage.engine.alerts), credits (`credit.applied`),
  purchases (`package.fulfilled`), refunds (`refund.applied`), payment failures
  (`payment.failed`) and subscription changes (`subscription.updated`), named as on the live
  stream. An endpoint subscribes to some of them.
- A message is the Standard Webhooks payload `{"type", "timestamp", "data"}`
  (https://www.standardwebhooks.com/, "Payload structure"); its `webhook-id` (`msg_…`) is
  decided when the event is written and never changes, so a receiver deduplicates retries.
- Retries: exponential backoff from `base_ms`, doubling, capped at `cap_ms`; a delivery is
  given up only after an attempt fails once `window_ms` (24 h by default: at least a day, as
  the issue asks) has passed since the event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.clock import MS_PER_DAY, MS_PER_HOUR, MS_PER_SECOND, iso_utc
from storage.engine.alerts import ALERT_EVENTS

CREDIT_APPLIED = "credit.applied"
PACKAGE_FULFILLED = "package.fulfilled"
REFUND_APPLIED = "refund.applied"
PAYMENT_FAILED = "payment.failed"
SUBSCRIPTION_UPDATED = "subscription.updated"
WEBHOOK_EVENT_TYPES: tuple[str, ...] = (*ALERT_EVENTS, CREDIT_APPLIED, PACKAGE_FULFILLED,
                                        REFUND_APPLIED, PAYMENT_FAILED, SUBSCRIPTION_UPDATED)

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"


def message_payload(event_type: str, account_id: str, seq: int, data: dict[str, Any],
                    at_ms: int) -> dict[str, Any]:
    """The Standard Webhooks payload of an account event: `type`, `timestamp` (RFC 3339 UTC),
    `data` = the event's data plus `account_id` and `event_id` (the stream's per-account id)."""
    return {"type": event_type, "timestamp": iso_utc(at_ms),
            "data": {"account_id": account_id, "event_id": seq, **data}}


def subscribed(event_types: list[str], event_type: str) -> bool:
    """True when an endpoint with `event_types` receives `event_type`."""
    return event_type in event_types


@dataclass(frozen=True, slots=True)
class RetrySchedule:
    """Exponential backoff (ms): attempt n (1-based) that failed waits
    min(base_ms × 2^(n−1), cap_ms); retries stop once an attempt fails `window_ms` or more after
    the event was written."""

    base_ms: int = 5 * MS_PER_SECOND
    cap_ms: int = 2 * MS_PER_HOUR
    window_ms: int = MS_PER_DAY

    def delay(self, attempts: int) -> int:
        """Wait (ms) after the `attempts`-th failed attempt (≥ 1)."""
        return min(self.cap_ms, self.base_ms << min(max(attempts - 1, 0), 40))

    def next_attempt(self, attempts: int, created_ms: int, now_ms: int) -> int | None:
        """When to try again after the `attempts`-th attempt failed at `now_ms`, or None to
        give up (the window since `created_ms` has passed)."""
        if now_ms - created_ms >= self.window_ms:
            return None
        return now_ms + self.delay(attempts)


def refund_applied(payment_intent_id: str, charge_id: str, amount_cents: int,
                   refunded_cents: int, clawed_back: bool) -> dict[str, Any]:
    """Data of `refund.applied`: a Stripe refund of a purchase was applied (its share of the
    package clawed back, or nothing left to claw back); amounts in the charge's minor units."""
    return {"payment_intent_id": payment_intent_id, "charge_id": charge_id,
            "amount_cents": amount_cents, "refunded_cents": refunded_cents,
            "clawed_back": clawed_back}


def payment_failed(kind: str, reference: str, error: str) -> dict[str, Any]:
    """Data of `payment.failed`: what failed (`auto_topup`, …), its reference (attempt or
    invoice id) and the provider's reason (at most 200 characters)."""
    return {"kind": kind, "reference": reference, "error": error[:200]}


def subscription_updated(status: str, plan_key: str, subscription_key: str | None,
                         pending: tuple[str, int] | None) -> dict[str, Any]:
    """Data of `subscription.updated`: status, plan and subscription after the change, and the
    scheduled downgrade if any."""
    return {"status": status, "plan_key": plan_key, "subscription_key": subscription_key,
            "pending_plan_key": None if pending is None else pending[0],
            "pending_effective_at": None if pending is None else iso_utc(pending[1])}
