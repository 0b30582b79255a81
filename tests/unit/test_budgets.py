"""Budget rules (storage.engine.budgets) and who a call is for (gateway.proxy.costs): a hold is
admitted only within every limit's headroom, settlement never charges past a limit nor more
than asked, UTC months start on the 1st, and the end user comes from OpenAI's `user`,
Anthropic's `metadata.user_id` or the header, in that order, bounded."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.problems import BadRequest
from gateway.proxy.costs import END_USER_MAX, end_user_of
from storage.clock import to_ms
from storage.engine.budgets import Limits, Spend, admits, clamp, headroom, month_start_ms

FAST = settings(max_examples=300, deadline=None)
amounts = st.integers(0, 10**9)
limits = st.builds(Limits, st.none() | amounts, st.none() | amounts)


@FAST
@given(limits=limits, day=amounts, month=amounts, held=amounts, amount=amounts)
def test_admission_fits_every_limit(limits: Limits, day: int, month: int, held: int,
                                    amount: int) -> None:
    spend = Spend(day=day, month=max(day, month), held=held)
    ok = admits(limits, spend, amount)
    if limits.day is not None and ok:
        assert spend.day + spend.held + amount <= limits.day
    if limits.month is not None and ok:
        assert spend.month + spend.held + amount <= limits.month
    if not limits.any:
        assert ok and headroom(limits, spend) is None


@FAST
@given(limits=limits, day=amounts, held=amounts, charge=amounts)
def test_settlement_never_charges_past_a_limit_nor_more_than_asked(
        limits: Limits, day: int, held: int, charge: int) -> None:
    spend = Spend(day=day, month=day, held=held)
    charged = clamp(charge, limits, spend)
    assert 0 <= charged <= charge
    room = headroom(limits, spend)
    if room is not None:
        assert charged <= max(0, room)
        assert charged == charge or charged == max(0, room)


def test_months_are_utc_calendar_months() -> None:
    at = to_ms(datetime(2026, 2, 28, 23, 59, tzinfo=UTC))
    assert month_start_ms(at) == to_ms(datetime(2026, 2, 1, tzinfo=UTC))


def test_the_end_user_comes_from_the_body_then_the_header() -> None:
    assert end_user_of("openai_chat", {"user": " alice "}, b"hdr") == "alice"
    assert end_user_of("openai_responses", {"user": "r"}, None) == "r"
    assert end_user_of("anthropic_messages", {"metadata": {"user_id": "bob"}}, b"h") == "bob"
    assert end_user_of("anthropic_messages", {"user": "not-anthropic's"}, b"h") == "h"
    assert end_user_of("openai_chat", {}, None) is None
    assert end_user_of("plain", None, b"carol") == "carol"
    assert end_user_of("openai_chat", {"user": ""}, None) is None


@pytest.mark.parametrize("body", [{"user": 7}, {"user": "u" * (END_USER_MAX + 1)}])
def test_a_bad_end_user_is_a_400(body: dict[str, object]) -> None:
    with pytest.raises(BadRequest):
        end_user_of("openai_chat", body, None)
