"""Billing API read endpoints (SPEC §8): the public catalog and an account's balance.

User data answers `Cache-Control: no-store`; the catalog is public with a strong ETag per
catalog version and currency (`If-None-Match` → 304, `Cache-Control: public, max-age=300`).
An account's own API key reads its own data only: any other account id is a 404, so account
ids cannot be probed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as WebRoute

from gateway.auth import Caller, key_from_headers
from gateway.balance_view import enhanced_balance
from gateway.problems import BadRequest, NotFound, StoreUnavailableProblem, Unauthorized
from policies.catalog import UnknownCurrency, catalog_document
from storage.ports import StoreUnavailable, UnknownAccount

if TYPE_CHECKING:
    from gateway.app import Gateway

_NO_STORE = {"cache-control": "no-store"}


def _json(doc: object, headers: dict[str, str], status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json",
                    headers=headers)


async def caller_for(gw: Gateway, request: Request) -> Caller:
    """The account whose API key signed this request. Raises Unauthorized (401) or
    StoreUnavailableProblem (503)."""
    s = gw.services
    assert s is not None
    key = key_from_headers(request.headers.get("authorization", "").encode("latin-1") or None,
                           request.headers.get("x-api-key", "").encode("latin-1") or None)
    if key is None:
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>' or 'X-API-Key'.")
    try:
        caller = await s.keys.resolve(key)
    except StoreUnavailable as exc:
        raise StoreUnavailableProblem("The key store is unreachable; retry shortly.") from exc
    if caller is None:
        raise Unauthorized("Unknown or revoked API key.")
    return caller


async def own_account(gw: Gateway, request: Request) -> str:
    """`{userId}` of the path when it is the caller's own account; else 404 (no probing)."""
    caller = await caller_for(gw, request)
    user_id = request.path_params["userId"]
    if user_id != caller.account_id:
        raise NotFound(f"No account {user_id!r} for this API key.")
    return user_id


def billing_routes(gw: Gateway) -> list[WebRoute]:
    """The Starlette routes of the billing read API."""

    async def catalog(request: Request) -> Response:
        s = gw.services
        assert s is not None
        try:
            doc, etag = catalog_document(s.policy.document.catalog, s.policy.plans,
                                         request.query_params.get("currency"))
        except UnknownCurrency as exc:
            raise BadRequest(f"Unknown currency {exc}; use one of USD, EUR, GBP, EGP, SAR, "
                             "AED.") from None
        headers = {"etag": etag, "cache-control": "public, max-age=300",
                   "vary": "accept-encoding"}
        inm = request.headers.get("if-none-match", "")
        if etag in (t.strip() for t in inm.split(",")) or inm.strip() == "*":
            return Response(status_code=304, headers=headers)
        return _json(doc, headers)

    async def balance(request: Request) -> Response:
        s = gw.services
        assert s is not None
        account_id = await own_account(gw, request)
        try:
            snap = await s.ledger.balance(account_id)
        except UnknownAccount:
            raise NotFound(f"No account {account_id!r}.") from None
        except StoreUnavailable as exc:
            raise StoreUnavailableProblem("The billing store is unreachable.") from exc
        doc = enhanced_balance(snap, s.policy.plans.get(snap.plan_key), s.policy.catalog_version)
        return _json(doc, _NO_STORE)

    return [
        WebRoute("/v1/billing/catalog", catalog, methods=["GET"]),
        WebRoute("/v1/billing/balance/{userId}", balance, methods=["GET"]),
    ]
