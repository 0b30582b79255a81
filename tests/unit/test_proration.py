"""The proration rule of a mid-period upgrade (storage.engine.proration): (new − old included)
× remaining / period, rounded down — properties over random periods and changes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from storage.engine.proration import proration_credit

MIN = 60_000
DAY = 86_400_000
allowance = st.integers(min_value=0, max_value=10**12)
instant = st.integers(min_value=0, max_value=10**13)


def test_an_upgrade_a_third_into_the_period_credits_two_thirds_of_the_difference() -> None:
    assert proration_credit(1200 * MIN, 3000 * MIN, 10 * DAY, 0, 30 * DAY) == 1800 * MIN * 2 // 3
    assert proration_credit(1200 * MIN, 3000 * MIN, 10 * DAY + 7_000, 0, 30 * DAY) == 71_999_708


def test_a_downgrade_or_an_equal_allowance_credits_nothing() -> None:
    assert proration_credit(3000 * MIN, 1200 * MIN, DAY, 0, 30 * DAY) == 0
    assert proration_credit(1200 * MIN, 1200 * MIN, DAY, 0, 30 * DAY) == 0


@given(allowance, allowance, instant, instant, st.integers(min_value=1, max_value=10**11))
def test_the_credit_never_exceeds_the_difference_and_is_the_floor_of_the_share(
        old: int, new: int, start: int, change: int, length: int) -> None:
    end = start + length
    credit = proration_credit(old, new, change, start, end)
    assert 0 <= credit <= max(0, new - old)
    if new > old:
        remaining = min(max(end - change, 0), length)
        assert credit * length <= (new - old) * remaining < (credit + 1) * length


@given(allowance, allowance, instant, st.integers(min_value=1, max_value=10**11),
       st.integers(min_value=0, max_value=10**11), st.integers(min_value=0, max_value=10**11))
def test_a_later_change_never_credits_more(old: int, new: int, start: int, length: int,
                                           a: int, b: int) -> None:
    early, late = sorted((start + a, start + b))
    end = start + length
    assert proration_credit(old, new, late, start, end) <= \
        proration_credit(old, new, early, start, end)


@given(allowance, allowance, instant, st.integers(min_value=1, max_value=10**11))
def test_changing_at_the_start_credits_the_whole_difference_and_at_the_end_nothing(
        old: int, new: int, start: int, length: int) -> None:
    assert proration_credit(old, new, start, start, start + length) == max(0, new - old)
    assert proration_credit(old, new, start + length, start, start + length) == 0
