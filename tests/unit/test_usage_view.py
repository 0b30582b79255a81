"""Usage analytics (gateway.api.billing): periods by an injected clock, seconds and call counts
per operation."""

from __future__ import annotations

from datetime import UTC, datetime

from gateway.api.billing import usage_view
from gateway.api.edge import period_bounds
from storage.clock import to_ms

LAST_MS_OF_A_DAY = datetime(2027, 2, 27, 23, 59, 59, 999_000, tzinfo=UTC)


def test_a_week_is_the_last_seven_utc_days_including_today():
    start, end = period_bounds("week", LAST_MS_OF_A_DAY)
    assert (start, end) == (datetime(2027, 2, 21, tzinfo=UTC), datetime(2027, 2, 28, tzinfo=UTC))
    assert period_bounds("day", LAST_MS_OF_A_DAY)[0] == datetime(2027, 2, 27, tzinfo=UTC)
    assert period_bounds("month", LAST_MS_OF_A_DAY)[0] == datetime(2027, 2, 1, tzinfo=UTC)


def test_usage_counts_calls_per_operation_beside_the_seconds():
    start, end = period_bounds("week", LAST_MS_OF_A_DAY)
    day = to_ms(datetime(2027, 2, 25, tzinfo=UTC))
    rows = [("chat", day, 1_500, 3), ("chat", day + 86_400_000, 500, 1), ("image", day, 5_000, 1)]
    doc = usage_view(rows, "week", start, end)
    assert doc["by_operation"] == {"chat": 2.0, "image": 5.0}
    assert doc["count_by_operation"] == {"chat": 4, "image": 1}
    assert [d["date"] for d in doc["daily_trend"]][0::6] == ["2027-02-21", "2027-02-27"]
    assert (doc["from"], doc["to"]) == ("2027-02-21T00:00:00Z", "2027-02-28T00:00:00Z")
