"""Shared fixtures: the fake upstream (one per session) and a real gateway per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.support import RunningGateway, start_gateway


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as up:
        yield up


@pytest.fixture
def upstream_env(upstream: FakeUpstream) -> dict[str, str]:
    upstream.clear()
    upstream.delay_ms = 0
    return {"OPENAI_BASE_URL": upstream.url + "/v1", "OPENAI_API_KEY": "sk-upstream-openai",
            "ANTHROPIC_BASE_URL": upstream.url, "ANTHROPIC_API_KEY": "sk-upstream-anthropic"}


@pytest.fixture
def gateway(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[RunningGateway]:
    gw = start_gateway(tmp_path, upstream_env)
    try:
        yield gw
    finally:
        gw.stop()


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """Say plainly which real-service tests did not run (machines without PostgreSQL/Redis)."""
    skipped = terminalreporter.stats.get("skipped", [])
    missing = [r for r in skipped
               if any(m in r.keywords for m in ("postgres", "redis"))]
    if missing:
        terminalreporter.write_sep("=", "real-service tests that did NOT run", yellow=True)
        for report in missing:
            terminalreporter.write_line(f"  not run: {report.nodeid}")
        terminalreporter.write_line(
            "  Start PostgreSQL (127.0.0.1:5432, database test) and Redis (127.0.0.1:6379) "
            "to run them; CI requires them.")
