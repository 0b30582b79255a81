"""The OpenAPI 3.1 document of the billing and admin API, served at `GET /openapi.json`.

The document is assembled from the route declarations of the API modules: each module's
`OPERATIONS` (gateway/api/operations.py's `Operation`, one per route, next to its handler) names
method and path, who may call it, its parameters, the pydantic model of its request body (the
handler's own model), its success replies (the models the handler builds its responses with) and
the problem types it can answer with (classes of gateway/problems.py; grouped by status into
`application/problem+json` responses whose `type` must end in one of their slugs). The same
declarations make the modules' Starlette routes, so nothing is declared twice here.

tests/e2e/test_openapi.py keeps the document honest: it fails when a billing or admin route of
the app is missing here or listed here without a route, and it fuzzes every operation of a
running gateway with schemathesis against this document (statuses, content types, bodies,
headers).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, Literal

import orjson
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as WebRoute

from gateway.api import (
    admin,
    admin_budgets,
    alerts,
    auto_topup,
    billing,
    billing_account,
    console,
    costs,
    credits,
    invoices,
    meta,
    models,
    payment_methods,
    payments,
    reconcile,
    stream,
    subscriptions,
    webhook_endpoints,
)
from gateway.api.operations import SECURITY_SCHEMES, Operation, Param, Reply
from gateway.api.shapes import Problem
from gateway.billing_switch import switched_off
from gateway.problems import BillingDisabled, GatewayError, PayloadTooLarge

__all__ = ["OPENAPI_PATH", "OPERATIONS", "Operation", "Param", "Reply", "build_document",
           "openapi_document", "openapi_route"]

OPENAPI_PATH = "/openapi.json"
_REF = "#/components/schemas/{model}"
_PROBLEM = "application/problem+json"
_PROBLEM_HEADERS = {"Cache-Control": {"required": True, "description": "Problems are never cached.",
                                      "schema": {"type": "string", "const": "no-store"}}}

# Every operation of the API, module by module (the document lists them in this order).
OPERATIONS: tuple[Operation, ...] = (
    *billing.OPERATIONS,
    *costs.OPERATIONS,
    *payments.OPERATIONS,
    *auto_topup.OPERATIONS,
    *invoices.OPERATIONS,
    *stream.OPERATIONS,
    *admin.OPERATIONS,
    *reconcile.OPERATIONS,
    *console.OPERATIONS,
    *alerts.OPERATIONS,
    *webhook_endpoints.OPERATIONS,
    *admin_budgets.OPERATIONS,
    *models.OPERATIONS,
    *meta.OPERATIONS,
    *billing_account.OPERATIONS,
    *payment_methods.OPERATIONS,
    *subscriptions.OPERATIONS,
    *credits.OPERATIONS,
)

_TAGS = [
    {"name": "billing", "description": "An account's catalog, balance, history and preflight."},
    {"name": "payments", "description": "Package and subscription purchases through Stripe "
                                         "Checkout, auto top-up, the Stripe webhook."},
    {"name": "invoices", "description": "Stripe invoices mirrored from webhooks, their PDFs and "
                                         "payment, and the monthly usage statement."},
    {"name": "admin", "description": "Operator endpoints (GATEWAY_ADMIN_TOKEN)."},
    {"name": "models", "description": "Model discovery for OpenAI-compatible clients."},
    {"name": "meta", "description": "Stripe configuration, feature flags and gateway info."},
]

# --- generation ------------------------------------------------------------------------------


def build_document(operations: tuple[Operation, ...] = OPERATIONS) -> dict[str, Any]:
    """The OpenAPI 3.1 document (a JSON-ready dict) of `operations`. Raises ValueError when an
    operation's path template and path parameters disagree or two operations collide."""
    models: list[tuple[type[BaseModel], Literal["validation", "serialization"]]] = [
        (Problem, "serialization")]
    for op in operations:
        if op.body is not None:
            models.append((op.body, "validation"))
        models.extend((r.model, "serialization") for r in op.replies if r.model is not None)
    refs, defs = models_json_schema(list(dict.fromkeys(models)), ref_template=_REF)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        entry = paths.setdefault(op.path, {})
        if op.method.lower() in entry:
            raise ValueError(f"{op.method} {op.path} is declared twice")
        entry[op.method.lower()] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "AI metering gateway: billing and admin API",
            "version": "1",
            "description": "Billing reads, batch preflight, package purchases and the operator "
                           "API of the metering gateway (SPEC §8). Errors are RFC 9457 problem "
                           "documents whose `type` dereferences to `/problems/<slug>`. The "
                           "metered AI routes themselves are the upstreams' APIs and are not "
                           "described here; `GET /v1/models` lists the models they price. Any "
                           "path or query holding a NUL character (`%00`) is a 400; a request "
                           "body over GATEWAY_MAX_BODY_BYTES (1 MiB by default) is a 413, "
                           "refused while it is read.",
        },
        "tags": _TAGS,
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {}), "securitySchemes": SECURITY_SCHEMES},
    }


def _operation(op: Operation, refs: Mapping[tuple[Any, Any], Any]) -> dict[str, Any]:
    in_path = set(re.findall(r"{(\w+)}", op.path))
    declared = {p.name for p in op.params if p.where == "path"}
    if in_path != declared:
        raise ValueError(f"{op.method} {op.path}: path parameters {sorted(declared)} do not "
                         f"match the template {sorted(in_path)}")
    doc: dict[str, Any] = {"operationId": op.operation_id, "summary": op.summary}
    if op.description:
        doc["description"] = op.description
    doc["tags"] = [op.tag]
    doc["security"] = [{name: []} for name in op.security]
    if op.params:
        doc["parameters"] = [{"name": p.name, "in": p.where, "required": p.required,
                              "description": p.description, "schema": dict(p.schema)}
                             for p in op.params]
    if op.body is not None:
        doc["requestBody"] = {"required": op.body_required, "content": {
            "application/json": {"schema": refs[(op.body, "validation")]}}}
    responses: dict[str, Any] = doc.setdefault("responses", {})
    for reply in op.replies:
        out: dict[str, Any] = {"description": reply.description}
        if reply.headers:
            out["headers"] = {k: dict(v) for k, v in reply.headers.items()}
        if reply.model is not None:
            out["content"] = {reply.media_type: {
                "schema": refs[(reply.model, "serialization")]}}
        elif reply.media_type != "application/json":
            out["content"] = {reply.media_type: {"schema": {"type": "string"}}}
        responses[str(reply.status)] = out
    by_status: dict[int, list[type[GatewayError]]] = {}
    # Every body is bounded while read (gateway/body_limit.py: GATEWAY_MAX_BODY_BYTES).
    errors: tuple[type[GatewayError], ...] = (
        (*op.errors, PayloadTooLarge) if op.body is not None else op.errors)
    if switched_off(op.path):  # GATEWAY_BILLING_ENABLED=false (gateway/billing_switch.py)
        errors = (*errors, BillingDisabled)
    for cls in dict.fromkeys(errors):
        by_status.setdefault(cls.status, []).append(cls)
    for status, classes in sorted(by_status.items()):
        responses[str(status)] = _problem_response(status, classes)
    return doc


def _problem_response(status: int, classes: list[type[GatewayError]]) -> dict[str, Any]:
    """A problem response whose `type` must end in one of the classes' slugs."""
    slugs = sorted({c.slug for c in classes})
    assert all(re.fullmatch(r"[a-z-]+", s) for s in slugs), slugs
    lines = [f"`{c.slug}`: {' '.join((c.__doc__ or c.title).split())}" for c in classes]
    schema = {"allOf": [
        {"$ref": _REF.format(model="Problem")},
        {"properties": {"status": {"const": status},
                        "type": {"pattern": f"/problems/({'|'.join(slugs)})$"}}},
    ]}
    return {"description": " ".join(lines), "headers": dict(_PROBLEM_HEADERS),
            "content": {_PROBLEM: {"schema": schema}}}


@functools.cache
def openapi_document() -> dict[str, Any]:
    """The document of `OPERATIONS`, built on first use and cached for the process (shared:
    treat it as read-only)."""
    return build_document()


@functools.cache
def _document_bytes() -> bytes:
    return orjson.dumps(openapi_document())


def openapi_route() -> WebRoute:
    """`GET /openapi.json`: the document, public, `Cache-Control: public, max-age=300`."""

    async def serve(_request: Request) -> Response:
        return Response(_document_bytes(), media_type="application/json",
                        headers={"cache-control": "public, max-age=300"})

    return WebRoute(OPENAPI_PATH, serve, methods=["GET"])
