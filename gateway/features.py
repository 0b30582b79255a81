"""The feature-flag registry behind `GET /v1/meta/features` (seed 004's feature flags): which
capabilities this gateway has turned on, derived from its settings and policy — never stored.

A capability is one `Feature` in `FEATURES`; adding a flag is one more entry (name, what it
means, a predicate over the running services). Names are stable API: frontends hide what is off.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.services import Services
from policies.units import UnitKind


@dataclass(frozen=True, slots=True)
class Feature:
    """One capability: `name` (the key in the features document), `description` (for the API
    reference) and `is_on(services)`, evaluated per request (policy reloads count)."""

    name: str
    description: str
    is_on: Callable[[Services], bool]


def _billing(s: Services) -> bool:
    return s.settings.billing_enabled


def _payments(s: Services) -> bool:
    return _billing(s) and s.stripe is not None


FEATURES: tuple[Feature, ...] = (
    Feature("billing", "The billing API (`/v1/billing/*`) answers (GATEWAY_BILLING_ENABLED).",
            _billing),
    Feature("payments", "Purchases through Stripe: billing on and STRIPE_SECRET_KEY set.",
            _payments),
    Feature("subscriptions", "Payments on and the catalog sells subscriptions.",
            lambda s: _payments(s) and bool(s.policy.document.catalog.subscriptions)),
    Feature("auto_topup", "Payments on and the catalog has a package auto top-up can buy.",
            lambda s: _payments(s) and bool(s.policy.document.catalog.packages)),
    Feature("credit_purchase", "Payments on and the unit of account is a currency: "
                               "`POST /v1/billing/credits/checkout` buys any amount.",
            lambda s: _payments(s) and s.policy.unit.kind is UnitKind.CURRENCY),
    Feature("stream", "The live billing stream (`/v1/billing/stream`) answers.", _billing),
    Feature("webhooks", "Outgoing webhooks: endpoints registered through the admin API receive "
                        "Standard Webhooks deliveries (gateway.webhooks).",
            lambda s: s.webhooks is not None),
    Feature("stripe_webhooks", "Stripe events are received (STRIPE_WEBHOOK_SECRET set); the "
                               "receiver answers even with billing off.",
            lambda s: s.settings.stripe_webhook_secret is not None),
)


def feature_flags(services: Services) -> dict[str, bool]:
    """{name: on?} of every registered feature, in registry order."""
    return {f.name: bool(f.is_on(services)) for f in FEATURES}
