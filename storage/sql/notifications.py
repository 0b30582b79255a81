"""The SQL adapters of the `Alerts` and `Webhooks` ports (storage.ports): low-balance alert
settings (storage.sql.alerts) and the outgoing-webhook outbox (storage.sql.outbox). Each method
is one transaction on the ledger's runner, stamped with the ledger's clock."""

from __future__ import annotations

from typing import Any

from storage.engine.alerts import AlertRules
from storage.engine.webhooks import RetrySchedule
from storage.ids import new_id
from storage.ports import AlertSettings, DeliveryClaim
from storage.sql import alerts, outbox
from storage.sql.ledger import SqlLedger


class SqlAlerts:
    """Alert settings on the database of `ledger`; `alert_rules` is the runner's, which every
    transaction that changes a balance consults."""

    def __init__(self, ledger: SqlLedger) -> None:
        self._ledger = ledger
        if ledger.runner.alert_rules is None:
            ledger.runner.alert_rules = AlertRules()

    @property
    def alert_rules(self) -> AlertRules:
        rules: AlertRules = self._ledger.runner.alert_rules
        return rules

    @alert_rules.setter
    def alert_rules(self, rules: AlertRules) -> None:
        self._ledger.runner.alert_rules = rules

    async def alert_settings(self, account_id: str) -> AlertSettings:
        return await self._ledger.runner.run(alerts.alert_settings_tx, account_id)

    async def set_alert_threshold(self, account_id: str,
                                  threshold: int | None) -> AlertSettings:
        return await self._ledger.runner.run(alerts.set_threshold_tx, account_id, threshold,
                                              self._ledger.clock())


class SqlWebhooks:
    """Webhook endpoints and the delivery outbox on the database of `ledger`."""

    def __init__(self, ledger: SqlLedger) -> None:
        self._ledger = ledger
        self._run = ledger.runner.run

    async def create_endpoint(self, url: str, event_types: list[str], description: str | None,
                              secret: str) -> dict[str, Any]:
        endpoint_id, at = new_id("whe"), self._ledger.clock()
        await self._run(outbox.create_endpoint_tx, endpoint_id, url, event_types, description,
                        secret, at)
        return {"id": endpoint_id, "url": url, "event_types": event_types,
                "description": description, "created_at_ms": at}

    async def list_endpoints(self) -> list[dict[str, Any]]:
        return await self._run(outbox.list_endpoints_tx)

    async def deliveries(self, endpoint_id: str, limit: int) -> list[dict[str, Any]] | None:
        return await self._run(outbox.deliveries_tx, endpoint_id, limit)

    async def claim_deliveries(self, lease_ms: int, limit: int) -> list[DeliveryClaim]:
        return await self._run(outbox.claim_tx, self._ledger.clock(), lease_ms, limit)

    async def record_attempt(self, claim: DeliveryClaim, status_code: int | None,
                             error: str | None, duration_ms: int,
                             schedule: RetrySchedule) -> str:
        return await self._run(outbox.record_attempt_tx, claim, status_code, error, duration_ms,
                               self._ledger.clock(), schedule)
