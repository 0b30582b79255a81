"""The live billing stream on a real socket: snapshot, live events, Last-Event-ID replay, the
truncated-history notice, keep-alives, access rules, and the whole loop the 402 starts —
402 → purchase → webhook → `resume.ready` on the stream → retry with X-Resume-Token → 200."""

from __future__ import annotations

import json
import queue
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from gateway.hmac_auth import header_for
from tests.e2e.helpers import auth, chat_body
from tests.e2e.stripe_support import _deliver, _event, _mock_checkout
from tests.support import RunningGateway, start_gateway

HMAC_SECRET = "s" * 40
STREAM_ENV = {"GATEWAY_STREAM_POLL_S": "1", "GATEWAY_STREAM_KEEPALIVE_S": "1",
              "GATEWAY_HMAC_KEYS": f"k1:{HMAC_SECRET}"}


@dataclass
class Sse:
    """One received SSE message (`comment` for keep-alive lines)."""

    event: str | None = None
    id: str | None = None
    data: Any = None
    comment: str | None = None


@dataclass
class StreamReader:
    """Reads an SSE response on a thread; `next()` returns the next non-comment message."""

    response: httpx.Response
    inbox: queue.Queue[Sse] = field(default_factory=queue.Queue)
    comments: list[str] = field(default_factory=list)

    def run(self) -> None:
        current = Sse()
        try:
            for line in self.response.iter_lines():
                if line.startswith(":"):
                    self.comments.append(line)
                elif line == "":
                    if current.event or current.data is not None:
                        self.inbox.put(current)
                    current = Sse()
                else:
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    if name == "event":
                        current.event = value
                    elif name == "id":
                        current.id = value
                    elif name == "data":
                        current.data = json.loads(value)
        except (httpx.HTTPError, RuntimeError):
            pass  # closed by the test

    def next(self, timeout: float = 5.0) -> Sse:
        return self.inbox.get(timeout=timeout)

    def until(self, event: str, timeout: float = 5.0) -> Sse:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if msg.event == event:
                return msg


@pytest.fixture
def streaming(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[RunningGateway]:
    gw = start_gateway(tmp_path, {**upstream_env, **STREAM_ENV})
    try:
        yield gw
    finally:
        gw.stop()


class open_stream:  # used as a context manager like open()
    """`with open_stream(gw, account, key, last_id) as reader:` — the stream on a thread;
    `path` (with its query) and `headers` replace the account's own path and key."""

    def __init__(self, gw: RunningGateway, account: str, key: str,
                 last_event_id: str | None = None, *, path: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        headers = dict(headers) if headers is not None else auth(key)
        if last_event_id is not None:
            headers["last-event-id"] = last_event_id
        self._client = httpx.Client(timeout=httpx.Timeout(10, read=30))
        self._cm = self._client.stream("GET", gw.url + (path or f"/v1/billing/stream/{account}"),
                                       headers=headers)

    def __enter__(self) -> StreamReader:
        response = self._cm.__enter__()
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-store"
        reader = StreamReader(response)
        threading.Thread(target=reader.run, daemon=True).start()
        return reader

    def __exit__(self, *exc: object) -> None:
        self._cm.__exit__(None, None, None)
        self._client.close()


def _call(gw: RunningGateway, key: str) -> httpx.Response:
    r = httpx.post(gw.url + "/v1/chat/completions", headers=auth(key),
                   json=chat_body("hello stream"))
    assert r.status_code == 200, r.text
    return r


def test_a_fresh_stream_starts_with_a_snapshot_then_carries_each_change(streaming):
    gw = streaming
    account, key = gw.ledger.funded(60_000)
    with open_stream(gw, account, key) as reader:
        snap = reader.next()
        assert snap.event == "balance.updated" and snap.data["reason"] == "snapshot"
        assert snap.data["total_seconds"] == 60 and int(snap.id) >= 1
        charged = int(_call(gw, key).headers["x-gateway-charged-ms"])
        live = reader.next()
        assert live.event == "balance.updated" and live.data["reason"] == "consumption"
        assert live.data["charged_ms"] == charged and int(live.id) > int(snap.id)
        # A change committed by another process (the test's own ledger handle) arrives through
        # the log poll, not the in-process bus.
        gw.ledger.grant(account, 120_000)
        kinds = [reader.next(3).event for _ in range(3)]
        assert kinds == ["bucket.created", "credit.applied", "balance.updated"]


def test_last_event_id_replays_exactly_what_was_missed(streaming):
    gw = streaming
    account, key = gw.ledger.funded(60_000)
    with open_stream(gw, account, key) as reader:
        seen = reader.next().id
    for _ in range(3):
        _call(gw, key)
    gw.ledger.grant(account, 120_000)
    _call(gw, key)
    with open_stream(gw, account, key, last_event_id=seen) as reader:
        replayed = [reader.next() for _ in range(4)]
    # The logged events in order, then one balance snapshot standing for the calls'
    # balance.updated events (live only), with the newest id.
    assert [m.event for m in replayed] == ["bucket.created", "credit.applied",
                                           "balance.updated", "balance.updated"]
    ids = [int(m.id) for m in replayed]
    assert ids == sorted(ids) and ids[0] > int(seen) and len(set(ids)) == 4
    assert replayed[-1].data["reason"] == "snapshot"
    assert replayed[-1].data["total_seconds"] == gw.ledger.balance(account).spendable // 1000
    with open_stream(gw, account, key, last_event_id=str(ids[-1])) as reader:
        _call(gw, key)
        live = reader.next()
        assert int(live.id) == ids[-1] + 1 and live.data["reason"] == "consumption"


def test_a_gap_older_than_the_history_is_announced(streaming):
    gw = streaming
    account, key = gw.ledger.funded(60_000)
    gw.ledger.grant(account, 1000)  # events 4, 5, 6
    db = sqlite3.connect(gw.settings.database_url.removeprefix("sqlite:///"))
    with db:
        db.execute("DELETE FROM account_events WHERE account_id = ? AND seq < 5", (account,))
    db.close()
    with open_stream(gw, account, key, last_event_id="1") as reader:
        notice = reader.next()
        assert notice.event == "history.truncated"
        assert notice.data == {"last_event_id": 1, "oldest_available_id": 5}
        assert [int(reader.next().id) for _ in range(2)] == [5, 6]  # what the log still has


def test_keep_alive_comments_flow_while_nothing_happens(streaming):
    gw = streaming
    account, key = gw.ledger.funded(60_000)
    with open_stream(gw, account, key) as reader:
        reader.next()
        deadline = time.monotonic() + 10  # a bound, not a wait: the interval is 1 s
        while not reader.comments and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.comments, "no keep-alive comment in 10 s with a 1 s interval"


def test_only_the_owner_or_a_signed_backend_may_open_a_stream(streaming):
    gw = streaming
    account, key = gw.ledger.funded(60_000)
    other, _ = gw.ledger.funded(0)
    r = httpx.get(f"{gw.url}/v1/billing/stream/{other}", headers=auth(key))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{gw.url}/v1/billing/stream/{account}").status_code == 401
    bad = httpx.get(f"{gw.url}/v1/billing/stream/{account}",
                    headers={**auth(key), "last-event-id": "abc"})
    assert bad.status_code == 400


def test_the_decided_stream_path_streams_the_api_keys_own_account(streaming):
    # Seed 000 decides `GET /v1/billing/stream`: with an API key, the key's own account.
    gw = streaming
    account, key = gw.ledger.funded(60_000)
    other, _ = gw.ledger.funded(0)
    with open_stream(gw, account, key, path="/v1/billing/stream") as reader:
        assert reader.next().data["total_seconds"] == 60
        gw.ledger.grant(account, 30_000)
        assert reader.until("balance.updated").data["total_seconds"] == 90
    with open_stream(gw, account, key, path=f"/v1/billing/stream?userId={account}") as reader:
        assert reader.next().data["total_seconds"] == 90
    r = httpx.get(f"{gw.url}/v1/billing/stream?userId={other}", headers=auth(key))
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
    assert httpx.get(f"{gw.url}/v1/billing/stream").status_code == 401


def test_a_signed_backend_names_the_account_of_the_decided_stream_path_in_the_query(streaming):
    gw = streaming
    account, key = gw.ledger.funded(42_000)

    def signed(query: str) -> dict[str, str]:
        return {"x-hmac-signature": header_for("k1", HMAC_SECRET, "GET", "/v1/billing/stream",
                                               query, b"", secrets.token_urlsafe(16))}

    with open_stream(gw, account, key, path=f"/v1/billing/stream?userId={account}",
                     headers=signed(f"userId={account}")) as reader:
        assert reader.next().data["total_seconds"] == 42
    r = httpx.get(f"{gw.url}/v1/billing/stream", headers=signed(""))
    assert r.status_code == 400 and "userId" in r.json()["detail"]


def test_402_purchase_webhook_resume_ready_then_the_retry_succeeds(shop):
    gw, router = shop
    account, key = gw.ledger.funded(0)
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)
    body = chat_body("the operation the 402 blocked", max_tokens=50)
    with pytest.raises(openai.APIStatusError) as blocked:
        client.chat.completions.create(**body)
    problem = blocked.value.response.json()
    operation_id = problem["instance"].removeprefix("urn:op:")
    with open_stream(gw, account, key) as reader:
        assert reader.next().data["total_seconds"] == 0
        _mock_checkout(router, "cs_stream_loop")
        bought = httpx.post(gw.url + "/v1/billing/packages/purchase", headers=auth(key),
                            json={"package_key": "mini", "operation_id": problem["instance"]})
        assert bought.status_code == 200
        assert _deliver(gw, _event("evt_stream_loop", "cs_stream_loop")).json()["outcome"] \
            == "credited"
        fulfilled = reader.until("package.fulfilled")
        assert fulfilled.data["package_key"] == "mini"
        ready = reader.until("resume.ready")
        assert ready.data["operation_id"] == operation_id
        assert problem["resume_token"] not in json.dumps(ready.data)
        assert reader.until("balance.updated").data["total_seconds"] == 3600
    raw = client.chat.completions.with_raw_response.create(
        **body, extra_headers={"X-Resume-Token": problem["resume_token"]})
    assert raw.status_code == 200
    assert raw.headers["x-resume-token-status"] == "consumed"


def test_the_maintenance_loop_expires_buckets_and_the_stream_says_so(tmp_path, upstream_env):
    gw = start_gateway(tmp_path, {**upstream_env, **STREAM_ENV, "GATEWAY_MAINTENANCE_S": "1"})
    try:
        account, key = gw.ledger.funded(60_000)
        expires = int(time.time() * 1000) + 1500
        gw.ledger.grant(account, 30_000, expires_at_ms=expires)
        with open_stream(gw, account, key) as reader:
            expired = reader.until("bucket.expired", timeout=8)
            assert expired.data["seconds"] == 30 and expired.data["source"] == "gift"
            assert reader.until("balance.updated").data["total_seconds"] == 60
        t = gw.ledger.totals(account)
        assert t["remaining"] - t["debt"] == t["deltas"] and t["remaining"] == 60_000
    finally:
        gw.stop()
