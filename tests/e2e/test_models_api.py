"""`GET /v1/models` lists the models the policy prices, in OpenAI's format, for any API key, so
`client.models.list()` and model discovery work through the gateway; a policy route for the
same path (proxying the upstream's list) takes precedence."""

from __future__ import annotations

import httpx
import openai
import pytest

from gateway.api.models import listed_name
from tests.e2e.helpers import assert_problem, auth
from tests.support import TEST_POLICY, start_gateway

# The test policy prices gpt-fake* on chat and responses (openai), embed-fake on embeddings
# (openai), claude-fake* on messages (anthropic); the image route is metered per call.
EXPECTED = [("gpt-fake", "openai"), ("embed-fake", "openai"), ("claude-fake", "anthropic")]


def test_the_openai_sdk_lists_the_priced_models(gateway, upstream):
    _, key = gateway.ledger.funded(0)
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key=key, max_retries=0,
                       timeout=10) as client:
        models = list(client.models.list())
    assert [(m.id, m.owned_by) for m in models] == EXPECTED
    assert all(m.object == "model" and m.created == 0 for m in models)
    assert upstream.requests.snapshot() == []  # answered by the gateway itself


def test_the_list_is_openais_format_and_never_cached(gateway):
    _, key = gateway.ledger.funded(0)
    for headers in (auth(key), {"x-api-key": key}):
        r = httpx.get(gateway.url + "/v1/models", headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        assert r.headers["cache-control"] == "no-store"
        assert r.json() == {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": owner}
            for name, owner in EXPECTED]}


@pytest.mark.parametrize("headers", [{}, {"authorization": "Bearer gw_unknown"},
                                     {"x-api-key": "gw_unknown"}],
                         ids=["no-key", "unknown-bearer", "unknown-x-api-key"])
def test_listing_models_needs_a_valid_api_key(gateway, headers):
    assert_problem(httpx.get(gateway.url + "/v1/models", headers=headers), 401, "unauthorized")


def test_the_sdk_without_a_valid_key_gets_an_authentication_error(gateway):
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="gw_wrong", max_retries=0) as c:
        with pytest.raises(openai.AuthenticationError):
            c.models.list()


@pytest.mark.parametrize("key, name", [
    ("gpt-4o", "gpt-4o"), ("gpt-4o-mini*", "gpt-4o-mini"), ("*", None), ("gpt-?o", None),
    ("gpt-[45]o*", None), ("gpt-*-mini", None), ("gpt**", None),
])
def test_a_price_pattern_is_listed_only_as_its_fixed_prefix(key, name):
    assert listed_name(key) == name


def test_a_policy_route_for_get_v1_models_wins(tmp_path, upstream_env, upstream):
    extra = tmp_path / "models-route.yaml"
    extra.write_text(
        "routes:\n"
        "  - operation: models\n"
        "    method: GET\n"
        "    path: /v1/models\n"
        "    upstream: openai\n"
        "    meter: { type: fixed, units: 0 }\n"
        "    estimate: { type: fixed, units: 0 }\n")
    gw = start_gateway(tmp_path, upstream_env, [TEST_POLICY, extra])
    try:
        _, key = gw.ledger.funded(1000)
        r = httpx.get(gw.url + "/v1/models", headers=auth(key))
    finally:
        gw.stop()
    # proxied: the fake upstream has no model list, and its own 404 comes back as it sent it
    assert r.status_code == 404
    assert r.headers["x-gateway-operation"] == "models"
    assert r.json()["error"]["code"] == "unknown_url"
    [forwarded] = upstream.requests.snapshot()
    assert (forwarded["method"], forwarded["path"]) == ("GET", "/v1/models")
