"""Problem details (RFC 9457): the one exception tree of the gateway and how it is rendered.

    GatewayError                      status  type slug
    │                                 500     internal-error         (any unexpected error)
    ├── BadRequest                    400     bad-request
    │   ├── MalformedJson             400     malformed-json
    │   ├── MalformedResumeToken      400     malformed-resume-token
    │   ├── UnpricedModel             400     unpriced-model
    │   └── BadWebhookSignature       400     bad-webhook-signature
    ├── Unauthorized                  401     unauthorized
    ├── CsrfTokenInvalid              403     csrf-token-invalid
    ├── NotFound                      404     not-found
    ├── MethodNotAllowed              405     method-not-allowed
    ├── InvoiceNotPayable             409     invoice-not-payable
    ├── PayloadTooLarge               413     payload-too-large
    ├── ResumeTokenMismatch           422     resume-token-mismatch
    ├── IdempotencyKeyReused          422     idempotency-key-reused
    ├── InsufficientBalance           402     insufficient-ai-time   (built by insufficient_ai_time)
    │   ├── InsufficientCredits       402     insufficient-credits   (currency units)
    │   └── InsufficientTokens        402     insufficient-tokens    (tokens units)
    ├── RateLimited                   429     rate-limited
    ├── UpstreamUnavailable           502     upstream-unavailable
    ├── PaymentProviderError          502     payment-provider-error
    ├── UpstreamTimeout               504     upstream-timeout
    ├── StoreUnavailableProblem       503     store-unavailable
    ├── PaymentsNotConfigured         503     payments-not-configured
    └── BillingDisabled               503     billing-disabled

Every error the gateway itself returns is one of these, as `application/problem+json` with
`Cache-Control: no-store`; an unexpected exception is the base class's `500 internal-error` with
the request id (never plain text, never a traceback). Errors the upstream returns are relayed as
the upstream sent them. A problem's `type` is `<GATEWAY_PUBLIC_URL or http://HOST:PORT of the
listen address>/problems/<slug>` — never built from the request (see `base_url_for`) — and
dereferences to the type's documentation (`GET /problems/<slug>`).
"""

from __future__ import annotations

from typing import Any

import orjson

PROBLEM_CONTENT_TYPE = b"application/problem+json"


class GatewayError(Exception):
    """Base of every gateway-made error: an HTTP status, a stable type slug, a title. Raised
    itself, it is the 500 answered for an unexpected error (the detail names the request id
    the error was logged with; nothing of the error itself is shown)."""

    status = 500
    slug = "internal-error"
    title = "Internal error"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra
        self.headers: dict[str, str] = {}

    def body(self, base_url: str, instance: str | None = None) -> dict[str, Any]:
        """The problem document (dict). `base_url` prefixes the type, e.g. https://gw/problems/."""
        doc: dict[str, Any] = {
            "type": base_url + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            doc["instance"] = instance
        doc.update(self.extra)
        return doc


class BadRequest(GatewayError):
    """The request is malformed; `detail` names the field."""

    status, slug, title = 400, "bad-request", "Bad request"


class MalformedJson(BadRequest):
    """The body of a JSON route is not a JSON object."""

    slug, title = "malformed-json", "Malformed JSON body"


class MalformedResumeToken(BadRequest):
    """X-Resume-Token is not of the form rt_ + 22 base64url characters."""

    slug, title = "malformed-resume-token", "Malformed resume token"


class UnpricedModel(BadRequest):
    """The route prices tokens per model and has no price for this model: it is not served (never
    free)."""

    slug, title = "unpriced-model", "Model not priced on this route"


class Unauthorized(GatewayError):
    """No, an unknown or a revoked credential (API key, HMAC signature or admin token)."""

    status, slug, title = 401, "unauthorized", "Unauthorized"


class CsrfTokenInvalid(GatewayError):
    """A write made with a dashboard session cookie without that session's CSRF token in
    `X-CSRF-Token` (or the form's `csrf_token`): refused, nothing applied (issue 12)."""

    status, slug, title = 403, "csrf-token-invalid", "CSRF token missing or invalid"


class NotFound(GatewayError):
    """No such route, or no such resource for this credential."""

    status, slug, title = 404, "not-found", "Not found"


class MethodNotAllowed(GatewayError):
    """The path exists with another method."""

    status, slug, title = 405, "method-not-allowed", "Method not allowed"


class InvoiceNotPayable(GatewayError):
    """The invoice is not open (draft, paid, void or past due): only an open invoice can be
    paid through the gateway."""

    status, slug, title = 409, "invoice-not-payable", "Invoice cannot be paid"


class PayloadTooLarge(GatewayError):
    """The body is larger than the limit: the route's max_body_bytes on a proxied route,
    GATEWAY_MAX_BODY_BYTES (1 MiB by default) on the billing, admin and webhook API. Refused
    while reading, so an oversized body is never held in memory; the connection is closed."""

    status, slug, title = 413, "payload-too-large", "Request body too large"

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail, **extra)
        # The rest of the body is not read: the server closes the connection after the answer
        # instead of draining the body to find the next request.
        self.headers["connection"] = "close"


class ResumeTokenMismatch(GatewayError):
    """The resume token belongs to another request of the same account; retry that request
    unchanged."""

    status, slug, title = 422, "resume-token-mismatch", "Resume token bound to another request"


class IdempotencyKeyReused(GatewayError):
    """This idempotency key was already used for a request with a different effect (amount,
    source, reason or kind); nothing was applied. Resend the original request unchanged to get
    its result, or use a new key (draft-ietf-httpapi-idempotency-key-header)."""

    status, slug = 422, "idempotency-key-reused"
    title = "Idempotency key reused with another request"


class InsufficientBalance(GatewayError):
    """The balance cannot cover the call's estimate; buy or wait, then retry with X-Resume-Token."""

    status, slug, title = 402, "insufficient-ai-time", "Insufficient AI time"


class InsufficientCredits(InsufficientBalance):
    """A currency deployment's balance cannot cover the call's estimate (`balance`, `required`
    in `unit`); buy credits or wait, then retry with X-Resume-Token."""

    slug, title = "insufficient-credits", "Insufficient credits"


class InsufficientTokens(InsufficientBalance):
    """A tokens deployment's balance cannot cover the call's estimate (`balance`, `required`
    in tokens); buy tokens or wait, then retry with X-Resume-Token."""

    slug, title = "insufficient-tokens", "Insufficient tokens"


class UpstreamUnavailable(GatewayError):
    """The upstream could not be reached or broke the connection; not charged unless the route says
    so."""

    status, slug, title = 502, "upstream-unavailable", "Upstream unavailable"


class UpstreamTimeout(GatewayError):
    """The upstream did not answer within the route's timeouts; not charged unless the route says
    so."""

    status, slug, title = 504, "upstream-timeout", "Upstream timed out"


class StoreUnavailableProblem(GatewayError):
    """The billing store is unreachable; the call was not sent upstream (fail mode deny)."""

    status, slug, title = 503, "store-unavailable", "Billing store unavailable"


class BadWebhookSignature(BadRequest):
    """The Stripe-Signature header does not match the raw body."""

    slug, title = "bad-webhook-signature", "Webhook signature invalid"


class RateLimited(GatewayError):
    """A per-key or per-account limit is used up; Retry-After says when to retry."""

    status, slug, title = 429, "rate-limited", "Rate limit exceeded"


class PaymentProviderError(GatewayError):
    """Stripe refused or failed the request."""

    status, slug, title = 502, "payment-provider-error", "Payment provider error"


class PaymentsNotConfigured(GatewayError):
    """Stripe keys are not configured on this gateway."""

    status, slug, title = 503, "payments-not-configured", "Payments are not configured"


class BillingDisabled(GatewayError):
    """The operator turned the billing API off (GATEWAY_BILLING_ENABLED=false): every
    `/v1/billing/*` endpoint but the Stripe webhook answers this, while metered calls keep
    working and keep being charged."""

    status, slug, title = 503, "billing-disabled", "Billing is disabled"


def problem_types() -> dict[str, type[GatewayError]]:
    """Every problem type by slug (for the `/problems/{slug}` documentation endpoint)."""
    out: dict[str, type[GatewayError]] = {}
    todo: list[type[GatewayError]] = [GatewayError]
    while todo:
        cls = todo.pop()
        out[cls.slug] = cls
        todo.extend(cls.__subclasses__())
    return out


def validation_problem(exc: Any) -> BadRequest:
    """A 400 naming the first invalid field of a pydantic ValidationError."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return BadRequest(f"{where}: {first['msg']}")


def render(
    error: GatewayError, base_url: str, instance: str | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """(status, raw ASGI headers, body bytes) of a problem response."""
    body = orjson.dumps(error.body(base_url, instance))
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE),
        (b"cache-control", b"no-store"),
        (b"content-length", str(len(body)).encode()),
    ]
    headers.extend((k.lower().encode(), v.encode()) for k, v in error.headers.items())
    if extra_headers:
        headers.extend(extra_headers)
    return error.status, headers, body


async def send_problem(
    send: Any, error: GatewayError, base_url: str, instance: str | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send `error` as a complete ASGI response."""
    status, headers, body = render(error, base_url, instance, extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def base_url_for(settings: Any) -> str:
    """The absolute problem `type` prefix (RFC 9457 §3.1.1), e.g. `https://gw.example/problems/`:
    `settings.public_url` (GATEWAY_PUBLIC_URL) when set, else the configured listen address
    `http://HOST:PORT`. Never the request's Host header: a client must not choose the URL that
    other clients (and their logs) are told to dereference."""
    if settings.public_url:
        return str(settings.public_url).rstrip("/") + "/problems/"
    host = str(settings.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    return f"http://{host}:{settings.port}/problems/"
