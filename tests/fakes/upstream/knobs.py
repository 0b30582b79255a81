"""Knobs: behaviour chosen by hyphen-separated suffixes of the request's ``model``."""

from __future__ import annotations

from typing import Any

KNOBS: frozenset[str] = frozenset(
    {"paced", "slow", "hang", "fail500", "fail429", "reset", "midreset", "nousage",
     "usagedelta", "usagefinish"}
)
PACED_INTERVAL_S = 0.005
"""Gap between SSE events for ``-paced`` (seconds)."""
SLOW_INTERVAL_S = 0.05
"""Gap between SSE events for ``-slow`` (seconds)."""
HANG_S = 3600.0
"""How long ``-hang`` waits before giving up (seconds)."""


def knobs_for(model: Any) -> frozenset[str]:
    """Knobs named by trailing ``-knob`` segments of a model string."""
    if not isinstance(model, str):
        return frozenset()
    found: set[str] = set()
    segments = model.split("-")
    while len(segments) > 1 and segments[-1] in KNOBS:
        found.add(segments.pop())
    return frozenset(found)


def interval_s(knobs: frozenset[str]) -> float:
    """Gap between SSE events for these knobs (seconds)."""
    if "slow" in knobs:
        return SLOW_INTERVAL_S
    if "paced" in knobs:
        return PACED_INTERVAL_S
    return 0.0


def half(n: int) -> int:
    """How many of ``n`` content chunks a ``-midreset`` stream sends."""
    return min(n, max(1, n // 2))
