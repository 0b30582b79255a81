"""Browser fixtures of the dashboard tests: Debian's Chromium (`apt-get install chromium`),
driven by Playwright (never a downloaded browser build). Where Chromium or Playwright is missing
the browser tests SKIP with a line saying so — except under `CI` or
`GATEWAY_REQUIRE_BROWSER=1`, where they FAIL (CI installs Chromium and must run them)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path(os.environ.get("GATEWAY_CHROMIUM", "/usr/bin/chromium"))


def browser_required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("GATEWAY_REQUIRE_BROWSER") == "1"


def _missing(reason: str) -> None:
    if browser_required():
        pytest.fail(f"{reason} (browser tests are required here: CI / GATEWAY_REQUIRE_BROWSER)")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """A headless Chromium (Playwright's Browser), shared by the tests of one module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        _missing(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses root
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=args)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser tab (1280×900); fails the test on any script error of the page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    tab = context.new_page()
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    yield tab
    context.close()
    assert errors == [], f"script errors on the page: {errors}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # type: ignore[no-untyped-def]
    """Say plainly when the browser tests did not run."""
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if "tests/dashboard/test_browser" in r.nodeid]
    if skipped:
        terminalreporter.write_sep("=", "browser tests that did NOT run", yellow=True)
        terminalreporter.write_line(
            f"  {len(skipped)} dashboard browser tests skipped: no Chromium at {CHROMIUM} or no "
            "playwright. Install with `apt-get install chromium` to run them; CI requires them.")
