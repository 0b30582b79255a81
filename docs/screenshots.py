"""Screenshots of the dashboard for the README (issue 12): a gateway with the test suite's fake
upstream and policy (plus gpt-4o-mini on chat, so some calls carry a provider cost), an account
with credit, real proxied calls on three operations and four models and a grant, then headless
Chromium (Debian's, through Playwright) on /dashboard and /admin.

    python docs/screenshots.py [OUT_DIR] [--width 1280]      # writes dashboard.png, admin.png
    python docs/screenshots.py --width 360 --suffix -360     # dashboard-360.png, admin-360.png
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.dashboard.support import ADMIN_TOKEN, new_account  # noqa: E402
from tests.e2e.helpers import auth, chat_body, encode  # noqa: E402
from tests.fakes.upstream import FakeUpstream  # noqa: E402
from tests.support import TEST_POLICY, start_gateway  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", nargs="?", default=str(ROOT / "docs"))
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--suffix", default="")
    args = parser.parse_args()
    out = Path(args.out)
    from playwright.sync_api import sync_playwright

    with FakeUpstream() as up, tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(TEST_POLICY.read_text().replace(
            '{ "gpt-fake*": { input: 1000000, output: 2000000 } }',
            '{ "gpt-fake*": { input: 1000000, output: 2000000 },'
            ' "gpt-4o-mini*": { input: 1000000, output: 2000000 } }', 1))
        gw = start_gateway(Path(tmp), {
            "OPENAI_BASE_URL": up.url + "/v1", "OPENAI_API_KEY": "sk-fake",
            "ANTHROPIC_BASE_URL": up.url, "ANTHROPIC_API_KEY": "sk-fake",
            "GATEWAY_ADMIN_TOKEN": ADMIN_TOKEN,
            # purchases on, so the packages show; nothing here calls Stripe (port 9: discard)
            "STRIPE_SECRET_KEY": "sk_test_screenshots", "STRIPE_API_BASE": "http://127.0.0.1:9"},
            policy_paths=[policy])
        try:
            account, key = new_account(gw.url, minutes=240)
            for extra in range(2):
                new_account(gw.url, minutes=10 * extra)
            calls = [("/v1/chat/completions", chat_body("hello " * (20 * n + 5), 40, model))
                     for n, model in enumerate(["gpt-fake"] * 4 + ["gpt-4o-mini"] * 3
                                               + ["gpt-fake-large"] * 2)]
            calls += [("/v1/messages", chat_body("bonjour " * 30, 60, "claude-fake"))] * 3
            calls += [("/v1/embeddings", {"model": "embed-fake", "input": "vector " * 50})] * 2
            for path, body in calls:
                r = httpx.post(gw.url + path, content=encode(body),
                               headers={**auth(key), "content-type": "application/json"})
                r.raise_for_status()
            with httpx.Client(headers=auth(ADMIN_TOKEN)) as admin:
                admin.post(f"{gw.url}/v1/admin/accounts/{account}/grants",
                           json={"minutes": 30, "reason": "Support ticket #4521",
                                 "idempotency_key": "shot-grant-1"}).raise_for_status()
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=os.environ.get("GATEWAY_CHROMIUM", "/usr/bin/chromium"),
                    args=["--no-sandbox"] if os.geteuid() == 0 else [])
                page = browser.new_page(viewport={"width": args.width, "height": 900})
                page.goto(gw.url + "/dashboard")
                page.fill("#credential", key)
                page.get_by_test_id("login-submit").click()
                page.wait_for_selector("body[data-ready='1']")
                page.wait_for_selector("#live-status.ok")
                page.screenshot(path=str(out / f"dashboard{args.suffix}.png"), full_page=True)
                page.goto(gw.url + "/admin")
                page.fill("#credential", ADMIN_TOKEN)
                page.get_by_test_id("login-submit").click()
                page.wait_for_selector("body[data-ready='1']")
                page.locator(f"button[data-account='{account}']").click()
                page.wait_for_selector("#account:not([hidden])")
                page.locator("#by-model-load").click()
                page.locator("#model-usage-chart canvas").wait_for()
                page.screenshot(path=str(out / f"admin{args.suffix}.png"), full_page=True)
                browser.close()
        finally:
            gw.stop()
    print(f"wrote {out}/dashboard{args.suffix}.png and admin{args.suffix}.png")


if __name__ == "__main__":
    main()
