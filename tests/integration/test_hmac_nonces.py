"""HMAC nonces across a Redis outage, on SQLite and PostgreSQL: a nonce is accepted once, full
stop — whether Redis was up or down when it was first used, and whichever process sees the
replay (SPEC §8). Real gateways on real sockets with the real Redis: one gateway whose Redis is
the shared server, one whose Redis is unreachable, and a throwaway redis-server killed mid-test.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.hmac_auth import header_for
from tests.production._support import RedisServer, require_redis
from tests.support import RunningGateway, start_gateway

pytestmark = pytest.mark.redis

SECRET = "n" * 40
SHARED_REDIS = "redis://127.0.0.1:6379/12"
DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1: every call fails at once


def _gateway(tmp_path: Path, name: str, env: dict[str, str], database_url: str,
             redis_url: str) -> RunningGateway:
    directory = tmp_path / name
    directory.mkdir()
    return start_gateway(directory, {**env, "GATEWAY_HMAC_KEYS": f"k1:{SECRET}",
                                     "GATEWAY_REDIS_URL": redis_url},
                         database_url=database_url)


def _balance(gw: RunningGateway, account: str, nonce: str) -> httpx.Response:
    path = f"/v1/billing/balance/{account}"
    header = header_for("k1", SECRET, "GET", path, "", b"", nonce)
    return httpx.get(gw.url + path, headers={"x-hmac-signature": header}, timeout=10)


def _replay_refused(r: httpx.Response) -> bool:
    return r.status_code == 401 and "nonce" in r.json()["detail"]


@pytest.fixture
def redis_up_and_down(tmp_path: Path, ledger_url: str,
                      upstream_env: dict[str, str]) -> Iterator[tuple[RunningGateway,
                                                                      RunningGateway]]:
    """Two gateways on one database: the first reaches Redis, the second's Redis is down."""
    require_redis(SHARED_REDIS)
    up = _gateway(tmp_path, "up", upstream_env, ledger_url, SHARED_REDIS)
    down = _gateway(tmp_path, "down", upstream_env, ledger_url, DEAD_REDIS)
    try:
        yield up, down
    finally:
        up.stop()
        down.stop()


def test_a_nonce_used_while_redis_is_up_is_refused_while_redis_is_down(redis_up_and_down):
    up, down = redis_up_and_down
    account, _ = up.ledger.funded(1_000)
    nonce = secrets.token_urlsafe(16)
    assert _balance(up, account, nonce).status_code == 200
    assert _replay_refused(_balance(down, account, nonce))
    assert _replay_refused(_balance(up, account, nonce))
    assert _balance(down, account, secrets.token_urlsafe(16)).status_code == 200  # still served


def test_a_nonce_used_while_redis_is_down_is_refused_while_redis_is_up(redis_up_and_down):
    up, down = redis_up_and_down
    account, _ = up.ledger.funded(1_000)
    nonce = secrets.token_urlsafe(16)
    assert _balance(down, account, nonce).status_code == 200
    assert _replay_refused(_balance(up, account, nonce))
    assert _replay_refused(_balance(down, account, nonce))


def test_a_nonce_survives_its_gateways_redis_dying_and_coming_back_empty(
    tmp_path: Path, ledger_url: str, upstream_env: dict[str, str],
) -> None:
    server = RedisServer()
    server.start()
    gw = _gateway(tmp_path, "one", upstream_env, ledger_url, server.url)
    try:
        account, _ = gw.ledger.funded(1_000)
        before = secrets.token_urlsafe(16)
        assert _balance(gw, account, before).status_code == 200
        server.kill()
        assert _replay_refused(_balance(gw, account, before))
        during = secrets.token_urlsafe(16)
        assert _balance(gw, account, during).status_code == 200
        server.start()  # same port, no data
        assert _replay_refused(_balance(gw, account, before))
        assert _replay_refused(_balance(gw, account, during))
    finally:
        gw.stop()
        server.destroy()
