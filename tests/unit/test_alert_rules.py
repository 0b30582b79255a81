"""The pure rules of low-balance alerts and webhook retries (storage.engine.alerts, .webhooks):
each crossing fires once, only a recovery re-arms, and a delivery is retried for at least 24 h."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from storage.clock import MS_PER_DAY
from storage.engine.alerts import (
    BALANCE_DEPLETED,
    BALANCE_LOW,
    BALANCE_RECOVERED,
    AlertRules,
    AlertState,
    crossing,
)
from storage.engine.webhooks import RetrySchedule


def test_falling_through_threshold_and_zero_at_once_fires_low_then_depleted() -> None:
    assert crossing(AlertState.OK, 0, 5_000) == (AlertState.DEPLETED,
                                                 [BALANCE_LOW, BALANCE_DEPLETED])
    assert crossing(AlertState.OK, -10, 0) == (AlertState.DEPLETED, [BALANCE_DEPLETED])


def test_a_depleted_account_credited_below_its_threshold_is_not_rearmed() -> None:
    assert crossing(AlertState.DEPLETED, 2_000, 5_000) == (AlertState.DEPLETED, [])
    assert crossing(AlertState.DEPLETED, 5_000, 5_000) == (AlertState.OK, [BALANCE_RECOVERED])


def test_the_plan_default_applies_until_the_account_sets_its_own() -> None:
    rules = AlertRules(defaults={"pro": 60_000})
    assert rules.threshold(None, "pro") == 60_000
    assert rules.threshold(1_000, "pro") == 1_000
    assert rules.threshold(None, "free") == 0


@given(st.integers(0, 10_000), st.lists(st.integers(-2_000, 12_000), max_size=60))
def test_every_alert_is_a_crossing_and_lows_alternate_with_recoveries(
        threshold: int, balances: list[int]) -> None:
    state, fired = AlertState.OK, []
    for balance in balances:
        state, events = crossing(state, balance, threshold)
        fired.extend(events)
        # the state agrees with the balance except where only a recovery may move it
        if balance >= threshold and balance > 0:
            assert state is AlertState.OK
        if balance <= 0:
            assert state is AlertState.DEPLETED
    downs = [e for e in fired if e != BALANCE_RECOVERED]
    # between two recoveries: at most one low and one depleted, in that order
    segments = " ".join(fired).split(BALANCE_RECOVERED)
    for seg in segments:
        names = seg.split()
        assert names.count(BALANCE_LOW) <= 1 and names.count(BALANCE_DEPLETED) <= 1
        if BALANCE_LOW in names and BALANCE_DEPLETED in names:
            assert names.index(BALANCE_LOW) < names.index(BALANCE_DEPLETED)
    assert fired.count(BALANCE_RECOVERED) <= len(downs)


@given(st.integers(10, 60_000), st.integers(60_000, 7_200_000))
def test_a_failing_delivery_is_retried_for_at_least_a_day(base_ms: int, cap_ms: int) -> None:
    schedule = RetrySchedule(base_ms=base_ms, cap_ms=max(cap_ms, base_ms))
    created = now = 1_700_000_000_000
    attempts = 0
    while True:
        attempts += 1
        nxt = schedule.next_attempt(attempts, created, now)
        if nxt is None:
            break
        assert nxt - now == min(schedule.cap_ms, base_ms * 2 ** (attempts - 1))
        now = nxt
    assert now - created >= MS_PER_DAY
