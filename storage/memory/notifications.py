"""The in-memory adapters of the `Alerts` and `Webhooks` ports (storage.ports), on the store of
a MemoryLedger; the same rules as storage.sql.alerts and storage.sql.outbox. Nothing awaits,
so each method is atomic."""

from __future__ import annotations

from typing import Any

from storage.engine.alerts import AlertRules
from storage.engine.webhooks import DELIVERED, FAILED, PENDING, RetrySchedule
from storage.ids import new_id
from storage.memory.ledger import MemoryLedger
from storage.ports import AlertSettings, DeliveryClaim


class MemoryAlerts:
    """Alert settings; `alert_rules` is the store's, consulted by every balance change."""

    def __init__(self, ledger: MemoryLedger) -> None:
        self._ledger = ledger

    @property
    def alert_rules(self) -> AlertRules:
        return self._ledger.store.alert_rules

    @alert_rules.setter
    def alert_rules(self, rules: AlertRules) -> None:
        self._ledger.store.alert_rules = rules

    async def alert_settings(self, account_id: str) -> AlertSettings:
        a = self._ledger.store.account(account_id)
        return AlertSettings(a["low_balance_threshold"], a["plan_key"], a["balance_alert"])

    async def set_alert_threshold(self, account_id: str,
                                  threshold: int | None) -> AlertSettings:
        s = self._ledger.store
        account = s.account(account_id)
        account["low_balance_threshold"] = threshold
        s.check_alerts(account_id, self._ledger.clock())
        s.commit()
        return await self.alert_settings(account_id)


class MemoryWebhooks:
    """Webhook endpoints and the delivery outbox of the store."""

    def __init__(self, ledger: MemoryLedger) -> None:
        self._ledger = ledger
        self._s = ledger.store

    async def create_endpoint(self, url: str, event_types: list[str], description: str | None,
                              secret: str) -> dict[str, Any]:
        endpoint_id, at = new_id("whe"), self._ledger.clock()
        self._s.webhook_endpoints[endpoint_id] = {
            "id": endpoint_id, "url": url, "event_types": list(event_types),
            "description": description, "secret": secret, "created_at_ms": at}
        return {"id": endpoint_id, "url": url, "event_types": list(event_types),
                "description": description, "created_at_ms": at}

    async def list_endpoints(self) -> list[dict[str, Any]]:
        rows = sorted(self._s.webhook_endpoints.values(),
                      key=lambda e: (e["created_at_ms"], e["id"]))
        return [{k: e[k] for k in ("id", "url", "event_types", "description", "created_at_ms")}
                for e in rows]

    async def deliveries(self, endpoint_id: str, limit: int) -> list[dict[str, Any]] | None:
        if endpoint_id not in self._s.webhook_endpoints:
            return None
        rows = [d for d in self._s.webhook_deliveries.values() if d["endpoint_id"] == endpoint_id]
        rows.sort(key=lambda d: (d["created_at_ms"], d["id"]), reverse=True)
        out = []
        for d in rows[:limit]:
            log = [{k: a[k] for k in ("attempt", "at_ms", "status_code", "error", "duration_ms")}
                   for a in self._s.webhook_attempts if a["delivery_id"] == d["id"]]
            out.append({
                "id": d["id"], "message_id": d["message_id"], "event_type": d["event_type"],
                "status": d["status"], "attempts": d["attempts"],
                "next_attempt_at_ms": d["next_attempt_at_ms"] if d["status"] == PENDING else None,
                "last_status_code": d["last_status_code"], "last_error": d["last_error"],
                "created_at_ms": d["created_at_ms"], "delivered_at_ms": d["delivered_at_ms"],
                "attempt_log": log})
        return out

    async def claim_deliveries(self, lease_ms: int, limit: int) -> list[DeliveryClaim]:
        at = self._ledger.clock()
        due = sorted((d for d in self._s.webhook_deliveries.values()
                      if d["status"] == PENDING and d["next_attempt_at_ms"] <= at
                      and d["lease_until_ms"] <= at), key=lambda d: d["next_attempt_at_ms"])
        out = []
        for d in due[:limit]:
            d["lease_until_ms"] = at + lease_ms
            e = self._s.webhook_endpoints[d["endpoint_id"]]
            out.append(DeliveryClaim(d["id"], d["message_id"], d["endpoint_id"], e["url"],
                                     e["secret"], d["payload_json"], d["attempts"],
                                     d["created_at_ms"], d["lease_until_ms"]))
        return out

    async def record_attempt(self, claim: DeliveryClaim, status_code: int | None,
                             error: str | None, duration_ms: int,
                             schedule: RetrySchedule) -> str:
        at = self._ledger.clock()
        d = self._s.webhook_deliveries[claim.delivery_id]
        d["attempts"] += 1
        self._s.webhook_attempts.append({
            "delivery_id": d["id"], "attempt": d["attempts"], "at_ms": at,
            "status_code": status_code, "error": error, "duration_ms": duration_ms})
        if d["status"] != PENDING:
            return str(d["status"])
        d.update(last_status_code=status_code, last_error=error, lease_until_ms=0)
        if status_code is not None and 200 <= status_code < 300:
            d.update(status=DELIVERED, delivered_at_ms=at)
        else:
            retry_at = schedule.next_attempt(d["attempts"], d["created_at_ms"], at)
            if retry_at is None:
                d["status"] = FAILED
            else:
                d["next_attempt_at_ms"] = retry_at
        return str(d["status"])
