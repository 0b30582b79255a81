"""The policy's part of low-balance alerts (issue 11 item 7): each plan's default threshold
(`plans.<key>.low_balance_threshold`, in the API's unit) converted to ledger units with the
deployment's unit of account, and how alert amounts are written (policies.units).
The crossing rule itself is storage.engine.alerts'."""

from __future__ import annotations

from policies.compiled import Policy
from policies.units import UnitKind
from storage.engine.alerts import AlertRules


def alert_rules(policy: Policy) -> AlertRules:
    """The store's AlertRules for `policy`: plan key → default threshold (ledger units; a
    threshold finer than the ledger unit is rounded up), rendered in `policy.unit`."""
    unit = policy.unit
    defaults = {key: unit.from_api(spec.low_balance_threshold, round_up=True)
                for key, spec in policy.document.plans.items()
                if spec.low_balance_threshold is not None}
    return AlertRules(defaults=defaults, render=unit.to_json, unit=unit.api_name,
                      amount_fields=None if unit.kind is UnitKind.TIME else unit.json_fields)
