"""The stores the integration tests run on, and the adapters that go with a ledger under test.

`STORES` parametrizes the contract suite (the `ledger` fixture): the in-memory adapter, SQLite
and PostgreSQL; `SQL_STORES` is for tests about SQL itself (a module overrides the `ledger_kind`
fixture with it)."""

from __future__ import annotations

import pytest

from storage.clock import Clock, now_ms
from storage.memory.billing_records import MemoryBillingRecords
from storage.memory.console import MemoryConsole
from storage.memory.ledger import MemoryLedger
from storage.memory.nonces import InProcessNonces
from storage.memory.payments import MemoryPayments
from storage.memory.sessions import MemorySessions
from storage.ports import BillingRecords, ConsoleQueries, DashboardSessions, NonceStore, Payments
from storage.sql.billing_records import SqlBillingRecords
from storage.sql.console import SqlConsole
from storage.sql.ledger import SqlLedger
from storage.sql.nonces import SqlNonces
from storage.sql.payments import SqlPayments
from storage.sql.sessions import SqlSessions

SQL_STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
STORES = ["memory", *SQL_STORES]

Ledger = MemoryLedger | SqlLedger
"""A ledger under test: the adapter of Ledger, Accounts, EventLog and Inspection."""


def payments_of(ledger: Ledger) -> Payments:
    """The Payments adapter on the same store as `ledger` (and on its clock)."""
    return MemoryPayments(ledger) if isinstance(ledger, MemoryLedger) else SqlPayments(ledger)


def nonces_of(ledger: Ledger) -> NonceStore:
    """A NonceStore on the same store as `ledger`, as a gateway process on it has."""
    if isinstance(ledger, MemoryLedger):
        return InProcessNonces(ledger.store)
    return SqlNonces(ledger.runner)


def records_of(ledger: Ledger) -> BillingRecords:
    """The BillingRecords adapter on the same store as `ledger`."""
    if isinstance(ledger, MemoryLedger):
        return MemoryBillingRecords(ledger)
    return SqlBillingRecords(ledger)


def sessions_of(ledger: Ledger, clock: Clock = now_ms) -> DashboardSessions:
    """A DashboardSessions adapter on the same store as `ledger`, stamped by `clock`."""
    if isinstance(ledger, MemoryLedger):
        return MemorySessions(ledger.store, clock)
    return SqlSessions(ledger.runner, clock)


def console_of(ledger: Ledger) -> ConsoleQueries:
    """The console's ConsoleQueries adapter on the same store as `ledger`."""
    return MemoryConsole(ledger.store) if isinstance(ledger, MemoryLedger) else SqlConsole(
        ledger.runner)
