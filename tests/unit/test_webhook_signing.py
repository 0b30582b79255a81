"""Outgoing webhook edges (gateway.webhooks): endpoint URLs are bounded and validated, and what
the worker sends verifies with the Standard Webhooks reference library."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from gateway.webhooks import new_secret, signed_headers, url_problem
from storage.ports import DeliveryClaim


@pytest.mark.parametrize("url", ["https://ops.example/hooks", "http://127.0.0.1:9000/h?x=1"])
def test_http_and_https_urls_are_accepted(url: str) -> None:
    assert url_problem(url) is None


@pytest.mark.parametrize("url", [
    "ftp://ops.example/h", "file:///etc/passwd", "https://user:pw@ops.example/h",
    "https://ops.example/h#frag", "https:///h", "https://ops.example/ h",
    "https://ops.example:99999/h", "https://ops.example/" + "a" * 2048, "ops.example/h"])
def test_other_urls_are_refused_with_a_reason(url: str) -> None:
    assert url_problem(url)


def test_a_signed_attempt_verifies_with_standardwebhooks_and_a_changed_body_does_not() -> None:
    secret = new_secret()
    payload = json.dumps({"type": "balance.low", "timestamp": "2026-01-01T00:00:00Z",
                          "data": {"account_id": "acct_1"}})
    claim = DeliveryClaim("whd_1", "msg_1", "whe_1", "https://ops.example/h", secret, payload,
                          0, 0, 0)
    headers = signed_headers(claim, datetime.now(UTC))
    assert headers["webhook-id"] == "msg_1"
    assert Webhook(secret).verify(payload, headers)["data"]["account_id"] == "acct_1"
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(payload.replace("acct_1", "acct_2"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(payload, headers)
