"""Periodic ledger maintenance, run by every gateway process (all steps are idempotent and
lock per account, so processes running them at once only repeat no-ops):

- close expired buckets that still hold balance: `expiry` entries, subscription period ends
  rolled over or discarded, bucket.expired events (Payments.close_expired);
- prune the account event log to GATEWAY_EVENT_HISTORY_S;
- apply refunds left pending by a race with their purchase's credit;
- retry auto top-ups whose backoff has ended.
Period: GATEWAY_MAINTENANCE_S seconds.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from gateway.api.stripe_webhooks import plan_rules
from storage.clock import MS_PER_SECOND, now_ms
from storage.ports import StoreUnavailable

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway.maintenance")
BATCH = 200


async def maintain_once(s: Services) -> dict[str, int]:
    """One maintenance pass; returns counts per step. Raises StoreUnavailable."""
    at = now_ms()
    rules = plan_rules(s)
    closed = 0
    for account_id in await s.payments.expired_accounts(BATCH, at):
        closed += await s.payments.close_expired(account_id, rules, at)
    pruned = await s.event_log.prune_events(at - s.settings.event_history_s * MS_PER_SECOND)
    refunds = await s.payments.settle_orphan_refunds(at)
    topups = await s.topups.retry_due()
    return {"closed_buckets": closed, "pruned_events": pruned, "refunds": refunds,
            "topups": topups}


async def maintain(s: Services) -> None:
    """Run `maintain_once` every GATEWAY_MAINTENANCE_S seconds until cancelled."""
    while True:
        await asyncio.sleep(s.settings.maintenance_s)
        try:
            counts = await maintain_once(s)
            if any(counts.values()):
                log.info("maintenance", extra=counts)
        except StoreUnavailable:
            s.metrics.store_errors.labels("maintenance").inc()
            log.warning("maintenance skipped: store unavailable")
        except Exception:  # one failed pass must not end expiry and top-ups
            s.metrics.store_errors.labels("maintenance").inc()
            log.exception("maintenance pass failed; retrying next tick")
