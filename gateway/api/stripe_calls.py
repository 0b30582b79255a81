"""How the billing API calls Stripe (issue 11): the client or a 503, Stripe's errors translated
at this one edge, idempotency keys, and the account's Stripe customer — created on first need
and linked to the account once.

Errors (STYLE: foreign errors translated at the edge by one context manager):
- no STRIPE_SECRET_KEY → `503 payments-not-configured`;
- Stripe says the object does not exist (404) → `404 not-found`;
- Stripe refuses the request as invalid (other 4xx `invalid_request_error`, e.g. a card attached
  to another customer) → `400 bad-request` with Stripe's user message;
- anything else Stripe or the network does → `502 payment-provider-error`.

Idempotency keys (https://docs.stripe.com/api/idempotent_requests): creating the customer uses
`gw_customer:<account id>`, so even two replicas racing past the store's link create one
customer; every other call either derives its key from what it changes (`gw_pm_attach:…`) or
uses one fresh key per request (`gw_<purpose>:<account>:<random>`), which stripe-python reuses on
its own network retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Iterator
from typing import Any

import stripe

from gateway.problems import BadRequest, NotFound, PaymentProviderError, PaymentsNotConfigured
from gateway.services import Services


def client_of(s: Services) -> Any:
    """The StripeClient. Raises PaymentsNotConfigured without STRIPE_SECRET_KEY."""
    if s.stripe is None:
        raise PaymentsNotConfigured("Set STRIPE_SECRET_KEY to use payments.")
    return s.stripe


@contextlib.contextmanager
def stripe_errors(what: str) -> Iterator[None]:
    """Translate Stripe's errors raised inside into problems (module doc); `what` names the
    attempted action in the detail."""
    try:
        yield
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404:
            raise NotFound(f"Stripe has no such object ({what}).") from None
        reason = exc.user_message or exc.code or "invalid request"
        raise BadRequest(f"Stripe refused to {what}: {reason}") from None
    except stripe.StripeError as exc:
        raise PaymentProviderError(f"Stripe failed to {what}: "
                                   f"{exc.user_message or type(exc).__name__}") from None


def request_key(purpose: str, account_id: str) -> str:
    """A fresh idempotency key for one API request: `gw_<purpose>:<account>:<16 hex>`."""
    return f"gw_{purpose}:{account_id}:{secrets.token_hex(8)}"


def customer_key(account_id: str) -> str:
    """The idempotency key of the one customer create per account."""
    return f"gw_customer:{account_id}"


def as_dict(obj: Any) -> dict[str, Any]:
    """A Stripe object (or a dict) as a plain dict of its documented fields."""
    if hasattr(obj, "to_dict"):
        out: dict[str, Any] = obj.to_dict()
        return out
    return dict(obj or {})


class StripeCustomers:
    """The account → Stripe customer link. `ensure(account_id)` returns the linked customer,
    creating and linking one on first need: concurrent first calls in this process wait for one
    create (single flight per account); across processes the customer's idempotency key makes
    Stripe answer every create with the same customer, and the store keeps the first link
    (Payments.link_customer)."""

    def __init__(self, services: Services) -> None:
        self._s = services
        self._flights: dict[str, tuple[asyncio.Lock, int]] = {}

    async def linked(self, account_id: str) -> str | None:
        """The linked customer, or None (nothing is created). Raises UnknownAccount."""
        return (await self._s.payments.billing_profile(account_id)).customer_id

    async def ensure(self, account_id: str) -> str:
        """The account's customer id, created and linked when there is none yet. Raises
        UnknownAccount (404), PaymentsNotConfigured, PaymentProviderError, StoreUnavailable."""
        customer = await self.linked(account_id)
        if customer is not None:
            return customer
        client = client_of(self._s)
        lock, waiting = self._flights.get(account_id, (asyncio.Lock(), 0))
        self._flights[account_id] = (lock, waiting + 1)
        try:
            async with lock:
                customer = await self.linked(account_id)
                if customer is not None:
                    return customer
                with stripe_errors("create the customer"):
                    created = await client.v1.customers.create_async(
                        params={"description": f"gateway account {account_id}",
                                "metadata": {"account_id": account_id}},
                        options={"idempotency_key": customer_key(account_id)})
                return await self._s.payments.link_customer(account_id, str(created.id))
        finally:
            lock, waiting = self._flights[account_id]
            if waiting == 1:
                del self._flights[account_id]
            else:
                self._flights[account_id] = (lock, waiting - 1)
