"""A standard payment challenge beside the 402 problem (issue 11 item 9), opt-in with
`GATEWAY_PAYMENT_CHALLENGE=true`: `WWW-Authenticate: Payment …` per the IETF draft "The
Payment HTTP Authentication Scheme" (draft-ryan-httpauth-payment-01, also published as
draft-httpauth-payment; https://paymentauth.org/).

The challenge's auth-params (draft §5.1):
- `id`: binds the challenge to its parameters — base64url (no padding) of
  HMAC-SHA256(secret, realm | method | intent | request | expires | digest | opaque), the
  parameters joined by `|` with absent ones empty (draft §5.1.3, stateless binding), so a
  server holding GATEWAY_PAYMENT_CHALLENGE_SECRET can later check that a credential answers a
  challenge it issued, unchanged;
- `realm`: the gateway's public origin; `method`: `stripe` (this gateway sells through Stripe
  Checkout); `intent`: `charge` (a one-time payment);
- `request`: base64url (no padding) of canonical JSON (RFC 8785 style: sorted keys, no
  whitespace) naming what can be bought to resume: `amount` (minor units, as a string, per
  the draft's charge intent), `currency` (lower-case ISO 4217), `description`, and the
  gateway's extensions `operation_id` (the 402's `instance` is `urn:op:<operation_id>`),
  `package_key` and `purchase_endpoint` (where to buy it: POST with the package key and the
  operation id; the credit then announces `resume.ready` on the stream);
- `expires`: RFC 3339, the resume token's expiry.
The gateway's own API keys stay bearer credentials: it never asks for, nor accepts,
`Authorization: Payment`. The problem body is unchanged, so clients that ignore the header lose
nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from policies.schema import CatalogSpec
from policies.units import TIME, UnitKind, UnitOfAccount
from storage.clock import MS_PER_MINUTE, iso_utc

METHOD = "stripe"
INTENT = "charge"
PURCHASE_PATH = "/v1/billing/packages/purchase"


def b64url(raw: bytes) -> str:
    """base64url without padding (RFC 4648 §5), as the draft writes binary parameters."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def canonical_json(doc: dict[str, Any]) -> bytes:
    """Canonical JSON of a document of strings and integers (RFC 8785's output for them):
    keys sorted, no insignificant whitespace, UTF-8."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def challenge_id(secret: bytes, realm: str, method: str, intent: str, request: str,
                 expires: str = "", digest: str = "", opaque: str = "") -> str:
    """The `id` binding a challenge to its parameters (draft §5.1.3)."""
    message = "|".join((realm, method, intent, request, expires, digest, opaque)).encode()
    return b64url(hmac.new(secret, message, hashlib.sha256).digest())


def purchase_request(deficit_units: int, catalog: CatalogSpec, operation_id: str,
                     origin: str, unit: UnitOfAccount = TIME) -> dict[str, Any] | None:
    """What can be bought to resume: the smallest package whose grant (in ledger units of
    `unit`) covers the deficit (else the largest; the 402's first suggestion), priced in USD
    (every package has a USD price). None when the catalog sells no package."""
    packages = sorted(catalog.packages, key=lambda p: p.ledger_units(unit))
    if not packages:
        return None
    pick = next((p for p in packages if p.ledger_units(unit) >= deficit_units), packages[-1])
    return {"amount": str(pick.prices["USD"]), "currency": "usd",
            "description": f"{pick.name} ({_amount(pick.ledger_units(unit), unit)})",
            "operation_id": operation_id,
            "package_key": pick.key, "purchase_endpoint": origin + PURCHASE_PATH}


def _amount(units: int, unit: UnitOfAccount) -> str:
    """`60 min` of AI time; `10 USD` or `1000000 tokens` in other units."""
    if unit.kind is UnitKind.TIME:
        return f"{units // MS_PER_MINUTE} min"
    return f"{unit.to_text(units)} {unit.api_name}"


def payment_challenge(secret: bytes, origin: str, request: dict[str, Any],
                      expires_at_ms: int) -> str:
    """The `WWW-Authenticate` value: `Payment id="…", realm="…", method="stripe",
    intent="charge", request="…", expires="…"` (every value a quoted string of URL-safe
    characters, so no escaping is needed)."""
    encoded = b64url(canonical_json(request))
    expires = iso_utc(expires_at_ms)
    cid = challenge_id(secret, origin, METHOD, INTENT, encoded, expires)
    params = {"id": cid, "realm": origin, "method": METHOD, "intent": INTENT,
              "request": encoded, "expires": expires}
    return "Payment " + ", ".join(f'{k}="{v}"' for k, v in params.items())


def origin_of(base_url: str) -> str:
    """The gateway's public origin from its problem-type base (`…/problems/`)."""
    return base_url.removesuffix("/problems/").rstrip("/")
