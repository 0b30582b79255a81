"""One rendering of times (storage.clock): RFC 3339 UTC, `Z`, whole seconds."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from storage.clock import iso_utc


def test_milliseconds_are_dropped_so_an_instant_renders_one_way():
    assert iso_utc(1_803_000_000_079) == "2027-02-19T01:20:00Z"
    assert iso_utc(1_803_000_000_999) == iso_utc(1_803_000_000_000) == "2027-02-19T01:20:00Z"


@given(st.integers(0, 253_402_300_799_999))  # up to 9999-12-31T23:59:59.999Z
def test_every_time_is_the_same_twenty_characters(ms):
    text = iso_utc(ms)
    assert len(text) == 20 and text[10] == "T" and text.endswith("Z") and "." not in text
