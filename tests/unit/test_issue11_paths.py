"""Issue 11's "Paths" list and "Done when", held against the OpenAPI document the gateway
serves (`GET /openapi.json` is `openapi_document()`): every path of the list is documented with
its method, and the operations seed 002's frontend calls answer its field names (the
interfaces' fields are copied below from ../shared/seeds/002_*, the billing API reference).
The billing-disabled switch is walked over the same list: every `/v1/billing/*` path of it but
the Stripe webhook receiver is switched off."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.api.openapi import openapi_document
from gateway.billing_switch import switched_off

# Issue 11, "Paths", verbatim but for `…` spelt out.
ISSUE_PATHS: tuple[tuple[str, str], ...] = (
    ("GET", "/v1/billing/config"), ("GET", "/v1/meta/features"), ("GET", "/v1/meta/info"),
    ("GET", "/v1/billing/payment-methods/{userId}"),
    ("POST", "/v1/billing/payment-methods/{userId}"),
    ("POST", "/v1/billing/payment-methods/{userId}/setup-intent"),
    ("POST", "/v1/billing/payment-methods/{userId}/{paymentMethodId}/default"),
    ("DELETE", "/v1/billing/payment-methods/{userId}/{paymentMethodId}"),
    ("POST", "/v1/billing/portal/{userId}"), ("GET", "/v1/billing/account/{userId}"),
    ("POST", "/v1/billing/credits/checkout"), ("GET", "/v1/billing/subscription/{userId}"),
    ("POST", "/v1/billing/subscription/{userId}/cancel"),
    ("POST", "/v1/billing/subscription/{userId}/reactivate"),
    ("POST", "/v1/billing/subscription/{userId}/change"),
    ("GET", "/v1/billing/invoices/{userId}"), ("GET", "/v1/billing/invoices/{userId}/{invoiceId}"),
    ("GET", "/v1/billing/invoices/{userId}/{invoiceId}/pdf"),
    ("POST", "/v1/billing/invoices/{userId}/{invoiceId}/pay"),
    ("GET", "/v1/billing/statements/{userId}/{month}.pdf"),
    ("GET", "/v1/billing/alerts/{userId}"), ("PUT", "/v1/billing/alerts/{userId}"),
    ("POST", "/v1/admin/reconcile"), ("GET", "/v1/admin/webhook-endpoints"),
    ("POST", "/v1/admin/webhook-endpoints"),
    ("GET", "/v1/admin/webhook-endpoints/{id}/deliveries"),
)

# Seed 002's interfaces (field names as its TypeScript reads them) and the operation answering
# each. SubscriptionResponse without `agents_limit`/`storage_*` (no agents or storage here).
SEED_002: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "StripeConfigResponse": ("get", "/v1/billing/config", ("publishable_key", "is_configured")),
    "BillingAccountResponse": ("get", "/v1/billing/account/{userId}", (
        "id", "organization_id", "stripe_customer_id", "has_payment_method", "status",
        "free_workflows_remaining", "free_workflows_reset_at", "credit_balance",
        "auto_billing_enabled", "billing_email", "tax_exempt", "total_workflows_completed",
        "total_amount_spent", "created_at", "updated_at")),
    "PaymentMethodResponse": ("get", "/v1/billing/payment-methods/{userId}", (
        "id", "type", "card_brand", "card_last4", "is_default", "exp_month", "exp_year")),
    "PaymentMethodResponse (attach)": ("post", "/v1/billing/payment-methods/{userId}", (
        "id", "type", "card_brand", "card_last4", "is_default")),
    "SubscriptionResponse": ("get", "/v1/billing/subscription/{userId}", (
        "id", "organization_id", "billing_account_id", "tier", "status",
        "current_period_start", "current_period_end", "cancel_at_period_end", "canceled_at",
        "trial_start", "trial_end", "workflows_limit", "workflows_used", "workflows_remaining",
        "is_lifetime", "lifetime_purchase_date", "lifetime_purchase_amount", "is_byo",
        "byo_providers_configured", "created_at", "updated_at")),
    "CheckoutResponse": ("post", "/v1/billing/credits/checkout", ("checkout_url", "session_id")),
    "PortalResponse": ("post", "/v1/billing/portal/{userId}", ("portal_url",)),
    "InvoiceResponse": ("get", "/v1/billing/invoices/{userId}/{invoiceId}", (
        "id", "invoice_number", "billing_account_id", "stripe_invoice_id", "status",
        "period_start", "period_end", "subtotal", "tax_amount", "discount_amount", "total",
        "credits_applied", "amount_due", "amount_paid", "currency", "line_items",
        "description", "due_date", "finalized_at", "paid_at", "created_at")),
}
# Request bodies the seed and the issue name.
REQUESTS: dict[tuple[str, str], tuple[str, ...]] = {
    ("post", "/v1/billing/payment-methods/{userId}"): ("payment_method_id", "set_as_default"),
    ("post", "/v1/billing/credits/checkout"): ("amount", "currency"),
    ("put", "/v1/billing/alerts/{userId}"): ("low_balance_threshold",),
    ("post", "/v1/billing/subscription/{userId}/change"): ("subscription_key",),
    ("post", "/v1/admin/reconcile"): ("from", "to"),
    ("post", "/v1/admin/webhook-endpoints"): ("url", "event_types", "description"),
}


def _resolve(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _properties(doc: dict[str, Any], schema: dict[str, Any]) -> set[str]:
    schema = _resolve(doc, schema)
    if schema.get("type") == "array":
        return _properties(doc, schema["items"])
    names = set(schema.get("properties", {}))
    for part in (*schema.get("allOf", ()), *schema.get("anyOf", ()), *schema.get("oneOf", ())):
        names |= _properties(doc, part)
    return names


def _success_fields(doc: dict[str, Any], method: str, path: str) -> set[str]:
    responses = doc["paths"][path][method]["responses"]
    ok = next(r for code, r in responses.items() if code.startswith("2"))
    return _properties(doc, next(iter(ok["content"].values()))["schema"])


@pytest.mark.parametrize(("method", "path"), ISSUE_PATHS, ids=lambda v: str(v))
def test_every_path_of_the_issue_is_documented(method: str, path: str) -> None:
    doc = openapi_document()
    assert path in doc["paths"], path
    assert method.lower() in doc["paths"][path], (method, path)


@pytest.mark.parametrize("interface", sorted(SEED_002))
def test_the_seeds_frontend_reads_its_field_names(interface: str) -> None:
    doc = openapi_document()
    method, path, fields = SEED_002[interface]
    missing = set(fields) - _success_fields(doc, method, path)
    assert not missing, (interface, sorted(missing))


@pytest.mark.parametrize(("method", "path"), sorted(REQUESTS), ids=lambda v: str(v))
def test_request_bodies_take_the_names_the_issue_gives(method: str, path: str) -> None:
    doc = openapi_document()
    body = doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    missing = set(REQUESTS[(method, path)]) - _properties(doc, body)
    assert not missing, (method, path, sorted(missing))


def test_billing_disabled_switches_off_every_billing_path_but_the_stripe_webhook() -> None:
    billing = [path for _m, path in ISSUE_PATHS if path.startswith("/v1/billing/")]
    assert billing and all(switched_off(p.replace("{", "x").replace("}", "")) for p in billing)
    documented = [p for p in openapi_document()["paths"] if p.startswith("/v1/billing/")]
    assert [p for p in documented if not switched_off(p)] == ["/v1/billing/webhooks/stripe"]
    assert not any(switched_off(p) for _m, p in ISSUE_PATHS if not p.startswith("/v1/billing"))
