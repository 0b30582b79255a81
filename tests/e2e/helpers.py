"""Helpers shared by the end-to-end tests: request bodies whose estimate is known exactly,
raw HTTP calls to the gateway, problem-document checks and ledger assertions.

Prices of the test policy (tests/e2e/policies.yaml): chat / responses / messages cost 1 unit
(ms) per input token and 2 per output token; embeddings 1 per input token. The hold estimate of
those routes is `len(body) // 4` input tokens plus `max_tokens` (default 100) output tokens.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

import httpx

from tests.fakes.upstream import prompt_tokens_for

PROBLEM_CT = "application/problem+json"
REQUEST_ID_RE = re.compile(r"^req_[0-9A-Za-z_-]{8,}$")
TOKEN_RE = re.compile(r"^rt_[A-Za-z0-9_-]{22}$")
COMMENT_RE = re.compile(r"^: gateway request_id=(req_[0-9A-Za-z_-]{8,}) charged_ms=(\d+) "
                        r"remaining_ms=(\d+)")


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes sent (compact JSON), so the estimate can be computed from them."""
    return json.dumps(body, separators=(",", ":")).encode()


def chat_body(text: str = "hello there", max_tokens: int | None = 7, model: str = "gpt-fake",
              **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    body.update(extra)
    return body


def estimate_for(raw: bytes, max_tokens: int = 100) -> int:
    """The hold the test policy places for this body (units)."""
    return len(raw) // 4 + 2 * max_tokens


def price(body: dict[str, Any], output_tokens: int) -> int:
    """What the fake's usage costs under the test policy (units)."""
    return prompt_tokens_for(body) + 2 * output_tokens


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def post(gateway: Any, path: str, key: str | None, content: bytes | dict[str, Any],
         headers: dict[str, str] | None = None, timeout: float = 10.0) -> httpx.Response:
    """One POST to the gateway on a fresh connection (JSON content type)."""
    raw = encode(content) if isinstance(content, dict) else content
    h = {"content-type": "application/json", **(auth(key) if key else {}), **(headers or {})}
    with httpx.Client(base_url=gateway.url, timeout=timeout) as client:
        return client.post(path, content=raw, headers=h)


def assert_problem(resp: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    """`resp` is an RFC 9457 problem of `status` with type …/problems/`slug`; returns the doc."""
    assert resp.status_code == status, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith(PROBLEM_CT), resp.headers["content-type"]
    assert resp.headers["cache-control"] == "no-store"
    doc = resp.json()
    assert doc["type"].endswith("/problems/" + slug), doc
    assert doc["type"].startswith("http"), doc
    assert doc["status"] == status
    assert isinstance(doc["title"], str) and doc["title"]
    assert isinstance(doc["detail"], str) and doc["detail"]
    return doc


def wait_for_usage(ledger: Any, account: str, count: int = 1,
                   timeout_s: float = 10.0) -> list[dict[str, Any]]:
    """Poll until the account has `count` settled usage records (streams settle after the last
    byte; until then a call's record is `in_flight`); returns the settled ones."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = [r for r in ledger.usage(account) if r["outcome"] != "in_flight"]
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.02)


def wait_no_holds(ledger: Any, account: str, timeout_s: float = 10.0) -> dict[str, int]:
    """Poll until the account holds nothing (or `timeout_s`, a bound for a loaded machine)."""
    deadline = time.monotonic() + timeout_s
    while True:
        totals = ledger.totals(account)
        if totals["holds"] == 0 or time.monotonic() > deadline:
            return totals
        time.sleep(0.02)


def assert_consistent(ledger: Any, account: str) -> dict[str, int]:
    """The ledger's audit identity holds, no hold is left, no bucket is negative."""
    totals = ledger.totals(account)
    assert totals["remaining"] - totals["debt"] == totals["deltas"], totals
    assert totals["holds"] == 0, totals
    assert all(b.remaining >= 0 for b in ledger.balance(account).buckets)
    assert min(bucket_remainders(ledger, account), default=0) >= 0
    return totals


def db_path(ledger: Any) -> str:
    assert ledger.url.startswith("sqlite:///"), ledger.url
    return ledger.url[len("sqlite:///"):]


def bucket_remainders(ledger: Any, account: str) -> list[int]:
    """`remaining` of every bucket of the account, expired ones included (raw SQL)."""
    with sqlite3.connect(db_path(ledger)) as conn:
        return [r[0] for r in conn.execute(
            "SELECT remaining FROM buckets WHERE account_id = ?", (account,))]


def ledger_entries(ledger: Any, account: str) -> list[dict[str, Any]]:
    """Every ledger entry of the account (raw SQL; column names as in the schema)."""
    with sqlite3.connect(db_path(ledger)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(
            "SELECT * FROM ledger_entries WHERE account_id = ? ORDER BY id", (account,))]


@dataclass
class Snapshot:
    """What an account and the upstream looked like before a request."""

    available: int
    usage_records: int
    entries: int
    upstream_requests: int


def snapshot(gateway: Any, upstream: Any, account: str) -> Snapshot:
    return Snapshot(
        available=gateway.ledger.balance(account).available,
        usage_records=len(gateway.ledger.usage(account)),
        entries=len(ledger_entries(gateway.ledger, account)),
        upstream_requests=len(upstream.requests.snapshot()),
    )


def assert_nothing_written(gateway: Any, upstream: Any, account: str, before: Snapshot) -> None:
    """No usage record, no ledger entry, balance unchanged, nothing sent upstream, no hold."""
    after = snapshot(gateway, upstream, account)
    assert after == before, (before, after)
    assert gateway.ledger.totals(account)["holds"] == 0


def gateway_comment(lines: list[str]) -> dict[str, Any]:
    """Parse the final `: gateway request_id=… charged_ms=N remaining_ms=M` SSE comment."""
    found = [line for line in lines if line.startswith(": gateway ")]
    assert len(found) == 1, lines[-5:]
    m = COMMENT_RE.match(found[0])
    assert m, found[0]
    return {"request_id": m.group(1), "charged_ms": int(m.group(2)),
            "remaining_ms": int(m.group(3)), "line": found[0]}


def sse_data(lines: list[str]) -> list[Any]:
    """The JSON payloads of `data:` lines (skipping [DONE])."""
    out = []
    for line in lines:
        if line.startswith("data:"):
            data = line[5:].strip()
            if data != "[DONE]":
                out.append(json.loads(data))
    return out
