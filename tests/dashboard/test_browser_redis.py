"""A grant made in another gateway process appears live in an open dashboard (issue 12: "a
grant made elsewhere appears within 2 s without a reload, with one process or with Redis").

The page is served by one gateway; the grant goes through the admin API of a second gateway —
a `gateway serve` child process, so nothing in memory is shared — on the same SQLite file and
the same Redis. The page's gateway re-reads the event log only every 300 s here
(GATEWAY_STREAM_POLL_S), so an update within 2 s can only have come through Redis' fan-out."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.dashboard.support import ADMIN_TOKEN, new_account
from tests.dashboard.test_browser import LIVE_WITHIN_MS, sign_in
from tests.e2e.helpers import auth
from tests.e2e.test_cli import wait_healthy
from tests.support import TEST_POLICY, RunningGateway, free_port, service_unavailable, start_gateway

pytestmark = pytest.mark.redis

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("GATEWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    """The test Redis (GATEWAY_TEST_REDIS_URL); skips (fails under CI) when it is down."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        service_unavailable(f"Redis not reachable at {REDIS_URL} ({exc})")
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def two_gateways(tmp_path: Path, upstream_env: dict[str, str], redis_url: str
                 ) -> Iterator[tuple[RunningGateway, str]]:
    """(the page's gateway, in this process; the URL of a `gateway serve` child process), both
    on one SQLite file and one Redis."""
    database = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = {**upstream_env, "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN, "GATEWAY_REDIS_URL": redis_url,
              "GATEWAY_KEY_CACHE_TTL_S": "0"}
    page_gw = start_gateway(tmp_path, {**shared, "GATEWAY_STREAM_POLL_S": "300"},
                            database_url=database)  # migrates the shared file first
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GATEWAY_", "OPENAI_", "ANTHROPIC_"))}
    env.update(shared, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH"))
                                                 if p),
               GATEWAY_DATABASE_URL=database, GATEWAY_POLICY_PATH=str(TEST_POLICY),
               GATEWAY_LOG_LEVEL="warning")
    port = free_port()
    with (tmp_path / "other.log").open("w") as log:
        other = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True)
    try:
        wait_healthy(other, f"http://127.0.0.1:{port}")
        yield page_gw, f"http://127.0.0.1:{port}"
    finally:
        other.terminate()
        try:
            other.wait(timeout=15)
        except subprocess.TimeoutExpired:
            other.kill()
            other.wait(timeout=5)
        page_gw.stop()


def test_a_grant_made_in_another_process_appears_live_through_redis(
        two_gateways: tuple[RunningGateway, str], page: Any) -> None:
    page_gw, other_url = two_gateways
    account, key = new_account(page_gw.url, minutes=1)
    sign_in(page, page_gw, key)
    page.wait_for_selector("#live-status.ok")  # the stream is open
    page.evaluate("window.__same_document = true")
    before = int(page.get_by_test_id("balance-total").get_attribute("data-value"))
    with httpx.Client(headers=auth(ADMIN_TOKEN), timeout=10) as client:
        assert client.get(f"{other_url}/v1/admin/accounts/{account}").status_code == 200
        r = client.post(f"{other_url}/v1/admin/accounts/{account}/grants",
                        json={"minutes": 30, "idempotency_key": f"redis-live-{account}"})
    assert r.status_code == 201, r.text
    page.wait_for_selector(f"[data-testid=balance-total][data-value='{before + 1800}']",
                           timeout=LIVE_WITHIN_MS)
    assert page.evaluate("window.__same_document") is True  # no reload happened
    api = httpx.get(f"{page_gw.url}/v1/billing/balance/{account}", headers=auth(key)).json()
    assert api["totals"]["total_seconds"] == before + 1800
