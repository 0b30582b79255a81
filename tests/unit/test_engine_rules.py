"""The engine's money rules beyond burn-down (storage/engine): availability and a refusal's
split, the daily grant, period ends and rollover, downgrades, refund clawback, auto top-up.
Pure functions on plain data; amounts in ledger units (ms), times UTC."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from storage.clock import to_datetime
from storage.engine import expiry, topup
from storage.engine.availability import Funds, Hold, funds, held, wants_top_up
from storage.engine.bonus import daily_grant
from storage.engine.buckets import Bucket, Source
from storage.engine.refunds import clawback, refund_status

AT = 1_750_000_000_000
NOW = to_datetime(AT)


def _b(bucket_id: str, source: Source, remaining: int, expires_ms: int | None) -> Bucket:
    return Bucket(bucket_id, source, remaining,
                  None if expires_ms is None else to_datetime(expires_ms), NOW)


# ---- availability -------------------------------------------------------------------------------


def test_available_is_live_buckets_minus_live_holds_minus_debt() -> None:
    f = funds([_b("d", Source.DAILY, 900, AT + 1), _b("g", Source.GIFT, 1_000, None),
               _b("gone", Source.PACKAGE, 5_000, AT), _b("empty", Source.GIFT, 0, None)],
              [Hold("h1", 300, AT + 1), Hold("lapsed", 700, AT)], debt=100, at_ms=AT)
    assert f == Funds(spendable=1_900, held=300, daily=900, debt=100)
    assert f.available == 1_500 and f.covers(1_500) and not f.covers(1_501)


def test_a_hold_counts_until_its_lease_ends_exclusive() -> None:
    assert held([Hold("h", 10, AT + 1)], AT) == 10
    assert held([Hold("h", 10, AT)], AT) == 0


def test_a_refusal_shows_available_clamped_with_holds_taken_from_the_daily_bonus_first() -> None:
    assert Funds(spendable=15_000, held=12_000, daily=10_000, debt=0).shortfall() == (
        3_000, 0, 3_000)
    assert Funds(spendable=15_000, held=4_000, daily=10_000, debt=0).shortfall() == (
        11_000, 6_000, 5_000)
    assert Funds(spendable=1_000, held=0, daily=0, debt=3_000).shortfall() == (0, 0, 0)


@given(spendable=st.integers(0, 10**6), held_=st.integers(0, 10**6), debt=st.integers(0, 10**6),
       daily=st.integers(0, 10**6))
def test_a_refusals_parts_add_up_to_what_it_shows(spendable: int, held_: int, debt: int,
                                                  daily: int) -> None:
    f = Funds(spendable, held_, min(daily, spendable), debt)
    shown, daily_part, paid = f.shortfall()
    assert shown == max(0, spendable - held_ - debt)
    assert daily_part + paid == shown and 0 <= daily_part <= f.daily and paid >= 0


def test_auto_top_up_is_wanted_below_the_threshold_only_when_on() -> None:
    assert wants_top_up(599, 600) and not wants_top_up(600, 600)
    assert not wants_top_up(-5, None)


# ---- the daily bonus ----------------------------------------------------------------------------


def test_the_daily_grant_is_cut_by_the_monthly_cap_then_stops() -> None:
    grant = daily_grant(NOW, 15 * 60_000, 40 * 60_000, 30 * 60_000)
    assert grant is not None and grant.amount == 10 * 60_000
    assert grant.key == "daily_bonus:" + NOW.date().isoformat()
    assert grant.expires_at == datetime(NOW.year, NOW.month, NOW.day + 1, tzinfo=UTC)
    assert daily_grant(NOW, 15 * 60_000, 40 * 60_000, 40 * 60_000) is None
    assert daily_grant(NOW, 0, None, 0) is None


# ---- period ends, rollover, downgrades -----------------------------------------------------


def test_a_period_end_rolls_over_up_to_the_cap_left_by_live_rollover() -> None:
    assert expiry.period_end(300, 150, 0, "active", None, AT) == expiry.PeriodEnd(
        150, 150, "over the rollover cap")
    assert expiry.period_end(300, 150, 100, "active", None, AT).rolled == 50
    assert expiry.period_end(300, 150, 200, "active", None, AT).rolled == 0
    assert expiry.period_end(40, 150, 0, "active", None, AT) == expiry.PeriodEnd(40, 0, (
        "over the rollover cap"))


def test_nothing_rolls_over_when_canceled_or_at_a_scheduled_downgrade() -> None:
    assert expiry.period_end(300, 150, 0, "canceled", None, AT) == expiry.PeriodEnd(
        0, 300, "canceled")
    assert expiry.period_end(300, 150, 0, "active", AT, AT) == expiry.PeriodEnd(
        0, 300, "downgrade")
    assert expiry.period_end(300, 150, 0, "active", AT + 1, AT).rolled == 150  # later: rolls


@given(unused=st.integers(0, 10**6), cap=st.integers(0, 10**6), live=st.integers(0, 10**6),
       status=st.sampled_from(["active", "past_due", "canceled"]))
def test_a_period_end_keeps_every_unit_and_never_passes_the_cap(unused: int, cap: int,
                                                                live: int, status: str) -> None:
    end = expiry.period_end(unused, cap, live, status, None, AT)
    assert end.rolled + end.discarded == unused
    assert 0 <= end.rolled <= max(0, cap - live)


def test_live_rollover_counts_only_rollover_buckets_live_at_the_instant() -> None:
    buckets = [_b("r1", Source.ROLLOVER, 100, AT + 1), _b("r2", Source.ROLLOVER, 50, AT),
               _b("s", Source.SUBSCRIPTION, 999, AT + 1)]
    assert expiry.live_rollover(buckets, AT) == 100
    assert expiry.is_expired(buckets[1], AT) and not expiry.is_expired(buckets[0], AT)


def test_moving_to_the_pending_plan_or_a_smaller_cap_completes_a_downgrade() -> None:
    caps = {"pro": 600, "starter": 150, "free": 0}
    assert expiry.completes_downgrade("pro", "free", "free", caps)
    assert expiry.completes_downgrade("pro", "starter", None, caps)
    assert not expiry.completes_downgrade("starter", "pro", None, caps)
    assert not expiry.completes_downgrade("pro", "pro", "pro", caps)


def test_a_downgrade_warning_says_what_rollover_it_will_discard() -> None:
    meta = expiry.downgrade_warning("free", AT, 100 * 60_000 + 500)
    assert meta == {"new_plan": "free", "effective_date": "2025-06-15T15:06:40Z",
                    "will_discard_rollover": True, "minutes_to_discard": 100,
                    "seconds_to_discard": 6_000}


# ---- refunds ------------------------------------------------------------------------------------


def test_a_refund_claws_back_its_share_never_more_than_the_bucket_holds() -> None:
    half = clawback(60 * 60_000, 500, 250, 0, 40 * 60_000, True)
    assert half is not None and (half.share, half.owed, half.taken) == (
        30 * 60_000, 30 * 60_000, 30 * 60_000)
    rest = clawback(60 * 60_000, 500, 500, half.share, 10 * 60_000, True)
    assert rest is not None and (rest.taken, rest.unrecovered) == (10 * 60_000, 20 * 60_000)
    assert clawback(60 * 60_000, 500, 250, 30 * 60_000, 99, True) is None  # already taken
    expired = clawback(60 * 60_000, 500, 500, 0, 99, False)
    assert expired is not None and expired.taken == 0
    assert clawback(60 * 60_000, 0, 0, 0, 99, True) is None
    assert (refund_status(500, 500), refund_status(250, 500)) == ("refunded", "part_refunded")


# ---- auto top-up --------------------------------------------------------------------------------


def _state(**kw: object) -> topup.TopUpState:
    base: dict[str, object] = {"enabled": True, "threshold": 600, "has_payment_method": True,
                               "next_attempt_at_ms": 0, "pending_attempt": None,
                               "pending_since_ms": None, "attempts": 0}
    return topup.TopUpState(**{**base, **kw})  # type: ignore[arg-type]


def test_declines_back_off_exponentially_up_to_a_day() -> None:
    assert [topup.backoff_ms(n) for n in (1, 2, 3)] == [60_000, 120_000, 240_000]
    assert topup.backoff_ms(30) == 86_400_000


def test_one_attempt_is_pending_at_a_time_and_a_stale_one_is_retried_with_its_id() -> None:
    assert topup.claimable(_state(), AT) and topup.claim_id("a", _state(attempts=2), AT) == "a:3"
    pending = _state(pending_attempt="a:1", pending_since_ms=AT)
    assert not topup.claimable(pending, AT)
    later = AT + topup.STALE_PENDING_MS
    assert topup.claimable(pending, later) and topup.claim_id("a", pending, later) == "a:1"
    assert not topup.claimable(_state(next_attempt_at_ms=AT + 1), AT)  # backing off
    assert not topup.claimable(_state(enabled=False), AT)
    assert not topup.claimable(_state(has_payment_method=False), AT)
    assert topup.due(_state(has_payment_method=False), True, AT)
    assert not topup.due(_state(), False, AT)

