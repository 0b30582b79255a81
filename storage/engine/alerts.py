"""Low-balance alerts (issue 11 item 7; seeds 003 "low balance alerts/notifications" and 004
"usage_alerts"): when a balance change crosses the account's threshold, and what it says.

Rules, in sentences:
- The watched balance is the account's settled available balance: live buckets − debt, in
  ledger units. Holds of calls in flight are not counted: they are estimates that settlement
  gives back, and an alert must not fire on an estimate.
- An account is in one of three alert states: `ok` (balance ≥ threshold and > 0), `low`
  (0 < balance < threshold) and `depleted` (balance ≤ 0).
- Each crossing fires its event once: `balance.low` when the balance falls below the
  threshold, `balance.depleted` when it reaches zero (a change that does both fires both, low
  first; with a threshold of 0 only depletion), `balance.recovered` when it rises back to the
  threshold or above (and above zero).
- An alert is re-armed only by a recovery: a depleted account credited to a balance still
  below its threshold fires nothing, and a low account stays low until it recovers.
- A threshold of 0 (none set, no plan default) watches only depletion and recovery from it.
The state is kept on the account and decided in the same transaction as the balance change
(every adapter calls `crossing`), so concurrent changes fire one event per crossing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

BALANCE_LOW = "balance.low"
BALANCE_DEPLETED = "balance.depleted"
BALANCE_RECOVERED = "balance.recovered"
ALERT_EVENTS = (BALANCE_LOW, BALANCE_DEPLETED, BALANCE_RECOVERED)
MAX_THRESHOLD = 10**15  # ledger units; bounds what an account may set (fits BIGINT with room)


class AlertState(StrEnum):
    """Where an account's balance stands against its threshold (stored on the account)."""

    OK = "ok"
    LOW = "low"
    DEPLETED = "depleted"


def _seconds(units: int) -> int | float:
    """Default rendering of ledger units (ms of AI time) in the API's unit, seconds."""
    return units // 1000 if units % 1000 == 0 else units / 1000


@dataclass(frozen=True)
class AlertRules:
    """What the store needs of the policy to decide and describe alerts: `defaults` maps a
    plan key to its default threshold (ledger units; absent = 0), `render` writes ledger units
    as a JSON number of the API's unit (policies.units.UnitOfAccount.to_json), `unit` names it
    (`s`, `USD`, `tokens`); `amount_fields(name, units)` writes an amount of a currency or
    tokens deployment as `{name: amount}` plus its exact integer twin (UnitOfAccount.json_fields;
    None in a time deployment, whose events keep their seconds/minutes fields: package.fulfilled).
    Set by the gateway on start and on every policy reload."""

    defaults: Mapping[str, int] = field(default_factory=dict)
    render: Callable[[int], int | float] = _seconds
    unit: str = "s"
    amount_fields: Callable[[str, int], dict[str, int | float]] | None = None

    def threshold(self, own: int | None, plan_key: str) -> int:
        """The threshold in force: the account's own when set, else its plan's default."""
        return own if own is not None else self.defaults.get(plan_key, 0)


def level(balance: int, threshold: int) -> AlertState:
    """The state a balance (ledger units) is in against `threshold` (ledger units, ≥ 0)."""
    if balance <= 0:
        return AlertState.DEPLETED
    if balance < threshold:
        return AlertState.LOW
    return AlertState.OK


def crossing(previous: AlertState, balance: int, threshold: int) -> tuple[AlertState, list[str]]:
    """(new state, alert event types to fire in order) for a balance change that leaves the
    watched balance at `balance` (ledger units) when the account was in `previous`.
    Pure; see the module docstring for the rules."""
    now = level(balance, threshold)
    if now is AlertState.OK:
        return now, ([BALANCE_RECOVERED] if previous is not AlertState.OK else [])
    if now is AlertState.LOW:
        if previous is AlertState.OK:
            return now, [BALANCE_LOW]
        return previous, []  # low stays low; depleted is not re-armed below the threshold
    if previous is AlertState.OK:
        return now, ([BALANCE_LOW, BALANCE_DEPLETED] if threshold > 0 else [BALANCE_DEPLETED])
    if previous is AlertState.LOW:
        return now, [BALANCE_DEPLETED]
    return now, []


def alert_data(balance: int, threshold: int, rules: AlertRules) -> dict[str, Any]:
    """The data of an alert event: `balance` and `threshold` in the API's unit (`unit`)."""
    return {"balance": rules.render(max(0, balance)), "threshold": rules.render(threshold),
            "unit": rules.unit}


def alert_settings(own: int | None, plan_key: str, state: str,
                   rules: AlertRules) -> dict[str, Any]:
    """The account's alert settings as the API shows them (`GET …/alerts/{userId}`):
    `low_balance_threshold` in force (API unit), whether it is the plan's `default`, `state`."""
    return {"low_balance_threshold": rules.render(rules.threshold(own, plan_key)),
            "unit": rules.unit, "default": own is None, "state": state}
