"""Every adapter implements its ports (storage.ports) to the letter: each method of a port exists
on the adapter with the same parameters — names, kinds and defaults — so the gateway can be
wired to any of them (gateway.app.build_services) and a call that works on one works on all."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from gateway.event_bus import EventBus as InProcessEventBus
from gateway.event_bus import RedisEventBus
from gateway.rate_limits import RedisCounters
from storage import ports
from storage.memory.billing_records import MemoryBillingRecords
from storage.memory.console import MemoryConsole
from storage.memory.counters import InProcessCounters
from storage.memory.ledger import MemoryLedger
from storage.memory.nonces import InProcessNonces
from storage.memory.notifications import MemoryAlerts, MemoryWebhooks
from storage.memory.payments import MemoryPayments
from storage.memory.resume_tokens import InProcessResumeTokens
from storage.memory.sessions import MemorySessions
from storage.redis_state import RedisResumeTokens
from storage.sql.billing_records import SqlBillingRecords
from storage.sql.console import SqlConsole
from storage.sql.ledger import SqlLedger
from storage.sql.nonces import SqlNonces
from storage.sql.notifications import SqlAlerts, SqlWebhooks
from storage.sql.payments import SqlPayments
from storage.sql.resume_tokens import SqlResumeTokens
from storage.sql.sessions import SqlSessions

ADAPTERS: dict[type, list[type]] = {
    ports.Ledger: [SqlLedger, MemoryLedger],
    ports.Accounts: [SqlLedger, MemoryLedger],
    ports.EventLog: [SqlLedger, MemoryLedger],
    ports.Inspection: [SqlLedger, MemoryLedger],
    ports.Payments: [SqlPayments, MemoryPayments],
    ports.BillingRecords: [SqlBillingRecords, MemoryBillingRecords],
    ports.ResumeTokenStore: [SqlResumeTokens, InProcessResumeTokens, RedisResumeTokens],
    ports.NonceStore: [SqlNonces, InProcessNonces],
    ports.Counters: [InProcessCounters, RedisCounters],
    ports.EventBus: [InProcessEventBus, RedisEventBus],
    ports.DashboardSessions: [SqlSessions, MemorySessions],
    ports.ConsoleQueries: [SqlConsole, MemoryConsole],
    ports.Alerts: [SqlAlerts, MemoryAlerts],
    ports.Webhooks: [SqlWebhooks, MemoryWebhooks],
}


def _members(port: type) -> dict[str, Any]:
    return {name: value for name, value in vars(port).items()
            if not name.startswith("_") and (callable(value) or isinstance(value, property))}


def _parameters(fn: Any) -> list[tuple[str, Any, Any]]:
    params = list(inspect.signature(fn).parameters.values())[1:]  # without self
    return [(p.name, p.kind, p.default) for p in params]


CASES = [(port, adapter, name) for port, adapters in ADAPTERS.items() for adapter in adapters
         for name in _members(port)]


@pytest.mark.parametrize(("port", "adapter", "name"), CASES,
                         ids=[f"{a.__name__}.{n}" for _, a, n in CASES])
def test_an_adapter_has_every_method_of_its_port_with_the_same_parameters(
        port: type, adapter: type, name: str) -> None:
    wanted = _members(port)[name]
    got = getattr(adapter, name, None)
    assert got is not None, f"{adapter.__name__} lacks {port.__name__}.{name}"
    if isinstance(wanted, property):
        assert isinstance(got, property), f"{adapter.__name__}.{name} is not a property"
        return
    assert inspect.iscoroutinefunction(got) == inspect.iscoroutinefunction(wanted), name
    assert _parameters(got) == _parameters(wanted)


def test_every_port_has_adapters() -> None:
    declared = {v for v in vars(ports).values()
                if isinstance(v, type) and getattr(v, "_is_protocol", False)
                and v.__module__ == ports.__name__}
    declared -= {ports.PlanTerms, ports.Subscription}  # shapes of arguments, not stores
    assert declared == set(ADAPTERS)
