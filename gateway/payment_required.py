"""The 402 of SPEC §7, built by a pure function from the shortfall, the catalog and the token."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.problems import InsufficientBalance
from policies.schema import CatalogSpec
from storage.ports import Shortfall

MS_PER_SECOND = 1000


def ceil_seconds(units: int) -> int:
    """Ledger units (ms) → whole seconds, rounded up (what a call *needs*)."""
    return -(-units // MS_PER_SECOND)


def floor_seconds(units: int) -> int:
    """Ledger units (ms) → whole seconds, rounded down (what is *available*)."""
    return max(0, units) // MS_PER_SECOND


def iso_utc(ms: int) -> str:
    """Epoch ms → RFC 3339 UTC with a Z suffix, second precision."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def suggestions_for(
    deficit_ms: int, catalog: CatalogSpec, plan_key: str | None
) -> list[dict[str, Any]]:
    """Purchase suggestions covering `deficit_ms`: the smallest package whose minutes cover the
    deficit (else the largest), then an upgrade to the next subscription above the current plan
    (seeds: InsufficientFundsError.suggestions)."""
    out: list[dict[str, Any]] = []
    packages = sorted(catalog.packages, key=lambda p: p.minutes)
    if packages:
        need_min = -(-deficit_ms // 60_000)
        pick = next((p for p in packages if p.minutes >= need_min), packages[-1])
        out.append({"type": "package", "key": pick.key, "minutes": pick.minutes})
    subs = sorted(catalog.subscriptions, key=lambda s: s.minutes)
    current = next((s for s in subs if s.plan == plan_key), None)
    above = [s for s in subs if current is None or s.minutes > current.minutes]
    if above:
        out.append({"type": "upgrade", "plan": above[-1].plan})
    return out


def insufficient_ai_time(
    shortfall: Shortfall,
    *,
    operation_id: str,
    catalog: CatalogSpec,
    plan_key: str | None,
    resume_token: str,
    resume_expires_at_ms: int,
) -> InsufficientBalance:
    """The 402 problem with every field of SPEC §7 (seconds are whole seconds)."""
    required = ceil_seconds(shortfall.required)
    balance = floor_seconds(shortfall.available)
    error = InsufficientBalance(
        f"This request needs about {required} s; {balance} s are available.",
        error="INSUFFICIENT_AI_TIME",
        http_status=402,
        balance_seconds=balance,
        required_seconds=required,
        breakdown_seconds={
            "bonus_daily": floor_seconds(shortfall.daily),
            "paid": floor_seconds(shortfall.paid),
        },
        suggestions=suggestions_for(shortfall.required - shortfall.available, catalog, plan_key),
        catalog_version=catalog.version,
        resume_token=resume_token,
        resume_expires_at=iso_utc(resume_expires_at_ms),
    )
    error.operation_id = operation_id  # type: ignore[attr-defined]
    return error
