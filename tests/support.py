"""Test support: a real gateway on a real socket (uvicorn in a background thread) and a
synchronous handle on its ledger for arranging and asserting balances."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from gateway.app import create_app
from gateway.settings import Settings
from policies.compiled import Plan, load_policy
from storage import migrate
from storage.engine.buckets import Source
from storage.ports import BalanceSnapshot
from storage.sql.ledger import SqlLedger

HERE = Path(__file__).parent
TEST_POLICY = HERE / "e2e" / "policies.yaml"


def services_required() -> bool:
    """True where PostgreSQL and Redis must be there (CI, or GATEWAY_REQUIRE_SERVICES=1)."""
    return bool(os.environ.get("CI")) or os.environ.get("GATEWAY_REQUIRE_SERVICES") == "1"


def service_unavailable(message: str) -> None:
    """A real service is missing: skip with a reason saying so, but fail where services are
    required (CI must never pass by skipping them)."""
    message += "; real-service tests did not run"
    if services_required():
        pytest.fail(message + " — CI / GATEWAY_REQUIRE_SERVICES=1 requires them", pytrace=False)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ManualClock:
    """A clock the test moves (epoch ms): `clock()` reads it, `clock.advance(ms)` moves it.
    Pass it as `SqlLedger(url, clock=clock)` so a test sits exactly on a time boundary (a hold's
    lease, a bucket's expiry) instead of sleeping past it and hoping the machine keeps up."""

    def __init__(self, start_ms: int) -> None:
        self.now_ms = start_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


class LedgerHandle:
    """Synchronous access to the gateway's database from test code (own engine, own loop)."""

    def __init__(self, url: str, plans: Mapping[str, Plan]) -> None:
        self.url = url
        self.plans = plans

    def _run(self, fn: Any) -> Any:
        async def go() -> Any:
            ledger = SqlLedger(self.url)
            try:
                return await fn(ledger)
            finally:
                await ledger.close()

        return asyncio.run(go())

    def account(self, plan: str = "payg") -> str:
        return self._run(lambda lg: lg.create_account(self.plans[plan]))

    def key(self, account_id: str) -> str:
        return self._run(lambda lg: lg.create_api_key(account_id))[1]

    def grant(self, account_id: str, units: int, source: Source = Source.GIFT,
              key: str | None = None, expires_at_ms: int | None = None) -> Any:
        import secrets

        return self._run(lambda lg: lg.grant(account_id, source, units,
                                             key or "test:" + secrets.token_hex(6),
                                             expires_at_ms, "test grant"))

    def balance(self, account_id: str) -> BalanceSnapshot:
        return self._run(lambda lg: lg.balance(account_id))

    def usage(self, account_id: str, limit: int = 100) -> list[dict[str, Any]]:
        return self._run(lambda lg: lg.usage(account_id, limit))

    def totals(self, account_id: str) -> dict[str, int]:
        return self._run(lambda lg: lg.totals(account_id))

    def funded(self, units: int, plan: str = "payg") -> tuple[str, str]:
        """A new account on `plan` with `units` of gift credit, and an API key for it."""
        account = self.account(plan)
        if units:
            self.grant(account, units)
        return account, self.key(account)


@dataclass
class RunningGateway:
    """A gateway serving on 127.0.0.1:`port` in a background thread."""

    url: str
    settings: Settings
    ledger: LedgerHandle
    app: Any
    _server: uvicorn.Server
    _thread: threading.Thread
    extra: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def start_gateway(
    tmp_path: Path, env: Mapping[str, str], policy_paths: list[Path] | None = None,
    database_url: str | None = None, policy_transform: Any = None,
) -> RunningGateway:
    """Migrate a fresh database and serve a gateway on a free port (returns when it is up).
    `policy_transform(policy) -> policy` adjusts the compiled policy before serving (e.g. a
    unit of account the YAML cannot express yet)."""
    db_url = database_url or f"sqlite:///{tmp_path / 'gateway.db'}"
    paths = policy_paths or [TEST_POLICY]
    port = free_port()
    # The listen address is in the settings, as `gateway serve` puts it there (problem `type`
    # URLs are built from it).
    full_env = {"GATEWAY_DATABASE_URL": db_url,
                "GATEWAY_POLICY_PATH": ",".join(str(p) for p in paths),
                "GATEWAY_KEY_CACHE_TTL_S": "0", "GATEWAY_HOST": "127.0.0.1",
                "GATEWAY_PORT": str(port), **env}
    settings = Settings.from_env(full_env)
    migrate.upgrade(db_url)
    policy = load_policy(settings.policy_paths, settings.env)
    if policy_transform is not None:
        policy = policy_transform(policy)
    app = create_app(settings, policy)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                            access_log=False, lifespan="on", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("gateway did not start")
        time.sleep(0.01)
    return RunningGateway(url=f"http://127.0.0.1:{port}", settings=settings,
                          ledger=LedgerHandle(db_url, policy.plans), app=app,
                          _server=server, _thread=thread)
