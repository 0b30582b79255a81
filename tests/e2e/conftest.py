"""End-to-end fixtures: `shop`, a gateway with Stripe configured against a respx mock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import respx

from tests.e2e.stripe_support import STRIPE_BASE, WEBHOOK_SECRET
from tests.support import RunningGateway, start_gateway


@pytest.fixture
def shop(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[tuple[RunningGateway,
                                                                         respx.MockRouter]]:
    gw = start_gateway(tmp_path, {**upstream_env, "STRIPE_SECRET_KEY": "sk_test_123",
                                  "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
                                  "STRIPE_API_BASE": STRIPE_BASE})
    with respx.mock(assert_all_mocked=True, assert_all_called=False) as router:
        router.route(url__startswith=gw.url).pass_through()
        router.route(url__startswith=upstream_env["ANTHROPIC_BASE_URL"]).pass_through()
        yield gw, router
    gw.stop()
