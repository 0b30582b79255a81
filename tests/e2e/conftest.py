"""End-to-end fixtures: `shop`, a gateway with Stripe configured against a respx mock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import respx

from tests.e2e.stripe_support import stripe_gateway
from tests.support import RunningGateway


@pytest.fixture
def shop(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[tuple[RunningGateway,
                                                                         respx.MockRouter]]:
    with stripe_gateway(tmp_path, upstream_env) as shop_and_router:
        yield shop_and_router
