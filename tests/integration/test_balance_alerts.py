"""Low-balance alerts and the webhook outbox through the ports, on memory, SQLite and PostgreSQL
(issue 11 items 7, 8): each crossing fires its event once, in the transaction of the change
that crossed it (settlement, grant, threshold change), and every webhook-typed event is in the
outbox of the endpoints subscribed to it in that same transaction. Under 50 concurrent
settlements on SQLite and PostgreSQL, one alert per crossing.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from policies.compiled import Plan
from storage.engine.alerts import ALERT_EVENTS, AlertRules
from storage.engine.buckets import Source
from storage.engine.webhooks import RetrySchedule
from storage.memory.ledger import MemoryLedger
from storage.memory.notifications import MemoryAlerts, MemoryWebhooks
from storage.ports import Admission, Alerts, CallRecord, Webhooks
from storage.sql.engine import is_sqlite
from storage.sql.ledger import SqlLedger
from storage.sql.notifications import SqlAlerts, SqlWebhooks
from tests.integration.stores import SQL_STORES, Ledger

PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)


def alerts_of(ledger: Ledger) -> Alerts:
    return MemoryAlerts(ledger) if isinstance(ledger, MemoryLedger) else SqlAlerts(ledger)


def webhooks_of(ledger: Ledger) -> Webhooks:
    return MemoryWebhooks(ledger) if isinstance(ledger, MemoryLedger) else SqlWebhooks(ledger)


def call(account_id: str, request_id: str) -> CallRecord:
    return CallRecord(request_id=request_id, account_id=account_id, operation="it.alert",
                      model=None, upstream_status=200, duration_ms=100, estimated=3_000)


async def alert_events(ledger: Ledger, account_id: str) -> list[tuple[str, dict[str, Any]]]:
    events = await ledger.events_after(account_id, 0, 1_000)
    return [(e.type, e.data) for e in events if e.type in ALERT_EVENTS]


async def charge(ledger: Ledger, account_id: str, amount: int, request_id: str) -> None:
    admitted = await ledger.admit(account_id, 1, "it.alert", 60, PLAN)
    assert isinstance(admitted, Admission)
    await ledger.settle(admitted.hold_id, call(account_id, request_id), amount, "clamp")


async def test_each_crossing_fires_once_and_only_a_recovery_rearms(
        ledger: Ledger, new_account: Any) -> None:
    alerts = alerts_of(ledger)
    acct = await new_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 10_000, "fund", None, "funds")
    settings = await alerts.set_alert_threshold(acct, 5_000)
    assert (settings.own_threshold, settings.state) == (5_000, "ok")

    await charge(ledger, acct, 3_000, "r1")  # 7 s: above
    assert await alert_events(ledger, acct) == []
    await charge(ledger, acct, 3_000, "r2")  # 4 s: below 5 s
    await charge(ledger, acct, 3_000, "r3")  # 1 s: still low, nothing new
    assert await alert_events(ledger, acct) == [
        ("balance.low", {"balance": 4, "threshold": 5, "unit": "s"})]
    await charge(ledger, acct, 3_000, "r4")  # clamped at 0: depleted
    await ledger.grant(acct, Source.GIFT, 2_000, "small", None, "small")  # 2 s: not re-armed
    await charge(ledger, acct, 2_000, "r5")  # 0 again: still depleted, nothing new
    assert [t for t, _ in await alert_events(ledger, acct)] == ["balance.low",
                                                                "balance.depleted"]
    await ledger.grant(acct, Source.GIFT, 6_000, "big", None, "big")  # 6 s ≥ 5 s: recovered
    await charge(ledger, acct, 2_000, "r6")  # 4 s: low again (re-armed by the recovery)
    events = await alert_events(ledger, acct)
    assert [t for t, _ in events] == ["balance.low", "balance.depleted", "balance.recovered",
                                      "balance.low"]
    assert events[2][1] == {"balance": 6, "threshold": 5, "unit": "s"}
    assert (await alerts.alert_settings(acct)).state == "low"


async def test_a_new_threshold_is_checked_at_once_and_null_returns_to_the_plan_default(
        ledger: Ledger, new_account: Any) -> None:
    alerts = alerts_of(ledger)
    alerts.alert_rules = AlertRules(defaults={"it": 1_000})
    acct = await new_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 3_000, "fund", None, "funds")
    assert await alert_events(ledger, acct) == []
    raised = await alerts.set_alert_threshold(acct, 60_000)
    assert raised.state == "low"
    assert await alert_events(ledger, acct) == [
        ("balance.low", {"balance": 3, "threshold": 60, "unit": "s"})]
    back = await alerts.set_alert_threshold(acct, None)  # plan default 1 s: recovered
    assert (back.own_threshold, back.state) == (None, "ok")
    assert [t for t, _ in await alert_events(ledger, acct)] == ["balance.low",
                                                                "balance.recovered"]


async def test_webhook_events_enter_the_outbox_with_their_transaction(
        ledger: Ledger, new_account: Any) -> None:
    hooks, alerts = webhooks_of(ledger), alerts_of(ledger)
    endpoint = await hooks.create_endpoint("https://ops.example/hook",
                                           ["balance.low", "credit.applied"], "ops", "whsec_x")
    other = await hooks.create_endpoint("https://ops.example/other", ["payment.failed"], None,
                                        "whsec_y")
    acct = await new_account(PLAN)
    await ledger.grant(acct, Source.GIFT, 10_000, "fund", None, "funds")  # credit.applied
    await alerts.set_alert_threshold(acct, 5_000)
    await charge(ledger, acct, 6_000, "r1")  # balance.low, from the settlement's transaction
    rows = await hooks.deliveries(endpoint["id"], 10)
    assert rows is not None
    assert sorted(r["event_type"] for r in rows) == ["balance.low", "credit.applied"]
    assert all(r["status"] == "pending" and r["attempts"] == 0 for r in rows)
    assert await hooks.deliveries(other["id"], 10) == []
    assert await hooks.deliveries("whe_unknown", 10) is None
    assert "secret" not in json.dumps(await hooks.list_endpoints())

    claims = await hooks.claim_deliveries(60_000, 10)
    assert len(claims) == 2 and {c.url for c in claims} == {"https://ops.example/hook"}
    assert await hooks.claim_deliveries(60_000, 10) == []  # leased: nobody else gets them
    low = next(c for c in claims if json.loads(c.payload_json)["type"] == "balance.low")
    payload = json.loads(low.payload_json)
    assert payload["data"]["account_id"] == acct and payload["data"]["threshold"] == 5
    schedule = RetrySchedule(base_ms=1_000)
    assert await hooks.record_attempt(low, 500, "HTTP 500", 12, schedule) == "pending"
    for c in claims:
        if c is not low:
            assert await hooks.record_attempt(c, 204, None, 3, schedule) == "delivered"
    rows = {r["event_type"]: r for r in await hooks.deliveries(endpoint["id"], 10) or []}
    assert rows["balance.low"]["attempts"] == 1
    assert rows["balance.low"]["attempt_log"][0]["status_code"] == 500
    assert rows["balance.low"]["next_attempt_at_ms"] is not None
    assert rows["credit.applied"]["status"] == "delivered"
    assert rows["balance.low"]["message_id"] == low.message_id


@pytest.mark.parametrize("ledger_kind", SQL_STORES, indirect=True)
async def test_fifty_concurrent_settlements_fire_one_alert_per_crossing(
        ledger: SqlLedger, new_account: Any) -> None:
    url = ledger.runner.url
    ledgers = [ledger] if is_sqlite(url) else [ledger] + [SqlLedger(url) for _ in range(3)]
    try:
        hooks = SqlWebhooks(ledger)
        endpoint = await hooks.create_endpoint("https://ops.example/hook",
                                               ["balance.low", "balance.depleted"], None, "s")
        acct = await new_account(PLAN)
        await ledger.grant(acct, Source.GIFT, 50_000, "fund", None, "funds")
        await SqlAlerts(ledger).set_alert_threshold(acct, 25_000)
        admitted = await asyncio.gather(*(
            ledgers[i % len(ledgers)].admit(acct, 1_000, "it.race", 60, PLAN)
            for i in range(50)))
        assert all(isinstance(a, Admission) for a in admitted)
        await asyncio.gather(*(
            ledgers[i % len(ledgers)].settle(a.hold_id, call(acct, f"req_{i}"), 1_000, "clamp")
            for i, a in enumerate(admitted) if isinstance(a, Admission)))

        assert [t for t, _ in await alert_events(ledger, acct)] == ["balance.low",
                                                                    "balance.depleted"]
        rows = await hooks.deliveries(endpoint["id"], 100) or []
        assert sorted(r["event_type"] for r in rows) == ["balance.depleted", "balance.low"]
    finally:
        for extra in ledgers[1:]:
            await extra.close()
