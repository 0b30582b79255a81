"""Time in one place (storage.clock): the unit constants, conversions between epoch
milliseconds and datetimes, whole-second rounding of ledger units, and ids (storage.ids)."""

from __future__ import annotations

from datetime import UTC, datetime

from storage.clock import (
    MS_PER_DAY,
    MS_PER_HOUR,
    MS_PER_MINUTE,
    MS_PER_SECOND,
    ceil_seconds,
    day_start_ms,
    floor_seconds,
    now_ms,
    to_datetime,
    to_ms,
)
from storage.ids import hash_key, new_id, new_sequential_id

NOON = datetime(2027, 2, 27, 12, 0, 0, 250_000, tzinfo=UTC)


def test_the_units_are_milliseconds() -> None:
    assert (MS_PER_SECOND, MS_PER_MINUTE, MS_PER_HOUR, MS_PER_DAY) == (
        1_000, 60_000, 3_600_000, 86_400_000)


def test_epoch_milliseconds_and_utc_datetimes_convert_both_ways() -> None:
    ms = to_ms(NOON)
    assert ms == 1_803_729_600_250
    assert to_datetime(ms) == NOON and to_datetime(ms).tzinfo is UTC


def test_a_day_starts_at_midnight_utc() -> None:
    assert day_start_ms(to_ms(NOON)) == to_ms(datetime(2027, 2, 27, tzinfo=UTC))
    assert day_start_ms(to_ms(datetime(2027, 2, 27, tzinfo=UTC))) == \
        to_ms(datetime(2027, 2, 27, tzinfo=UTC))


def test_what_a_call_needs_rounds_up_and_what_is_available_rounds_down_never_negative() -> None:
    assert (ceil_seconds(1), ceil_seconds(1_000), ceil_seconds(1_001)) == (1, 1, 2)
    assert (floor_seconds(999), floor_seconds(1_999), floor_seconds(-5_000)) == (0, 1, 0)


def test_now_is_utc_epoch_milliseconds() -> None:
    before = int(datetime.now(UTC).timestamp() * 1000)
    assert before - 1_000 <= now_ms() <= before + 60_000


def test_ids_are_prefixed_and_unique_and_keys_are_stored_hashed() -> None:
    assert new_id("acct").startswith("acct_") and new_id("acct") != new_id("acct")
    first, second = new_sequential_id("hold"), new_sequential_id("hold")
    assert first.startswith("hold_") and first != second
    assert hash_key("gw_x") == hash_key("gw_x") != "gw_x" and len(hash_key("gw_x")) == 64
