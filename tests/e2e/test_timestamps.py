"""One timestamp format on every JSON surface of the billing, admin and stream APIs: RFC 3339 in
UTC with a `Z` and whole seconds (`2027-02-27T06:13:42Z`), so one instant is one string — the
stream once sent `2027-02-27T06:13:42.079000Z` for a bucket the balance showed as `…42Z`.

One account is given a history that puts a time in every place one can appear (bucket expiries
with milliseconds, subscription periods, a scheduled downgrade, an expired bucket, API keys, a
backed-off auto top-up, a 402), then every surface's JSON is scanned for timestamp-like
strings."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from storage.engine.buckets import Source
from tests.e2e.helpers import auth, chat_body, db_path
from tests.e2e.stripe_support import _deliver, _event, _mock_checkout, stripe_gateway
from tests.e2e.test_billing_stream import STREAM_ENV, Sse, open_stream
from tests.e2e.test_stripe_lifecycle import (
    DAY,
    _invoice,
    _mock_payment_intent,
    _payload,
    _subscription,
    _topup_settings,
    _wait_for,
)
from tests.support import RunningGateway

ADMIN_TOKEN = "t" * 40
ONE_FORMAT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
TIMESTAMP_LIKE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}")
# Every member that carries a time somewhere in the scenario below: the scan must meet each.
TIME_MEMBERS = {"expires_at", "next_expiry_at", "effective_date", "timestamp", "period_start",
                "period_end", "expired_at", "resume_expires_at", "created_at", "revoked_at",
                "next_attempt_at", "from", "to"}


@pytest.fixture
def stamped(tmp_path: Path, upstream_env: dict[str, str]
            ) -> Iterator[tuple[RunningGateway, respx.MockRouter]]:
    with stripe_gateway(tmp_path, upstream_env, {**STREAM_ENV, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
                                                 "GATEWAY_MAINTENANCE_S": "1"}) as pair:
        yield pair


def timestamps(doc: Any, path: str = "$") -> Iterator[tuple[str, str]]:
    """(JSON path, string) of every string in `doc` holding something like a date and time."""
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from timestamps(v, f"{path}.{k}")
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from timestamps(v, f"{path}[{i}]")
    elif isinstance(doc, str) and TIMESTAMP_LIKE.search(doc):
        yield path, doc


def _json(r: httpx.Response, status: int = 200) -> Any:
    assert r.status_code == status, r.text
    return r.json()


def test_every_billing_admin_and_stream_surface_writes_times_one_way(stamped):
    gw, router = stamped
    admin = auth(ADMIN_TOKEN)
    now = int(time.time())
    account = gw.ledger.account("free")  # a welcome bucket (never expires)
    key = gw.ledger.key(account)
    spare = _json(httpx.post(f"{gw.url}/v1/admin/accounts/{account}/keys", headers=admin), 201)
    _json(httpx.delete(f"{gw.url}/v1/admin/keys/{spare['key_id']}", headers=admin))
    _json(httpx.post(gw.url + "/v1/chat/completions", headers=auth(key),
                     json=chat_body("times")))  # the day's bonus bucket, a consumption
    _mock_checkout(router, "cs_times")
    purchase = _json(httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                                json={"package_key": "mini"}))
    assert _deliver(gw, _event("evt_times", "cs_times")).status_code == 200  # 90-day package
    _deliver(gw, _payload("evt_times_inv", "invoice.paid",
                          _invoice("in_times", account, now - DAY, now + 29 * DAY), now - 10))
    _deliver(gw, _payload("evt_times_cancel", "customer.subscription.updated",
                          _subscription(account, cancel_at_period_end=True,
                                        period_end=now + 29 * DAY), now))
    gw.ledger.grant(account, 300_000, source=Source.ROLLOVER,
                    expires_at_ms=(now + 60 * DAY) * 1000 + 79)  # an expiry with milliseconds
    gw.ledger.grant(account, 1_000, expires_at_ms=int(time.time() * 1000) + 1_079)

    stream: list[Sse] = []
    with open_stream(gw, account, key, last_event_id="0") as reader:  # the whole log
        while not stream or stream[-1].event != "bucket.expired":  # the maintenance loop's
            stream.append(reader.next(timeout=8))

    _poor, poor_key = gw.ledger.funded(10)
    blocked = httpx.post(gw.url + "/v1/chat/completions", headers=auth(poor_key),
                         json=chat_body("not enough"))
    declined, declined_key = gw.ledger.funded(5 * 60_000)
    _mock_payment_intent(router, status=402)
    _json(_topup_settings(gw, declined_key, declined))  # below the threshold: tries, declined
    topup_url = f"{gw.url}/v1/billing/auto-topup/{declined}"
    _wait_for(lambda: httpx.get(topup_url, headers=auth(declined_key)).json()[
        "consecutive_failures"] == 1)

    user = f"/v1/billing/{{}}/{account}"
    surfaces: dict[str, Any] = {
        "balance": _json(httpx.get(gw.url + user.format("balance"), headers=auth(key))),
        "enhanced-balance": _json(httpx.get(gw.url + user.format("enhanced-balance"),
                                            headers=auth(key))),
        "events": _json(httpx.get(gw.url + user.format("events"), params={"limit": 200},
                                  headers=auth(key))),
        "usage": _json(httpx.get(gw.url + user.format("usage"), params={"period": "week"},
                                 headers=auth(key))),
        "batch": _json(httpx.post(gw.url + "/v1/billing/check-sufficient-batch",
                                  headers=auth(key),
                                  json={"operations": [{"operation": "build",
                                                        "estimate_seconds": 120}]})),
        "catalog": _json(httpx.get(gw.url + "/v1/billing/catalog?currency=EUR")),
        "purchase": purchase,
        "402": _json(blocked, 402),
        "auto-topup": _json(httpx.get(topup_url, headers=auth(declined_key))),
        "admin accounts": _json(httpx.get(gw.url + "/v1/admin/accounts?limit=500",
                                          headers=admin)),
        "admin account": _json(httpx.get(f"{gw.url}/v1/admin/accounts/{account}",
                                         headers=admin)),
        "admin usage": _json(httpx.get(gw.url + "/v1/admin/stats/usage?period=week",
                                       headers=admin)),
        "stream": [{"event": m.event, "data": m.data} for m in stream],
    }
    found = [(name, path, text) for name, doc in surfaces.items()
             for path, text in timestamps(doc)]
    assert [f for f in found if not ONE_FORMAT.fullmatch(f[2])] == []
    members = {re.sub(r"\[[0-9]+\]$", "", path).rsplit(".", 1)[-1] for _, path, _ in found}
    assert members >= TIME_MEMBERS, TIME_MEMBERS - members  # the scan saw every kind of time

    # One bucket, one string: the stream's expiry of each bucket is the balance's.
    balance = surfaces["balance"]["buckets"]
    shown = {b["id"]: b["expires_at"] for b in balance["daily"] + balance["paid"]}
    created = {m.data["bucket_id"]: m.data["expires_at"] for m in stream
               if m.event in ("bucket.created", "rollover.created")}
    assert {b: created[b] for b in shown if b in created} == {
        b: shown[b] for b in shown if b in created}
    rollover = next(b for b in balance["paid"] if b["source"] == "rollover")
    assert created[rollover["id"]] == rollover["expires_at"]
    with sqlite3.connect(db_path(gw.ledger)) as db:  # written with milliseconds in the store
        assert db.execute("SELECT expires_at_ms % 1000 FROM buckets WHERE id = ?",
                          (rollover["id"],)).fetchone() == (79,)
