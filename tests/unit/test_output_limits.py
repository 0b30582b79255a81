"""The output limit a hold is estimated from (SPEC §5): the largest output-limit field the request
sets, so the hold never reads a smaller limit than the upstream honours; a limit that is not an
integer in [1, 2³¹−1] is refused (the proxy answers 400 naming the field), never the default."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.estimates import (
    KNOWN_OUTPUT_LIMIT_FIELDS,
    MAX_OUTPUT_LIMIT,
    OUTPUT_LIMIT_FIELDS,
    InvalidOutputLimit,
    output_limit,
)

WITH_OUTPUT = ["openai_chat", "openai_responses", "anthropic_messages", "plain"]
valid = st.integers(min_value=1, max_value=MAX_OUTPUT_LIMIT)
PROPERTY = settings(max_examples=200, deadline=None)
fields = st.dictionaries(st.sampled_from(KNOWN_OUTPUT_LIMIT_FIELDS), valid, min_size=1)


def test_the_table_names_each_providers_own_fields() -> None:
    assert OUTPUT_LIMIT_FIELDS["openai_chat"] == ("max_tokens", "max_completion_tokens")
    assert OUTPUT_LIMIT_FIELDS["openai_responses"] == ("max_output_tokens",)
    assert OUTPUT_LIMIT_FIELDS["anthropic_messages"] == ("max_tokens",)
    for names in OUTPUT_LIMIT_FIELDS.values():
        assert set(names) <= set(KNOWN_OUTPUT_LIMIT_FIELDS)


@pytest.mark.parametrize("protocol", WITH_OUTPUT)
def test_a_small_max_tokens_beside_a_large_max_output_tokens_estimates_the_large_one(
        protocol: str) -> None:
    assert output_limit(protocol, {"max_tokens": 1, "max_output_tokens": 200}) == 200
    assert output_limit(protocol, {"max_completion_tokens": 300, "max_tokens": 2}) == 300


@PROPERTY
@given(protocol=st.sampled_from(WITH_OUTPUT), limits=fields,
       other=st.dictionaries(st.sampled_from(["model", "stream", "n", "temperature"]),
                             st.integers() | st.text() | st.none()))
def test_the_estimate_reads_the_largest_known_field_present(
        protocol: str, limits: dict[str, int], other: dict[str, Any]) -> None:
    assert output_limit(protocol, {**other, **limits}) == max(limits.values())


@pytest.mark.parametrize("protocol", [*WITH_OUTPUT, "openai_embeddings"])
def test_no_field_or_null_fields_leave_the_default(protocol: str) -> None:
    assert output_limit(protocol, {"model": "m"}) is None
    assert output_limit(protocol, {"max_tokens": None, "max_output_tokens": None}) is None
    assert output_limit(protocol, None) is None
    assert output_limit(protocol, ["not", "an", "object"]) is None


def test_embeddings_have_no_output_limit_to_read() -> None:
    assert output_limit("openai_embeddings", {"max_tokens": "anything"}) is None


BAD = [True, False, 1.5, 1.0, 1e30, "50", "", 0, -1, -(2**40), MAX_OUTPUT_LIMIT + 1, 2**63 - 1,
       [5], {"n": 5}]


@pytest.mark.parametrize("value", BAD, ids=repr)
@pytest.mark.parametrize("field", KNOWN_OUTPUT_LIMIT_FIELDS)
def test_a_limit_that_is_not_an_integer_in_range_is_refused_naming_the_field(
        field: str, value: Any) -> None:
    with pytest.raises(InvalidOutputLimit) as caught:
        output_limit("openai_chat", {"max_tokens": 10, field: value} if field != "max_tokens"
                     else {field: value})
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field} must be an integer from 1 to 2147483647")


@PROPERTY
@given(protocol=st.sampled_from([p for p in WITH_OUTPUT if p != "plain"]),
       field=st.sampled_from(KNOWN_OUTPUT_LIMIT_FIELDS),
       value=st.floats(allow_nan=True) | st.booleans() | st.text()
       | st.integers(max_value=0) | st.integers(min_value=MAX_OUTPUT_LIMIT + 1))
def test_any_invalid_limit_is_refused_never_the_default(
        protocol: str, field: str, value: Any) -> None:
    with pytest.raises(InvalidOutputLimit):
        output_limit(protocol, {field: value})


def test_the_largest_limit_in_range_is_accepted() -> None:
    assert output_limit("anthropic_messages", {"max_tokens": MAX_OUTPUT_LIMIT}) == 2**31 - 1


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_a_plain_route_ignores_a_value_its_unknown_api_may_mean_otherwise(value: Any) -> None:
    assert output_limit("plain", {"max_tokens": value}) is None
    assert output_limit("plain", {"max_tokens": value, "max_output_tokens": 64}) == 64
