"""The 402 of SPEC §7, built by a pure function from the shortfall, the catalog and the token."""

from __future__ import annotations

from typing import Any

from gateway.problems import InsufficientBalance, InsufficientCredits, InsufficientTokens
from policies.schema import CatalogSpec
from policies.units import TIME, UnitKind, UnitOfAccount
from storage.clock import MS_PER_MINUTE, MS_PER_SECOND, ceil_seconds, floor_seconds, iso_utc
from storage.ports import Shortfall


def available_text(units: int) -> str:
    """What is available, for people: whole seconds rounded down — except that an amount above
    zero never reads as zero (`less than 1 s is available`, not `0 s`)."""
    if 0 < units < MS_PER_SECOND:
        return "less than 1 s is available"
    n = floor_seconds(units)
    return f"{n} s is available" if n == 1 else f"{n} s are available"


def suggestions_for(
    deficit_ms: int, catalog: CatalogSpec, plan_key: str | None, unit: UnitOfAccount = TIME
) -> list[dict[str, Any]]:
    """Purchase suggestions covering `deficit_ms` (ledger units of `unit`): the smallest package
    whose amount covers the deficit (else the largest), then an upgrade to the next subscription
    above the current plan (seeds: InsufficientFundsError.suggestions). A package names its
    `minutes` in time deployments, else its amount in the unit (`credits` or `tokens`)."""
    out: list[dict[str, Any]] = []
    packages = sorted(catalog.packages, key=lambda p: p.ledger_units(unit))
    if packages:
        if unit.kind is UnitKind.TIME:
            need_min = -(-deficit_ms // MS_PER_MINUTE)
            pick = next((p for p in packages if p.minutes >= need_min), packages[-1])
            out.append({"type": "package", "key": pick.key, "minutes": pick.minutes})
        else:
            pick = next((p for p in packages if p.ledger_units(unit) >= deficit_ms),
                        packages[-1])
            name = "credits" if unit.kind is UnitKind.CURRENCY else "tokens"
            out.append({"type": "package", "key": pick.key,
                        **unit.json_fields(name, pick.ledger_units(unit))})
    subs = sorted(catalog.subscriptions, key=lambda s: s.ledger_units(unit))
    current = next((s for s in subs if s.plan == plan_key), None)
    above = [s for s in subs
             if current is None or s.ledger_units(unit) > current.ledger_units(unit)]
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
    """The 402 problem with every field of SPEC §7. `required_seconds` is rounded up (what the
    call needs), `balance_seconds` down (what is available, as the balance's totals), and
    `breakdown_seconds` splits it as the balance does: `bonus_daily` the daily bucket's
    seconds, `paid` the rest, summing to `balance_seconds`. The `detail` never calls a non-zero
    amount zero (`less than 1 s is available`). `limit_source` says what refused (issue 10):
    `account` (its balance), `key` (the API key's limit) or `end_user` (the end user's)."""
    required = ceil_seconds(shortfall.required)
    balance = floor_seconds(shortfall.available)
    bonus_daily = min(balance, floor_seconds(shortfall.daily))
    limited = {"key": "this API key's spending limit", "end_user": "this end user's daily limit"}
    where = limited.get(shortfall.limit_source)
    error = InsufficientBalance(
        f"This request needs about {required} s; {available_text(shortfall.available)}"
        + (f" under {where}." if where else "."),
        error="INSUFFICIENT_AI_TIME",
        http_status=402,
        balance_seconds=balance,
        required_seconds=required,
        breakdown_seconds={"bonus_daily": bonus_daily, "paid": balance - bonus_daily},
        # buying credit does not lift a key's or an end user's limit: nothing to suggest then
        suggestions=suggestions_for(shortfall.required - shortfall.available, catalog, plan_key)
        if where is None else [],
        catalog_version=catalog.version,
        resume_token=resume_token,
        resume_expires_at=iso_utc(resume_expires_at_ms),
        limit_source=shortfall.limit_source,
    )
    error.operation_id = operation_id  # type: ignore[attr-defined]
    return error


def insufficient_balance(
    shortfall: Shortfall,
    *,
    unit: UnitOfAccount,
    operation_id: str,
    catalog: CatalogSpec,
    plan_key: str | None,
    resume_token: str,
    resume_expires_at_ms: int,
) -> InsufficientBalance:
    """The 402 in the deployment's unit. Time: `insufficient_ai_time` unchanged. Currency and
    tokens (issue 10): `error` INSUFFICIENT_CREDITS / INSUFFICIENT_TOKENS, `unit` (`USD`,
    `tokens`), `balance` (available, exact) and `required` (the estimate) as numbers with
    `*_micros` integer twins for a currency, `breakdown` {bonus_daily, paid} summing to
    `balance`, and the same suggestions, catalog version and resume token."""
    if unit.kind is UnitKind.TIME:
        return insufficient_ai_time(
            shortfall, operation_id=operation_id, catalog=catalog, plan_key=plan_key,
            resume_token=resume_token, resume_expires_at_ms=resume_expires_at_ms)
    available = max(0, shortfall.available)
    daily = min(available, max(0, shortfall.daily))
    kind: type[InsufficientBalance] = (
        InsufficientCredits if unit.kind is UnitKind.CURRENCY else InsufficientTokens)
    error = kind(
        f"This request needs about {unit.to_text(shortfall.required)} {unit.api_name}; "
        f"{unit.to_text(available)} {unit.api_name} available.",
        error=unit.error_code,
        http_status=402,
        unit=unit.api_name,
        **unit.json_fields("balance", available),
        **unit.json_fields("required", shortfall.required),
        breakdown={**unit.json_fields("bonus_daily", daily),
                   **unit.json_fields("paid", available - daily)},
        suggestions=suggestions_for(shortfall.required - available, catalog, plan_key, unit),
        catalog_version=catalog.version,
        resume_token=resume_token,
        resume_expires_at=iso_utc(resume_expires_at_ms),
    )
    error.operation_id = operation_id  # type: ignore[attr-defined]
    return error
