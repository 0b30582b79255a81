"""Caller headers reach an upstream by allow-list only (SPEC §6): the protocol's built-in names,
the SDKs' `x-stainless-*` telemetry, the names the upstream adds in the policy, and feature
headers (`anthropic-beta`, `OpenAI-Beta`) item by item. Nothing else: a caller never chooses
which organization or project the operator's key bills, nor an unpriced beta feature."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.proxy.forwarding import upstream_headers
from policies.headers import BUILT_IN, ForwardRules, compile_rules
from policies.schema import UpstreamSpec

OPENAI_SDK = [
    (b"host", b"gw.example"), (b"content-length", b"42"),
    (b"accept", b"application/json"), (b"content-type", b"application/json"),
    (b"user-agent", b"OpenAI/Python 1.99.0"), (b"x-stainless-lang", b"python"),
    (b"x-stainless-retry-count", b"0"), (b"authorization", b"Bearer gw_caller"),
    (b"openai-organization", b"org-customer"), (b"openai-project", b"proj-customer"),
    (b"openai-beta", b"assistants=v2"), (b"idempotency-key", b"stainless-retry-1"),
    (b"x-trace-id", b"t-1"), (b"cookie", b"a=b"), (b"accept-encoding", b"gzip"),
]
AUTH = ("authorization", "Bearer sk-operator")


def forwarded(raw: list[tuple[bytes, bytes]], rules: ForwardRules,
              defaults: tuple[tuple[str, str], ...] = ()) -> dict[str, str]:
    out = upstream_headers(raw, rules, AUTH, defaults)
    names = [k for k, _ in out]
    assert len(names) == len(set(names)), out  # nothing sent twice
    return dict(out)


def rules_for(protocol: str, **upstream: Any) -> ForwardRules:
    spec = UpstreamSpec(base_url="https://up.example", **upstream)
    return compile_rules(protocol, spec.forward_headers, spec.forward_header_values)


def test_an_openai_sdk_call_forwards_only_the_built_in_headers() -> None:
    got = forwarded(OPENAI_SDK, rules_for("openai_chat"))
    assert got == {
        "accept": "application/json", "content-type": "application/json",
        "user-agent": "OpenAI/Python 1.99.0", "x-stainless-lang": "python",
        "x-stainless-retry-count": "0", "idempotency-key": "stainless-retry-1",
        "authorization": "Bearer sk-operator", "accept-encoding": "identity",
    }


def test_the_caller_cannot_choose_the_organization_or_project_the_key_bills() -> None:
    got = forwarded(OPENAI_SDK, rules_for("openai_chat"))
    assert "openai-organization" not in got and "openai-project" not in got


def test_the_policys_organization_goes_up_whatever_the_caller_sent() -> None:
    got = forwarded(OPENAI_SDK, rules_for("openai_chat"),
                    (("openai-organization", "org-operator"),))
    assert got["openai-organization"] == "org-operator"


def test_an_upstream_may_add_names_to_the_allow_list() -> None:
    got = forwarded(OPENAI_SDK, rules_for("openai_chat", forward_headers=["X-Trace-Id"]))
    assert got["x-trace-id"] == "t-1"
    assert "cookie" not in got


def test_feature_headers_pass_only_their_allowed_items() -> None:
    rules = rules_for("anthropic_messages", forward_header_values={
        "anthropic-beta": ["prompt-caching-2024-07-31", "token-counting-2024-11-01"]})
    raw = [(b"anthropic-version", b"2023-06-01"),
           (b"anthropic-beta", b"computer-use-2024-10-22, prompt-caching-2024-07-31"),
           (b"anthropic-beta", b"token-counting-2024-11-01")]
    got = upstream_headers(raw, rules, None, ())
    assert got == [("anthropic-version", "2023-06-01"),
                   ("anthropic-beta", "prompt-caching-2024-07-31"),
                   ("anthropic-beta", "token-counting-2024-11-01"),
                   ("accept-encoding", "identity")]


def test_a_feature_header_with_no_allowed_item_is_dropped() -> None:
    rules = rules_for("anthropic_messages",
                      forward_header_values={"anthropic-beta": ["prompt-caching-2024-07-31"]})
    got = forwarded([(b"anthropic-beta", b"computer-use-2024-10-22")], rules)
    assert "anthropic-beta" not in got
    assert "anthropic-beta" not in forwarded([(b"anthropic-beta", b"x")],
                                             rules_for("anthropic_messages"))


def test_anthropic_version_is_built_in_for_anthropic_routes_only() -> None:
    raw = [(b"anthropic-version", b"2023-06-01")]
    assert forwarded(raw, rules_for("anthropic_messages"))["anthropic-version"] == "2023-06-01"
    assert "anthropic-version" not in forwarded(raw, rules_for("openai_chat"))
    assert "anthropic-version" in BUILT_IN["anthropic_messages"]


def test_headers_named_by_connection_are_dropped_even_when_allowed() -> None:
    raw = [(b"connection", b"keep-alive, User-Agent"), (b"user-agent", b"x"),
           (b"accept", b"*/*")]
    assert forwarded(raw, rules_for("plain")) == {
        "accept": "*/*", "authorization": "Bearer sk-operator", "accept-encoding": "identity"}


def test_header_names_are_matched_case_insensitively() -> None:
    got = forwarded([(b"Content-Type", b"application/json"), (b"OpenAI-Project", b"p")],
                    rules_for("openai_chat"))
    assert got["content-type"] == "application/json" and "openai-project" not in got


@pytest.mark.parametrize("field, value, message", [
    ("forward_headers", ["authorization"], "never forwarded"),
    ("forward_headers", ["X-API-Key"], "never forwarded"),
    ("forward_headers", ["cookie"], "never forwarded"),
    ("forward_headers", ["transfer-encoding"], "never forwarded"),
    ("forward_headers", ["x-gateway-anything"], "never forwarded"),
    ("forward_headers", ["bad name"], "not a header name"),
    ("forward_headers", ["anthropic-beta"], "feature header"),
    ("forward_header_values", {"anthropic-beta": []}, "lists no value"),
    ("forward_header_values", {"anthropic-beta": ["a,b"]}, "not one header value item"),
    ("forward_header_values", {"host": ["x"]}, "never forwarded"),
])
def test_a_policy_cannot_forward_credentials_or_malformed_names(
        field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        UpstreamSpec(base_url="https://up.example", **{field: value})


def test_a_name_listed_both_ways_is_an_error() -> None:
    with pytest.raises(ValidationError, match="listed in both"):
        UpstreamSpec(base_url="https://up.example", forward_headers=["x-beta"],
                     forward_header_values={"X-Beta": ["on"]})


def test_the_upstreams_cookies_account_ids_and_gateway_headers_never_reach_the_client() -> None:
    from gateway.proxy.forwarding import downstream_headers

    sent = dict(downstream_headers([
        ("Content-Type", "application/json"), ("Set-Cookie", "__cf_bm=x; Domain=upstream"),
        ("OpenAI-Organization", "org-operator"), ("openai-project", "proj-operator"),
        ("anthropic-organization-id", "org-uuid"), ("X-Gateway-Charged-Ms", "0"),
        ("x-request-id", "up-1"), ("openai-processing-ms", "12"),
        ("Connection", "keep-alive, X-Hint"), ("x-hint", "dropped"), ("Content-Length", "9"),
    ]))
    assert sent == {b"content-type": b"application/json", b"x-upstream-request-id": b"up-1",
                    b"openai-processing-ms": b"12"}


def test_a_header_the_caller_sent_and_may_send_wins_over_the_policy_default() -> None:
    got = forwarded([(b"user-agent", b"caller/1.0")], rules_for("openai_chat"),
                    (("user-agent", "gateway/1.0"), ("x-extra", "on")))
    assert got["user-agent"] == "caller/1.0" and got["x-extra"] == "on"


def test_without_an_upstream_credential_no_authorization_goes_up() -> None:
    got = upstream_headers([(b"authorization", b"Bearer gw_caller"), (b"x-api-key", b"gw_k")],
                           rules_for("openai_chat"), None, ())
    assert got == [("accept-encoding", "identity")]


# What a caller must never get past the gateway, whatever the policy allows (SPEC §6; RFC 9110
# §7.6.1): its credentials, its resume token, hop-by-hop and framing headers, its address.
NEVER_FROM_THE_CALLER = {
    "authorization", "x-api-key", "cookie", "x-resume-token", "proxy-authorization",
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "host", "content-length", "accept-encoding", "x-forwarded-for",
    "x-gateway-account",
}
caller_header_names = st.one_of(
    st.sampled_from(sorted(NEVER_FROM_THE_CALLER | BUILT_IN["anthropic_messages"]
                           | {"openai-organization", "anthropic-beta", "x-stainless-os"})),
    st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True),
).map(lambda name: name.upper() if len(name) % 2 else name)


@settings(max_examples=300, deadline=None)
@given(raw=st.lists(st.tuples(caller_header_names, st.sampled_from(["v", "a, b", "keep-alive"])),
                    max_size=15))
def test_no_caller_credential_or_hop_by_hop_header_ever_reaches_the_upstream(
        raw: list[tuple[str, str]]) -> None:
    rules = rules_for("anthropic_messages", forward_headers=["x-trace-id"],
                      forward_header_values={"anthropic-beta": ["a"]})
    out = upstream_headers([(k.encode(), v.encode()) for k, v in raw], rules, AUTH, ())
    assert out[-2:] == [AUTH, ("accept-encoding", "identity")]
    for name, _ in out[:-2]:
        assert name not in NEVER_FROM_THE_CALLER
        assert name in {"x-trace-id", "anthropic-beta"} | BUILT_IN["anthropic_messages"] or (
            name.startswith("x-stainless-"))
