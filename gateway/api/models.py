"""`GET /v1/models`: the models a caller can use through this gateway, in OpenAI's list format,
so `client.models.list()` and tools that discover models work.

Listed are the model names the policy prices on its token-metered routes (every route is open to
every API key), each once, in policy order, `owned_by` the upstream of the first route pricing
it. A price key that is a pattern is listed as its fixed prefix when its only wildcard is one
trailing `*` (`gpt-4o-mini*` → `gpt-4o-mini`, a name the pattern itself prices); other patterns
(`*`, `?`, `[…]`, a `*` inside) name no model and are left out. `created` is 0: the gateway does
not know when a provider made a model. Routes metered by duration or per call price no model.

A policy route for `GET /v1/models` (proxying the upstream's list) wins over this endpoint: the
gateway dispatches policy routes first.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as WebRoute

from gateway.api.edge import caller_for, json_response, services_for
from policies.compiled import Policy
from policies.schema import TokensMeter

MODELS_PATH = "/v1/models"
_WILDCARDS = "*?["


class ModelObject(BaseModel):
    """One model, as OpenAI's `GET /v1/models` lists it."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="The model name to send as `model`.")
    object: Literal["model"]
    created: int = Field(description="Always 0: unknown to the gateway.")
    owned_by: str = Field(description="The policy's name of the upstream that serves it.")


class ModelList(BaseModel):
    """OpenAI's list envelope of models."""

    model_config = ConfigDict(extra="forbid")
    object: Literal["list"]
    data: list[ModelObject]


def listed_name(price_key: str) -> str | None:
    """The model name a price key lists: itself when exact, the prefix of a pattern whose only
    wildcard is one trailing `*`, else None."""
    if not any(c in price_key for c in _WILDCARDS):
        return price_key
    prefix = price_key[:-1]
    if price_key.endswith("*") and prefix and not any(c in prefix for c in _WILDCARDS):
        return prefix
    return None


def model_list(policy: Policy) -> dict[str, object]:
    """The `{"object": "list", "data": [...]}` document of `policy` (see the module doc)."""
    owners: dict[str, str] = {}
    for route in policy.routes:
        meter = route.spec.meter
        if not isinstance(meter, TokensMeter):
            continue
        for key in meter.prices:
            name = listed_name(key)
            if name is not None and name not in owners:
                owners[name] = route.upstream.name
    return {"object": "list", "data": [
        {"id": name, "object": "model", "created": 0, "owned_by": owner}
        for name, owner in owners.items()]}


async def list_models(request: Request) -> Response:
    """`GET /v1/models` for any valid API key (401 without one, 503 when the key store is
    unreachable); `Cache-Control: no-store`."""
    await caller_for(request)
    return json_response(model_list(services_for(request).policy))


MODELS_ROUTES = [WebRoute(MODELS_PATH, list_models, methods=["GET"])]
