"""Integration fixtures: one store per test, through the ports (storage.ports) — the in-memory
adapter, SQLite (a fresh file) and a real PostgreSQL (a fresh database `gw_it_<hex>`, dropped
afterwards; both migrated with Alembic). The contract suite (tests using `ledger`) runs on all
three; a module that is about SQL itself overrides `ledger_kind` with `SQL_STORES`.

PostgreSQL: `GATEWAY_TEST_POSTGRES_URL` is the admin URL of an existing database to create test
databases from (default postgresql://postgres@127.0.0.1:5432/test). When it is unreachable the
postgres tests SKIP with a reason saying so, except under `CI` or `GATEWAY_REQUIRE_SERVICES=1`,
where they FAIL: in CI the real-service tests must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy.engine import make_url

from policies.compiled import Plan
from storage import migrate
from storage.memory.ledger import MemoryLedger
from storage.ports import Payments
from storage.sql.ledger import SqlLedger
from tests.integration.stores import SQL_STORES, STORES, Ledger, payments_of
from tests.support import ManualClock, service_unavailable

T = TypeVar("T")

DEFAULT_POSTGRES_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"

_reachability: dict[str, str | None] = {}  # admin URL → None (reachable) or the error text


def postgres_admin_url() -> str:
    return os.environ.get("GATEWAY_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_ADMIN_URL




def _asyncpg_dsn(url: str) -> str:
    u = make_url(url)
    return u.set(drivername="postgresql").render_as_string(hide_password=False)


def _shown(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def run_in_thread(factory: Callable[[], Coroutine[Any, Any, T]] | Callable[[], T]) -> T:
    """Run a coroutine factory (or a sync callable that may itself call asyncio.run, like the
    Alembic env for asyncpg) on a fresh thread, so it never touches pytest-asyncio's loop."""

    def call() -> T:
        result = factory()
        if asyncio.iscoroutine(result):
            return asyncio.run(result)
        return result  # type: ignore[return-value]

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(call).result()


async def _admin_execute(admin_url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(_asyncpg_dsn(admin_url), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _probe(admin_url: str) -> str | None:
    try:
        import asyncpg
    except ImportError as exc:  # pragma: no cover - the postgres extra is not installed
        return f"asyncpg is not installed ({exc})"
    try:
        conn = await asyncpg.connect(_asyncpg_dsn(admin_url), timeout=3)
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return f"{type(exc).__name__}: {exc}"
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()
    return None


def require_postgres(admin_url: str) -> None:
    """Skip (or, under CI / GATEWAY_REQUIRE_SERVICES=1, fail) when PostgreSQL is unreachable."""
    if admin_url not in _reachability:
        _reachability[admin_url] = run_in_thread(lambda: _probe(admin_url))
    error = _reachability[admin_url]
    if error is None:
        return
    service_unavailable(f"PostgreSQL not reachable at {_shown(admin_url)} ({error})")


_MIGRATE_LOCK = threading.Lock()  # Alembic's `context` proxy is process-global: one at a time


def _upgrade(url: str) -> None:
    with _MIGRATE_LOCK:
        migrate.upgrade(url)


class PostgresDatabases:
    """Fresh, migrated databases `gw_it_<hex>` on the admin server, one per test.

    One background thread creates and migrates the next database while the current test runs,
    and drops finished ones (`DROP DATABASE … WITH (FORCE)`), so tests do not wait for DDL.
    """

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gw-it-pg")
        self._next: Future[str] | None = None
        self._pending: list[Future[None]] = []

    def url_of(self, name: str) -> str:
        return make_url(self.admin_url).set(drivername="postgresql+asyncpg", database=name) \
            .render_as_string(hide_password=False)

    def _create(self) -> str:
        name = "gw_it_" + secrets.token_hex(6)
        asyncio.run(_admin_execute(self.admin_url, f'CREATE DATABASE "{name}"'))
        try:
            _upgrade(self.url_of(name))
        except BaseException:
            self._drop(name)
            raise
        return name

    def _drop(self, name: str) -> None:
        asyncio.run(_admin_execute(self.admin_url,
                                   f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def take(self) -> str:
        """The name of a fresh migrated database (and start preparing the next one)."""
        ready = self._next or self._worker.submit(self._create)
        self._next = None
        name = ready.result()
        self._next = self._worker.submit(self._create)
        return name

    def release(self, name: str) -> None:
        self._pending.append(self._worker.submit(self._drop, name))

    def close(self) -> None:
        if self._next is not None:
            with contextlib.suppress(Exception):
                self.release(self._next.result())
        self._worker.shutdown(wait=True)
        for done in self._pending:
            done.result()  # surface a failed DROP


@pytest.fixture(scope="session")
def postgres_databases() -> Iterator[PostgresDatabases]:
    admin = postgres_admin_url()
    require_postgres(admin)
    dbs = PostgresDatabases(admin)
    try:
        yield dbs
    finally:
        dbs.close()


@contextlib.contextmanager
def fresh_database(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, migrated database: a sqlite file, or a new PostgreSQL database."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
        _upgrade(url)
        yield url
        return
    require_postgres(postgres_admin_url())
    dbs: PostgresDatabases = request.getfixturevalue("postgres_databases")
    name = dbs.take()
    try:
        yield dbs.url_of(name)
    finally:
        dbs.release(name)


@pytest.fixture(params=SQL_STORES)
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, migrated ledger database (sqlite file or a new PostgreSQL database)."""
    with fresh_database(request.param, request, tmp_path) as url:
        yield url


@pytest.fixture(params=STORES)
def ledger_kind(request: pytest.FixtureRequest) -> str:
    """Which store `ledger` is: memory, sqlite or postgres."""
    return str(request.param)


@pytest.fixture
def clock() -> ManualClock:
    """A ManualClock starting at a fixed instant (2025-06-15 12:00:00 UTC, mid-day)."""
    return ManualClock(1_749_988_800_000)


@pytest.fixture
async def ledger(ledger_kind: str, request: pytest.FixtureRequest,
                 tmp_path: Path) -> AsyncIterator[Ledger]:
    """The ledger under test, as shipped: a MemoryLedger, or a SqlLedger on a fresh database."""
    if ledger_kind == "memory":
        yield MemoryLedger()
        return
    with fresh_database(ledger_kind, request, tmp_path) as url:
        lg = SqlLedger(url)
        try:
            yield lg
        finally:
            await lg.close()


@pytest.fixture
def payments(ledger: Ledger) -> Payments:
    return payments_of(ledger)


@pytest.fixture
async def open_ledger(ledger: Ledger) -> AsyncIterator[Callable[..., Ledger]]:
    """`open_ledger(lease_s=…, clock=…)`: another ledger object on the same store — what another
    gateway process on the same database is (its own hold leases and caches)."""
    opened: list[Ledger] = []

    def make(**kw: Any) -> Ledger:
        other: Ledger = (MemoryLedger(ledger.store, **kw) if isinstance(ledger, MemoryLedger)
                         else SqlLedger(ledger.runner.url, **kw))
        opened.append(other)
        return other

    yield make
    for other in opened:
        await other.close()


# ---- reading what the ports do not answer (the Inspection port) ----------------------------


class Probe:
    """Raw reads of one ledger's store (the adapter's Inspection methods)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def allocations(self, account_id: str, key: str) -> list[tuple[str, str, int]]:
        """(bucket id, bucket source, amount) of the entry with idempotency `key`, in order."""
        return await self.ledger.allocation_rows(account_id, key)

    async def entries(self, account_id: str) -> list[dict[str, Any]]:
        return await self.ledger.entry_rows(account_id)

    async def buckets(self, account_id: str) -> list[dict[str, Any]]:
        """All buckets (expired and empty ones too)."""
        return await self.ledger.bucket_rows(account_id)

    async def usage_count(self, request_id: str) -> int:
        return 0 if await self.ledger.usage_row(request_id) is None else 1

    async def assert_invariant(self, account_id: str) -> dict[str, int]:
        """Σ remaining − debt == Σ deltas, and no bucket below zero (SPEC §3/§4)."""
        t = await self.ledger.totals(account_id)
        assert t["remaining"] - t["debt"] == t["deltas"], f"ledger invariant broken: {t}"
        assert t["debt"] >= 0, t
        assert [b for b in await self.ledger.bucket_rows(account_id) if b["remaining"] < 0] == []
        return t


@pytest.fixture
def probe(ledger: Ledger) -> Probe:
    return Probe(ledger)


@pytest.fixture
async def new_account(
    ledger: Ledger, probe: Probe
) -> AsyncIterator[Callable[[Plan], Awaitable[str]]]:
    """`await new_account(plan)` creates an account; after the test every account created this
    way is audited: Σ remaining − debt == Σ deltas, and no negative bucket."""
    created: list[str] = []

    async def make(plan: Plan) -> str:
        account_id = await ledger.create_account(plan)
        created.append(account_id)
        return account_id

    yield make
    for account_id in created:
        await probe.assert_invariant(account_id)
