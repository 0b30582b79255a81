"""Fixtures of the production-path tests: real `gateway serve` processes, fresh PostgreSQL
databases, the shared Redis (its own database index), throwaway PostgreSQL/Redis servers a test
may stop, and a fake upstream. Everything started here is stopped at teardown, and the teardown
checks that no gateway process group survived."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.production._support import (
    Gateways,
    PgCluster,
    RedisServer,
    create_database,
    drop_database,
    flush_redis,
    shared_redis_url,
)


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """A fake upstream of this test's own (its `delay_ms` and request log are not shared)."""
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, migrated database on the shared PostgreSQL (dropped afterwards)."""
    name, url = create_database()
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def pg_url_unmigrated() -> Iterator[str]:
    """A fresh, EMPTY database on the shared PostgreSQL: `gateway serve` migrates it."""
    name, url = create_database(migrated=False)
    try:
        yield url
    finally:
        drop_database(name)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The shared Redis on the tests' own database index, flushed before and after."""
    url = shared_redis_url()
    try:
        yield url
    finally:
        flush_redis(url)


@pytest.fixture
def pg_cluster() -> Iterator[PgCluster]:
    """A running throwaway PostgreSQL cluster (removed afterwards)."""
    cluster = PgCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A running throwaway redis-server (killed afterwards)."""
    server = RedisServer()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def gateways(tmp_path: Path) -> Iterator[Gateways]:
    """`gateways.start(n, policy, env)`; every process group is gone after the test."""
    log_dir = tmp_path / "gw"
    log_dir.mkdir()
    gws = Gateways(log_dir)
    try:
        yield gws
    finally:
        gws.stop_all()
        left = [p.pid for p in gws.started if p.group_alive()]
        assert not left, f"gateway process groups still alive after teardown: {left}"
