"""What a frontend asks before it draws anything (seeds 002, 004): the Stripe configuration
(`GET /v1/billing/config`: the publishable key Stripe.js needs), the capabilities turned on
(`GET /v1/meta/features`, gateway/features.py) and what this gateway is
(`GET /v1/meta/info`: version, catalog version, unit of account). All public: nothing here is
secret (a publishable key is meant for browsers).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

import gateway
from gateway.api.edge import json_response, services_for
from gateway.api.operations import PUBLIC, Operation, Reply, web_routes
from gateway.api.shapes import Shape
from gateway.features import FEATURES, feature_flags
from gateway.problems import BadRequest

_SHORT_CACHE = {"cache-control": "public, max-age=60"}
_CACHE_DOC = {"Cache-Control": {"required": True, "description": "Cacheable for 60 s.",
                                "schema": {"type": "string", "const": "public, max-age=60"}}}


class StripeConfig(Shape):
    """Seed 002's StripeConfigResponse."""

    publishable_key: str | None = Field(description="STRIPE_PUBLISHABLE_KEY (`pk_…`), or null.")
    is_configured: bool = Field(description="Stripe is usable from a frontend: both the secret "
                                            "and the publishable key are set.")


class Features(Shape):
    """Which capabilities are on (seed 004's feature flags)."""

    features: dict[str, bool] = Field(description="Flag name → on. Names: " + "; ".join(
        f"`{f.name}`: {f.description}" for f in FEATURES))


class UnitInfo(Shape):
    """The deployment's unit of account (policies/units.py)."""

    name: str = Field(description="How the API writes amounts: `s`, a currency code, `tokens`.")
    kind: Literal["time", "currency", "tokens"]
    currency: str | None = Field(description="ISO 4217 code for a currency unit, else null.")


class GatewayInfo(Shape):
    """What this gateway is."""

    version: str = Field(description="The gateway's version.")
    catalog_version: str = Field(description="The policy catalog's version (as in balances "
                                             "and 402s).")
    unit: UnitInfo


async def config(request: Request) -> Response:
    """`GET /v1/billing/config`: the publishable key a frontend initialises Stripe.js with."""
    settings = services_for(request).settings
    key = settings.stripe_publishable_key
    doc = StripeConfig(publishable_key=key,
                       is_configured=bool(key and settings.stripe_secret_key))
    return json_response(doc.wire(), _SHORT_CACHE)


async def features(request: Request) -> Response:
    """`GET /v1/meta/features`: every registered flag and whether it is on."""
    return json_response(Features(features=feature_flags(services_for(request))).wire(),
                         _SHORT_CACHE)


async def info(request: Request) -> Response:
    """`GET /v1/meta/info`: version, catalog version and unit of account."""
    policy = services_for(request).policy
    unit = policy.unit
    doc = GatewayInfo(version=gateway.__version__, catalog_version=policy.catalog_version,
                      unit=UnitInfo(name=unit.api_name, kind=unit.kind.value,
                                    currency=unit.currency))
    return json_response(doc.wire(), _SHORT_CACHE)


OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/v1/billing/config", "getStripeConfig",
              "Stripe configuration for frontends", "meta", PUBLIC,
              (Reply(200, "The publishable key, if any.", StripeConfig, headers=_CACHE_DOC),),
              (BadRequest,), endpoint=config),
    Operation("GET", "/v1/meta/features", "getFeatures", "Capabilities turned on", "meta",
              PUBLIC, (Reply(200, "Every flag.", Features, headers=_CACHE_DOC),),
              (BadRequest,), endpoint=features),
    Operation("GET", "/v1/meta/info", "getInfo", "Version, catalog version and unit", "meta",
              PUBLIC, (Reply(200, "What this gateway is.", GatewayInfo, headers=_CACHE_DOC),),
              (BadRequest,), endpoint=info),
)
META_ROUTES = web_routes(OPERATIONS)
