"""`gateway reconcile --stripe --from WHEN --to WHEN [--apply] [--json]`: the reconciliation of
gateway.invoicing.reconcile run from the command line, on the services a gateway process
builds (gateway.app.build_services), with the report stored as the admin API stores it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from gateway.app import build_services
from gateway.invoicing.reconcile import reconcile
from gateway.settings import Settings
from policies.compiled import Policy
from storage.clock import now_ms, to_ms


def _when(text: str | None, flag: str) -> datetime:
    if not text:
        raise ValueError(f"{flag} is required with --stripe (RFC 3339 or YYYY-MM-DD)")
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{flag} {text!r} is not RFC 3339 or YYYY-MM-DD") from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def period_of(from_: str | None, to: str | None) -> tuple[int, int]:
    """(from, to) epoch ms of the flags (naive times are UTC). Raises ValueError naming the
    flag for a missing or malformed time, or an empty or over-a-year period."""
    start, end = _when(from_, "--from"), _when(to, "--to")
    if not start < end or (end - start).days > 366:
        raise ValueError("--from must be before --to, at most 366 days apart")
    return to_ms(start), to_ms(end)


async def reconcile_stripe(settings: Settings, policy: Policy, from_ms: int, to_ms_: int,
                           apply: bool) -> dict[str, Any]:
    """Run one reconciliation and return its stored report. Raises ReconcileError,
    StoreUnavailable."""
    services = await build_services(settings, policy)
    try:
        assert services.records is not None
        return await reconcile(services, services.records, from_ms, to_ms_, apply, now_ms())
    finally:
        await services.topups.close()
        await services.bus.close()
        await services.upstream.close()
        await services.ledger.close()
        close = getattr(services.resume, "close", None)
        if close is not None:
            await close()


def summary(report: dict[str, Any]) -> str:
    """A few lines for people: counts, then each difference."""
    lines = [f"report {report['id']}: {report['from']} to {report['to']}; Stripe "
             f"{report['stripe']['paid_invoices']} paid invoices, {report['stripe']['charges']} "
             f"charges, {report['stripe']['refunds']} refunds; {report['matched']} matched"]
    for name in ("paid_not_credited", "credited_not_paid", "amount_mismatches"):
        items = report[name]
        lines.append(f"{name}: {len(items)}")
        for item in items:
            applied = f" -> {item['applied']}" if item.get("applied") else ""
            lines.append(f"  {item['kind']} {item['object_id']} account "
                         f"{item.get('account_id') or '?'}{applied}")
    return "\n".join(lines)
