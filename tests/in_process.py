"""A gateway served in this process and loop, on the in-process store (`memory://`), reached
through httpx's ASGITransport: no socket on the gateway's side, so a test (or a CPU
measurement) sees only the gateway's own work. Upstreams are real (the fake upstream)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gateway.app import MEMORY_URL, Gateway
from gateway.services import Services
from gateway.settings import Settings
from storage.engine.buckets import Source
from tests.support import TEST_POLICY


@dataclass
class InProcessGateway:
    """A started gateway: `client` calls it, `services` are its running services."""

    app: Gateway
    services: Services
    client: httpx.AsyncClient

    async def funded(self, units: int, plan: str = "payg") -> tuple[str, str]:
        """A new account on `plan` with `units` of gift credit (0: none), and an API key."""
        s = self.services
        account = await s.accounts.create_account(s.policy.plans[plan])
        if units:
            await s.ledger.grant(account, Source.GIFT, units, f"gift:{account}", None, "gift")
        _key_id, key = await s.accounts.create_api_key(account)
        return account, key


@asynccontextmanager
async def in_process_gateway(tmp_path: Path, env: Mapping[str, str],
                             policy_path: Path = TEST_POLICY,
                             **app_options: Any) -> AsyncIterator[InProcessGateway]:
    """Run the app's lifespan around the block; `app_options` go to `Gateway` (e.g.
    `span_exporter`)."""
    settings = Settings.from_env({"GATEWAY_POLICY_PATH": str(policy_path),
                                  "GATEWAY_UNBILLED_PATH": str(tmp_path / "unbilled.jsonl"),
                                  "GATEWAY_KEY_CACHE_TTL_S": "60", **env})
    app = Gateway(settings.model_copy(update={"database_url": MEMORY_URL}), **app_options)
    async with app.web.router.lifespan_context(app.web):
        assert app.services is not None
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # dict scope
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test",
                                     timeout=10) as client:
            yield InProcessGateway(app, app.services, client)
