"""Upstream response headers on their way to the client (SPEC §6; RFC 9110 §7.6.1): hop-by-hop
headers (and any the upstream's `Connection` names) stop at the gateway, and so do the ones it
sets itself for the response it frames (`content-length`, `date`, `server`, anything
`x-gateway-*`), the upstream's cookies and the operator's organization/project ids; the upstream's
request id survives as `x-upstream-request-id` beside the gateway's own `x-request-id`;
everything else passes as sent, in order, names lower-cased."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.proxy.forwarding import HOP_BY_HOP, downstream_headers

GATEWAY_OWN = {"content-length", "date", "server", "x-request-id"}
NOT_THE_CLIENTS = {"set-cookie", "openai-organization", "openai-project",
                   "anthropic-organization-id"}

OPENAI_RESPONSE = [
    ("Content-Type", "application/json"), ("Content-Length", "512"),
    ("Date", "Tue, 01 Sep 2025 12:00:00 GMT"), ("Server", "cloudflare"),
    ("Connection", "keep-alive"), ("Keep-Alive", "timeout=5"),
    ("openai-processing-ms", "231"), ("openai-version", "2020-10-01"),
    ("x-ratelimit-remaining-tokens", "149984"), ("X-Request-ID", "req_abc123"),
    ("set-cookie", "__cf_bm=1; path=/"), ("set-cookie", "_cfuvid=2; path=/"),
]


def test_an_openai_response_keeps_its_own_headers_and_loses_the_framing_ones() -> None:
    assert downstream_headers(OPENAI_RESPONSE) == [
        (b"content-type", b"application/json"),
        (b"openai-processing-ms", b"231"), (b"openai-version", b"2020-10-01"),
        (b"x-ratelimit-remaining-tokens", b"149984"),
        (b"x-upstream-request-id", b"req_abc123"),
    ]


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_hop_by_hop_headers_stop_at_the_gateway(name: str) -> None:
    assert downstream_headers([(name, "x"), (name.title(), "y")]) == []


@pytest.mark.parametrize("name", ["Content-Length", "date", "SERVER"])
def test_headers_the_gateway_sets_itself_are_not_copied(name: str) -> None:
    assert downstream_headers([(name, "1")]) == []


def test_the_upstream_request_id_is_kept_under_its_own_name() -> None:
    assert downstream_headers([("x-request-id", "req_up"), ("request-id", "req_up")]) == [
        (b"x-upstream-request-id", b"req_up"), (b"request-id", b"req_up")]


def test_a_streamed_response_keeps_its_event_stream_type() -> None:
    assert downstream_headers([("content-type", "text/event-stream; charset=utf-8"),
                               ("cache-control", "no-cache"),
                               ("transfer-encoding", "chunked")]) == [
        (b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")]


def test_latin1_values_pass_byte_for_byte() -> None:
    assert downstream_headers([("x-note", "café")]) == [(b"x-note", "café".encode("latin-1"))]


header_names = st.one_of(
    st.sampled_from(sorted(HOP_BY_HOP | GATEWAY_OWN | NOT_THE_CLIENTS | {
        "content-type", "anthropic-ratelimit-requests-limit", "x-gateway-charged-ms"})),
    st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,20}", fullmatch=True),
).map(lambda name: name.upper() if len(name) % 3 == 0 else name)
header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20)


@settings(max_examples=300, deadline=None)
@given(headers=st.lists(st.tuples(header_names, header_values), max_size=15))
def test_what_reaches_the_client_is_the_upstreams_headers_minus_the_hop_and_framing_ones(
        headers: list[tuple[str, str]]) -> None:
    out = downstream_headers(headers)
    named = {t.strip().lower() for k, v in headers if k.lower() == "connection"
             for t in v.split(",")}
    renamed = [(b"x-upstream-request-id" if k.lower() == "x-request-id" else k.lower().encode(),
                v.encode())
               for k, v in headers if k.lower() == "x-request-id" or (
                   k.lower() not in HOP_BY_HOP | GATEWAY_OWN | NOT_THE_CLIENTS
                   and not k.lower().startswith("x-gateway-"))]
    assert out == [(k, v) for k, v in renamed if k.decode() not in named]
    names = {k.decode() for k, _ in out}
    assert not names & (HOP_BY_HOP | GATEWAY_OWN | NOT_THE_CLIENTS)
    assert not any(n.startswith("x-gateway-") for n in names)
