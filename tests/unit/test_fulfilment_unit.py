"""package.fulfilled speaks the unit (issue 10): `minutes` in a time deployment (seed field),
`amount` (+ `amount_micros`) and `unit` in a currency or tokens one."""

from __future__ import annotations

from policies.units import TIME, UnitKind, UnitOfAccount
from storage.engine.alerts import AlertRules
from storage.engine.events import fulfilment_events

USD = UnitOfAccount(UnitKind.CURRENCY, "USD")
TOKENS = UnitOfAccount(UnitKind.TOKENS)


def rules(unit: UnitOfAccount) -> AlertRules:
    return AlertRules(render=unit.to_json, unit=unit.api_name,
                      amount_fields=None if unit is TIME else unit.json_fields)


def test_time_purchases_keep_minutes() -> None:
    [(name, data)] = fulfilment_events("mini", 60, "cs_1", None, None, rules(TIME))
    assert name == "package.fulfilled"
    assert data == {"package_key": "mini", "minutes": 60, "session_id": "cs_1",
                    "operation_id": None}


def test_usd_and_tokens_purchases_carry_the_amount_in_the_unit() -> None:
    (_, usd), (_, ready) = fulfilment_events("ten", 0, "cs_2", "req_1", 10_500_000, rules(USD))
    assert usd == {"package_key": "ten", "amount": 10.5, "amount_micros": 10_500_000,
                   "unit": "USD", "session_id": "cs_2", "operation_id": "req_1"}
    assert ready["instance"] == "urn:op:req_1"
    [(_, tokens)] = fulfilment_events("million", 0, "cs_3", None, 1_000_000, rules(TOKENS))
    assert (tokens["amount"], tokens["unit"], "minutes" in tokens) == (1_000_000, "tokens", False)
