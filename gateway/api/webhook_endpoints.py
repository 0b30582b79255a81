"""Admin endpoints of the outgoing webhooks (issue 11 item 8): `GET|POST
/v1/admin/webhook-endpoints` (register `{url, event_types, description}` → `{id, secret}`, the
secret shown once) and `GET /v1/admin/webhook-endpoints/{id}/deliveries` (each delivery with
its attempts). Admin credential as for every admin route (gateway.api.admin.check).
Deliveries and signing: gateway.webhooks.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.admin import check
from gateway.api.edge import int_param, json_body, json_response
from gateway.api.operations import ADMIN, ADMIN_ERRORS, Operation, Param, Reply, path_param
from gateway.api.operations import web_routes as routes_of
from gateway.api.shapes import DATE_TIME, Shape, timestamp
from gateway.problems import BadRequest, NotFound
from gateway.services import Services
from gateway.webhooks import MAX_URL_LENGTH, new_secret, url_problem
from storage.clock import iso_utc
from storage.engine.webhooks import WEBHOOK_EVENT_TYPES
from storage.ports import Webhooks

EventTypeName = Literal["balance.low", "balance.depleted", "balance.recovered",
                        "credit.applied", "package.fulfilled", "refund.applied",
                        "payment.failed", "subscription.updated"]
assert set(EventTypeName.__args__) == set(WEBHOOK_EVENT_TYPES)  # type: ignore[attr-defined]


class NewEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=8, max_length=MAX_URL_LENGTH,
                     description="http:// or https:// URL receiving POSTs; no credentials or "
                                 "fragment in it.")
    event_types: list[EventTypeName] = Field(min_length=1, max_length=len(WEBHOOK_EVENT_TYPES),
                                             description="The event types it receives.")
    description: str | None = Field(None, max_length=500)


class EndpointView(Shape):
    id: str
    url: str
    event_types: list[str]
    description: str | None
    created_at: str = timestamp("When it was registered.")


class EndpointCreated(EndpointView):
    secret: str = Field(pattern=r"^whsec_", description="The Standard Webhooks signing secret: "
                                                        "shown once, never again.")


class EndpointList(Shape):
    endpoints: list[EndpointView]


class AttemptView(Shape):
    attempt: int = Field(ge=1)
    at: str = timestamp("When it was made.")
    status_code: int | None = Field(description="The receiver's HTTP status; null when none "
                                                 "came (timeout, connection error).")
    error: str | None
    duration_ms: int = Field(ge=0)


class DeliveryView(Shape):
    id: str
    message_id: str = Field(description="The `webhook-id` header: the same on every attempt.")
    event_type: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int = Field(ge=0)
    next_attempt_at: str | None = Field(description="When it is retried (pending only).",
                                        json_schema_extra=DATE_TIME)
    last_status_code: int | None
    last_error: str | None
    created_at: str = timestamp("When the event was written.")
    delivered_at: str | None = Field(json_schema_extra=DATE_TIME)
    attempt_log: list[AttemptView]


class DeliveryList(Shape):
    deliveries: list[DeliveryView] = Field(description="Newest first.")


def _webhooks(s: Services) -> Webhooks:
    assert s.webhooks is not None
    return s.webhooks


def _endpoint(e: dict[str, object]) -> dict[str, object]:
    return {"id": e["id"], "url": e["url"], "event_types": e["event_types"],
            "description": e["description"], "created_at": iso_utc(int(str(e["created_at_ms"])))}


async def create(request: Request) -> Response:
    """`POST /v1/admin/webhook-endpoints`: register an endpoint; its secret is shown once."""
    s = check(request)
    body = json_body(NewEndpoint, await request.body())
    problem = url_problem(body.url)
    if problem is not None:
        raise BadRequest(f"url: {problem}")
    types: list[str] = list(dict.fromkeys(body.event_types))
    secret = new_secret()
    made = await _webhooks(s).create_endpoint(body.url, types, body.description, secret)
    view = EndpointCreated.model_validate({**_endpoint(made), "secret": secret})
    return json_response(view.wire(), status=201)


async def listing(request: Request) -> Response:
    """`GET /v1/admin/webhook-endpoints`: every endpoint (never its secret)."""
    s = check(request)
    rows = await _webhooks(s).list_endpoints()
    return json_response(EndpointList(
        endpoints=[EndpointView.model_validate(_endpoint(e)) for e in rows]).wire())


async def deliveries(request: Request) -> Response:
    """`GET /v1/admin/webhook-endpoints/{id}/deliveries?limit=`: newest deliveries first."""
    s = check(request)
    limit = int_param(request, "limit", 50, 1, 500)
    rows = await _webhooks(s).deliveries(request.path_params["id"], limit)
    if rows is None:
        raise NotFound("No webhook endpoint with this id.")
    out = []
    for d in rows:
        nxt, done = d["next_attempt_at_ms"], d["delivered_at_ms"]
        out.append(DeliveryView(
            id=d["id"], message_id=d["message_id"], event_type=d["event_type"],
            status=d["status"], attempts=d["attempts"],
            next_attempt_at=None if nxt is None else iso_utc(int(nxt)),
            last_status_code=d["last_status_code"], last_error=d["last_error"],
            created_at=iso_utc(int(d["created_at_ms"])),
            delivered_at=None if done is None else iso_utc(int(done)),
            attempt_log=[AttemptView(attempt=a["attempt"], at=iso_utc(int(a["at_ms"])),
                                     status_code=a["status_code"], error=a["error"],
                                     duration_ms=a["duration_ms"]) for a in d["attempt_log"]]))
    return json_response(DeliveryList(deliveries=out).wire())


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST", "/v1/admin/webhook-endpoints", "createWebhookEndpoint",
        "Register an outgoing webhook endpoint", "admin", ADMIN,
        (Reply(201, "Registered; `secret` is shown this once.", EndpointCreated),),
        ADMIN_ERRORS, body=NewEndpoint,
        description="Every event of the listed types is delivered at least once, signed per "
                    "Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`) "
                    "with the returned secret, retried with exponential backoff for at least "
                    "24 h. The URL must be http(s), without credentials or fragment.",
        endpoint=create),
    Operation(
        "GET", "/v1/admin/webhook-endpoints", "listWebhookEndpoints",
        "List outgoing webhook endpoints", "admin", ADMIN,
        (Reply(200, "Every endpoint, oldest first (never a secret).", EndpointList),),
        ADMIN_ERRORS, endpoint=listing),
    Operation(
        "GET", "/v1/admin/webhook-endpoints/{id}/deliveries", "listWebhookDeliveries",
        "An endpoint's deliveries and their attempts", "admin", ADMIN,
        (Reply(200, "Newest first.", DeliveryList),),
        ADMIN_ERRORS,
        params=(path_param("id", "The endpoint id (`whe_…`); an unknown id is a 404."),
                Param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 500,
                                         "default": 50}, "Page size (decimal digits only).")),
        endpoint=deliveries),
)
WEBHOOK_ENDPOINT_ROUTES = routes_of(OPERATIONS)
