"""The lease-renewal loop outlives any one failure: if it died, this process's live holds would
lapse and their balance become spendable again while their calls still run."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from gateway.app import _renew_leases
from gateway.metrics import Metrics


class FlakyLedger:
    """Fails its first two renewals (an unexpected error, then a store outage), then succeeds."""

    lease_s = 0.003

    def __init__(self) -> None:
        self.calls = 0
        self.renewed_after_failures = asyncio.Event()

    async def renew_leases(self) -> int:
        from storage.ports import StoreUnavailable

        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("deadlock detected")
        if self.calls == 2:
            raise StoreUnavailable("down")
        self.renewed_after_failures.set()
        return 1


async def test_lease_renewal_keeps_running_after_an_unexpected_error() -> None:
    ledger = FlakyLedger()
    metrics = Metrics()
    task = asyncio.ensure_future(_renew_leases(SimpleNamespace(ledger=ledger, metrics=metrics)))
    try:
        await asyncio.wait_for(ledger.renewed_after_failures.wait(), timeout=10)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert metrics.store_errors.labels("renew_leases")._value.get() == 2
