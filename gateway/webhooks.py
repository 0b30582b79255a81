"""Outgoing webhooks (issue 11 item 8): endpoint secrets and URLs, Standard Webhooks signing,
and the delivery worker every gateway process runs in its lifespan.

The store writes one delivery row per (event, subscribed endpoint) in the event's own
transaction (storage.sql.outbox), so a crash or restart loses nothing. The worker claims due
rows with a lease (several processes never send one row at the same time; a lease that lapses
with a killed process is claimed again, so every event is delivered at least once), POSTs the
payload signed per Standard Webhooks with the `standardwebhooks` library — headers
`webhook-id` (the message id, the same on every retry: receivers deduplicate by it),
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` — and records each attempt.
A 2xx delivers; anything else (status, timeout, connection error) is retried with exponential
backoff (storage.engine.webhooks.RetrySchedule) for at least 24 h. Redirects are not followed.
Secrets and payloads are never logged: logs carry delivery and endpoint ids and statuses only.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from gateway.services import Services
from storage.engine.webhooks import RetrySchedule
from storage.ports import DeliveryClaim, StoreUnavailable, Webhooks

log = logging.getLogger("gateway.webhooks")

MAX_URL_LENGTH = 2048
BATCH = 20
USER_AGENT = "ai-metering-gateway-webhooks/1"


def new_secret() -> str:
    """A Standard Webhooks signing secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def url_problem(url: str) -> str | None:
    """Why `url` cannot be a webhook endpoint (None when it can): http or https only, a host,
    no user name or password in it (credentials belong in the signature, not the URL), no
    fragment, at most MAX_URL_LENGTH characters, no whitespace or control characters."""
    if len(url) > MAX_URL_LENGTH:
        return f"longer than {MAX_URL_LENGTH} characters"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "contains whitespace or control characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"not a valid URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    if parts.username is not None or parts.password is not None:
        return "must not contain a user name or password"
    if parts.fragment:
        return "must not contain a fragment"
    if port == 0:
        return "has port 0"
    return None


def signed_headers(claim: DeliveryClaim, at: datetime) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt of `claim`, signed at `at` (UTC)."""
    signature = Webhook(claim.secret).sign(claim.message_id, at, claim.payload_json)
    return {"content-type": "application/json", "user-agent": USER_AGENT,
            "webhook-id": claim.message_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature}


class DeliveryWorker:
    """Claims due deliveries from `store` and sends them with `client`; `schedule` decides
    retries, `lease_ms` how long a claim is this worker's (longer than one attempt)."""

    def __init__(self, store: Webhooks, client: httpx.AsyncClient, schedule: RetrySchedule,
                 lease_ms: int) -> None:
        self.store = store
        self.client = client
        self.schedule = schedule
        self.lease_ms = lease_ms

    async def run_once(self) -> int:
        """Claim one batch of due deliveries, attempt each (concurrently), record the
        attempts; returns how many were attempted. Raises StoreUnavailable."""
        claims = await self.store.claim_deliveries(self.lease_ms, BATCH)
        await asyncio.gather(*(self._attempt(c) for c in claims))
        return len(claims)

    async def _attempt(self, claim: DeliveryClaim) -> None:
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            reply = await self.client.post(claim.url, content=claim.payload_json.encode(),
                                           headers=signed_headers(claim, datetime.now(UTC)))
            status = reply.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = type(exc).__name__  # never the URL or payload
        duration = int((time.monotonic() - started) * 1000)
        outcome = await self.store.record_attempt(claim, status, error, duration, self.schedule)
        log.info("webhook attempt", extra={"delivery_id": claim.delivery_id,
                                           "endpoint_id": claim.endpoint_id,
                                           "status_code": status, "outcome": outcome})


def schedule_of(s: Services) -> RetrySchedule:
    """The retry schedule the settings configure."""
    st = s.settings
    return RetrySchedule(base_ms=st.webhook_backoff_base_ms, cap_ms=st.webhook_backoff_cap_ms,
                         window_ms=st.webhook_retry_window_s * 1000)


async def deliver_webhooks(s: Services) -> None:
    """The delivery worker of this process (a lifespan task): every GATEWAY_WEBHOOK_POLL_MS, or
    at once while batches come back full, send the due deliveries. Survives any one failure."""
    if s.webhooks is None:
        return
    timeout = s.settings.webhook_timeout_s
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        worker = DeliveryWorker(s.webhooks, client, schedule_of(s),
                                lease_ms=(2 * timeout + 5) * 1000)
        while True:
            sent = 0
            try:
                sent = await worker.run_once()
            except StoreUnavailable:
                s.metrics.store_errors.labels("webhooks").inc()
                log.warning("webhook delivery: store unavailable")
            except Exception:  # this loop must outlive any one failure
                s.metrics.store_errors.labels("webhooks").inc()
                log.exception("webhook delivery failed; retrying next tick")
            if sent < BATCH:
                await asyncio.sleep(s.settings.webhook_poll_ms / 1000)
