"""The dashboard's charts by model and by operation in a real browser (issue 12: "usage and
cost/margin by model, operation and day as charts"; the account's usage "by operation"), drawn
from calls seeded through the real proxy and compared with what the admin and billing APIs
report. Each chart exposes the data it drew as JSON in `data-chart`; that the canvas really has
bars on it is checked by counting pixels of each series' colour."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from tests.dashboard.support import ADMIN_TOKEN, new_account
from tests.dashboard.test_browser import sign_in
from tests.dashboard.test_browser_billing import ENV, _calls, _in_usd, _usd_account
from tests.e2e.helpers import auth, chat_body, encode
from tests.e2e.stripe_support import stripe_gateway
from tests.support import TEST_POLICY, RunningGateway

Shop = tuple[RunningGateway, respx.MockRouter]
SERIES_RGB = [(0x1F, 0x5F, 0xA8), (0xB5, 0x55, 0x1D), (0x1D, 0x6B, 0x35)]  # chart.js PALETTE


@pytest.fixture
def priced_shop(tmp_path: Path, upstream_env: dict[str, str]) -> Iterator[Shop]:
    """A USD deployment pricing gpt-4o-mini (genai-prices knows its provider cost) next to
    gpt-fake (no provider price) on chat."""
    policy = tmp_path / "priced.yaml"
    policy.write_text(TEST_POLICY.read_text().replace(
        '{ "gpt-fake*": { input: 1000000, output: 2000000 } }',
        '{ "gpt-fake*": { input: 1000000, output: 2000000 },'
        ' "gpt-4o-mini*": { input: 1000000, output: 2000000 } }', 1))
    env = {**ENV, "GATEWAY_POLICY_PATH": f"{policy},{ENV['GATEWAY_POLICY_PATH'].split(',')[1]}"}
    with stripe_gateway(tmp_path, upstream_env, env, policy_transform=_in_usd) as gw_and_router:
        yield gw_and_router


def drawn(chart: Any) -> dict[str, Any]:
    """What a chart drew: {"labels": [...], "series": {label: [values]}} from `data-chart`."""
    chart.locator("canvas").wait_for()
    doc = json.loads(chart.get_attribute("data-chart"))
    return {"labels": doc["labels"], "series": {s["label"]: s["values"] for s in doc["series"]}}


def painted(chart: Any, series: int) -> int:
    """Pixels of series number `series`' colour (±8 per channel) inside the chart's plot area
    (uPlot's `.u-over` box: the axes, whose labels may share a colour, are outside it)."""
    return int(chart.locator("canvas").evaluate("""(canvas, rgb) => {
        const over = canvas.parentElement.querySelector('.u-over');
        const k = canvas.width / canvas.getBoundingClientRect().width;  // device pixels per px
        const px = canvas.getContext('2d').getImageData(over.offsetLeft * k, over.offsetTop * k,
          over.offsetWidth * k, over.offsetHeight * k).data;
        let n = 0;
        for (let i = 0; i < px.length; i += 4) {
          if (Math.abs(px[i] - rgb[0]) <= 8 && Math.abs(px[i + 1] - rgb[1]) <= 8
              && Math.abs(px[i + 2] - rgb[2]) <= 8 && px[i + 3] > 200) n++;
        }
        return n; }""", list(SERIES_RGB[series])))


def test_the_console_charts_usage_and_cost_by_model_and_by_operation(
        priced_shop: Shop, page: Any) -> None:
    gw, _ = priced_shop
    _account, key = _usd_account(gw, "10")
    _calls(gw, key, 2, model="gpt-4o-mini")  # priced by genai-prices' data
    _calls(gw, key, 1, model="gpt-fake")  # no provider price: cost 0, all margin
    with httpx.Client(headers=auth(ADMIN_TOKEN), timeout=10) as admin:
        costs = admin.get(f"{gw.url}/v1/admin/costs/summary?period=month").json()
        daily = admin.get(f"{gw.url}/v1/admin/stats/daily?period=month").json()
        usage = admin.get(f"{gw.url}/v1/admin/stats/usage?period=month").json()
    assert costs["unit"] == "USD" and {g["model"] for g in costs["by_model"]} == {
        "gpt-4o-mini", "gpt-fake"}
    priced = next(g for g in costs["by_model"] if g["model"] == "gpt-4o-mini")
    assert priced["provider_cost_usd"] > 0 and priced["margin_usd"] is not None
    sign_in(page, gw, ADMIN_TOKEN, "/admin")

    ops = page.get_by_test_id("admin-operation-chart")
    got = drawn(ops)
    assert got["labels"] == [o["operation"] for o in daily["by_operation"]] == ["chat"]
    assert got["series"]["Calls"] == [3]
    assert got["series"]["Charged (USD)"] == pytest.approx(
        [o["charged"] for o in daily["by_operation"]])
    assert painted(ops, 0) > 50 and painted(ops, 1) > 50

    by_model = page.get_by_test_id("admin-model-cost-chart")
    got = drawn(by_model)
    groups = costs["by_model"]
    assert got["labels"] == [g["model"] for g in groups]
    assert got["series"]["Provider cost (USD)"] == [g["provider_cost_usd"] for g in groups]
    assert got["series"]["Charged (USD)"] == [g["charged_usd"] for g in groups]
    assert got["series"]["Margin (USD)"] == [g["margin_usd"] for g in groups]
    assert painted(by_model, 0) > 50 and painted(by_model, 1) > 50 and painted(by_model, 2) > 50

    page.locator("#by-model-load").click()  # usage by model reads every record: on demand
    calls = drawn(page.get_by_test_id("admin-model-usage-chart"))
    assert calls["labels"] == [g["key"] for g in usage["by_model"]]
    assert calls["series"]["Calls"] == [g["calls"] for g in usage["by_model"]]
    assert sorted(calls["series"]["Calls"]) == [1, 2]
    # the tables stay, as the charts' accessible fallback
    assert page.get_by_test_id("admin-cost-row").count() == len(costs["by_model"])
    assert "chat" in page.get_by_test_id("admin-by-operation").inner_text()


def test_the_account_page_charts_usage_by_operation(
        tmp_path: Path, upstream_env: dict[str, str], page: Any) -> None:
    with stripe_gateway(tmp_path, upstream_env, {"GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN}) as (gw, _):
        account, key = new_account(gw.url, minutes=60)
        for path, body in [("/v1/chat/completions", chat_body())] * 2 + [
                ("/v1/embeddings", {"model": "embed-fake", "input": "vector " * 40})]:
            r = httpx.post(gw.url + path, content=encode(body),
                           headers={**auth(key), "content-type": "application/json"})
            assert r.status_code == 200, r.text
        usage = httpx.get(f"{gw.url}/v1/billing/usage/{account}?period=month",
                          headers=auth(key)).json()
        assert usage["count_by_operation"] == {"chat": 2, "embeddings": 1}
        sign_in(page, gw, key)
        chart = page.get_by_test_id("usage-ops-chart")
        got = drawn(chart)
        assert got["labels"] == list(usage["by_operation"])
        assert got["series"]["Calls"] == [usage["count_by_operation"][op] for op in got["labels"]]
        assert got["series"]["Used (s)"] == pytest.approx(list(usage["by_operation"].values()))
        assert painted(chart, 0) > 20 and painted(chart, 1) > 20
        assert page.locator("#usage-ops tr").count() == 2  # the table stays as the fallback
