"""The live billing stream across gateway processes (SPEC §3: the event fan-out through Redis).

A stream opened on process A sees, within a second, a change committed on process B — with the
streams' log poll set to 60 s, only the Redis fan-out can deliver it that fast.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import chat_body
from tests.e2e.test_billing_stream import StreamReader
from tests.fakes.upstream import FakeUpstream
from tests.production._support import Gateways, auth, ledger_for, upstream_env, write_policy

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_a_change_on_one_process_reaches_a_stream_on_another_through_redis(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, pg_url: str,
    redis_url: str,
) -> None:
    policy = write_policy(tmp_path)
    a, b = gateways.start(2, policy, {
        "GATEWAY_DATABASE_URL": pg_url, "GATEWAY_REDIS_URL": redis_url,
        "GATEWAY_STREAM_POLL_S": "60", **upstream_env(fake_upstream.url)})
    ledger = ledger_for(pg_url, policy)
    account, key = ledger.funded(600_000)
    with httpx.Client(timeout=httpx.Timeout(10, read=70)) as client, client.stream(
            "GET", f"{a.url}/v1/billing/stream/{account}", headers=auth(key)) as response:
        assert response.status_code == 200
        reader = StreamReader(response)
        threading.Thread(target=reader.run, daemon=True).start()
        snapshot = reader.next(10)
        assert snapshot.event == "balance.updated"
        started = time.monotonic()
        r = httpx.post(b.url + "/v1/chat/completions", headers=auth(key),
                       json=chat_body("across processes"))
        assert r.status_code == 200, r.text
        event = reader.next(5)
        waited = time.monotonic() - started
        assert event.event == "balance.updated" and event.data["reason"] == "consumption"
        assert event.data["charged_ms"] == int(r.headers["x-gateway-charged-ms"])
        assert int(event.id) > int(snapshot.id)
        assert waited < 2.0, f"took {waited:.2f} s: not the Redis fan-out"
