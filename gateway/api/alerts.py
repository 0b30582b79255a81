"""Low-balance alert settings (issue 11 item 7; seeds 003, 004): `GET|PUT
/v1/billing/alerts/{userId}` with `{"low_balance_threshold": <amount in the API's unit>}`.

The threshold is an amount of the deployment's unit of account (seconds of AI time, the
currency, or tokens: policies.units), converted exactly to ledger units (`from_api`; an amount
finer than the ledger unit is a 400). `null` returns the account to its plan's default
(`plans.<key>.low_balance_threshold` in the policy). Setting it checks the balance at once, so
an account that is already below its new threshold gets its `balance.low` now. The alerts
themselves (`balance.low`, `balance.depleted`, `balance.recovered`) are account events: on the
live stream, in the event log and sent to webhook endpoints (storage.engine.alerts).
Authentication as for every billing endpoint: the account's own key, or a server signature.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.edge import json_body, json_response, own_account, services_for
from gateway.api.operations import (
    ACCOUNT_OR_SIGNED,
    USER_ERRORS,
    USER_ID,
    Operation,
    Reply,
    web_routes,
)
from gateway.api.shapes import Shape
from gateway.problems import BadRequest
from gateway.services import Services
from storage.engine.alerts import MAX_THRESHOLD, alert_settings
from storage.ports import Alerts, AlertSettings


class AlertSettingsBody(BaseModel):
    """`low_balance_threshold`: an amount ≥ 0 in the API's unit; null = the plan's default."""

    model_config = ConfigDict(extra="forbid")
    low_balance_threshold: Annotated[Decimal, Field(ge=0, le=10**9)] | None = Field(
        description="Alert when the available balance falls below this amount (API unit: "
                    "seconds, the currency or tokens); 0 alerts on depletion only; null "
                    "returns to the plan's default.")


class AlertSettingsView(Shape):
    low_balance_threshold: int | float = Field(
        ge=0, description="The threshold in force, in the API's unit.")
    unit: str = Field(description="The API's unit: `s`, a currency code or `tokens`.")
    default: bool = Field(description="True when the threshold is the plan's default.")
    state: Literal["ok", "low", "depleted"] = Field(
        description="Where the balance stands: `low` after a balance.low, `depleted` after a "
                    "balance.depleted, `ok` after a balance.recovered (or never crossed).")


def alerts_of(s: Services) -> Alerts:
    """The services' Alerts port (set by gateway.app.build_services)."""
    assert s.alerts is not None
    return s.alerts


def _view(s: Services, settings: AlertSettings) -> dict[str, object]:
    alerts = alerts_of(s)
    return AlertSettingsView.model_validate(alert_settings(
        settings.own_threshold, settings.plan_key, settings.state, alerts.alert_rules)).wire()


async def read(request: Request) -> Response:
    """`GET /v1/billing/alerts/{userId}`: the threshold in force and the alert state."""
    account_id = await own_account(request)
    s = services_for(request)
    return json_response(_view(s, await alerts_of(s).alert_settings(account_id)))


async def write(request: Request) -> Response:
    """`PUT /v1/billing/alerts/{userId}`: set (or reset, with null) the account's threshold."""
    account_id = await own_account(request)
    s = services_for(request)
    body = json_body(AlertSettingsBody, await request.body())
    threshold = None
    if body.low_balance_threshold is not None:
        try:
            threshold = s.policy.unit.from_api(body.low_balance_threshold)
        except ValueError as exc:
            raise BadRequest(f"low_balance_threshold: {exc}") from None
        if threshold > MAX_THRESHOLD:
            raise BadRequest("low_balance_threshold: too large")
    settings = await alerts_of(s).set_alert_threshold(account_id, threshold)
    return json_response(_view(s, settings))


OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "GET", "/v1/billing/alerts/{userId}", "getBalanceAlerts",
        "An account's low-balance alert settings", "billing", ACCOUNT_OR_SIGNED,
        (Reply(200, "The threshold in force and the alert state.", AlertSettingsView),),
        USER_ERRORS, params=(USER_ID,), endpoint=read),
    Operation(
        "PUT", "/v1/billing/alerts/{userId}", "setBalanceAlerts",
        "Set an account's low-balance alert threshold", "billing", ACCOUNT_OR_SIGNED,
        (Reply(200, "The saved settings (an alert the new threshold crosses has fired).",
               AlertSettingsView),),
        USER_ERRORS, params=(USER_ID,), body=AlertSettingsBody,
        description="`balance.low` fires once when the available balance (live buckets − "
                    "debt; holds of calls in flight are not counted) falls below the "
                    "threshold, `balance.depleted` once when it reaches zero, "
                    "`balance.recovered` once when it is back at the threshold or above; an "
                    "alert is re-armed only by a recovery. Events go to the live stream, the "
                    "event log and webhook endpoints.",
        endpoint=write),
)
ALERT_ROUTES = web_routes(OPERATIONS)
