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

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.edge import caller_for, json_response, services_for
from gateway.api.operations import API_KEY, Operation, Reply, web_routes
from gateway.api.shapes import Shape
from gateway.problems import BadRequest, StoreUnavailableProblem, Unauthorized
from policies.compiled import Policy
from policies.schema import TokensMeter

MODELS_PATH = "/v1/models"
_WILDCARDS = "*?["


class ModelObject(Shape):
    """One model, as OpenAI's `GET /v1/models` lists it."""

    id: str = Field(description="The model name to send as `model`.")
    object: Literal["model"]
    created: int = Field(description="Always 0: unknown to the gateway.")
    owned_by: str = Field(description="The policy's name of the upstream that serves it.")


class ModelList(Shape):
    """OpenAI's list envelope of models."""

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


def model_list(policy: Policy) -> ModelList:
    """The `{"object": "list", "data": [...]}` document of `policy` (see the module doc)."""
    owners: dict[str, str] = {}
    for route in policy.routes:
        meter = route.spec.meter
        if not isinstance(meter, TokensMeter):
            continue
        explicit = meter.overrides if meter.prices == "provider" else (meter.prices or {})
        for key in explicit:
            name = listed_name(key)
            if name is not None and name not in owners:
                owners[name] = route.upstream.name
    return ModelList(object="list", data=[
        ModelObject(id=name, object="model", created=0, owned_by=owner)
        for name, owner in owners.items()])


async def list_models(request: Request) -> Response:
    """`GET /v1/models` for any valid API key (401 without one, 503 when the key store is
    unreachable); `Cache-Control: no-store`."""
    await caller_for(request)
    return json_response(model_list(services_for(request).policy).wire())


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", MODELS_PATH, "listModels", "The models this gateway prices", "models", API_KEY,
        (Reply(200, "OpenAI's model list format.", ModelList),),
        (BadRequest, Unauthorized, StoreUnavailableProblem),
        description="The model names priced on the policy's token-metered routes, each once: "
                    "exact price keys, and patterns whose only wildcard is a trailing `*` as "
                    "their prefix (`gpt-4o-mini*` → `gpt-4o-mini`); `owned_by` is the upstream "
                    "of the first route pricing it, `created` is 0. A policy route for `GET "
                    "/v1/models` (proxying an upstream) takes precedence over this endpoint.",
        endpoint=list_models),
)
MODELS_ROUTES = web_routes(OPERATIONS)
