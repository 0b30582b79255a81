"""`gateway serve --workers 2`: uvicorn's worker processes behind one socket, on SQLite (the
embedded default) and on PostgreSQL. Each worker tags its request ids
(`req_<12 hex tag><counter hex>`), so a response tells which process served it."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import chat_body, encode, estimate_for
from tests.fakes.upstream import FakeUpstream
from tests.production._support import (
    Gateways,
    assert_problem,
    auth,
    create_database,
    drop_database,
    ledger_for,
    tag_of,
    upstream_env,
    write_policy,
)

CALLS = 50
CONCURRENCY = 10


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database (`serve` migrates it before starting its workers)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gateway.db'}"
        return
    name, url = create_database(migrated=False)
    try:
        yield url
    finally:
        drop_database(name)


def _await_both_workers(url: str, attempts: int = 600) -> None:
    """Return once two workers have answered: `healthy` means one worker listens, and on a
    loaded machine the other may still be importing. Each probe is a new connection with a
    wrong key (a 401 problem that costs nothing) whose request id carries its worker's tag."""
    seen: set[str] = set()
    for _ in range(attempts):
        resp = httpx.post(url + "/v1/chat/completions", content=b"{}",
                          headers={"authorization": "Bearer not-a-key"}, timeout=30)
        seen.add(tag_of(resp.headers["x-request-id"]))
        if len(seen) >= 2:
            return
    raise AssertionError(f"only one worker answered {attempts} new connections: {seen}")


def test_both_workers_serve_and_the_ledger_stays_consistent(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, store_url: str,
) -> None:
    policy = write_policy(tmp_path, read_timeout_s=5)
    (gw,) = gateways.start(1, policy, {"GATEWAY_DATABASE_URL": store_url,
                                       **upstream_env(fake_upstream.url)}, workers=2)
    ledger = ledger_for(store_url, policy)
    funds = 200_000
    account, key = ledger.funded(funds)
    fake_upstream.delay_ms = 50  # calls overlap, so both workers get to accept some
    _await_both_workers(gw.url)

    async def run() -> list[tuple[httpx.Response, int]]:
        gate = asyncio.Semaphore(CONCURRENCY)
        # no keep-alive: every call is a new connection, accepted by whichever worker wins it
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=gw.url, timeout=30, limits=limits) as client:
            async def one(i: int) -> tuple[httpx.Response, int]:
                stream = i % 5 == 0
                raw = encode(chat_body(f"worker call {i}", max_tokens=5, stream=stream,
                                       model="gpt-fake-paced" if stream else "gpt-fake"))
                async with gate:
                    resp = await client.post("/v1/chat/completions", content=raw,
                                             headers=auth(key))
                if stream:
                    comment = [ln for ln in resp.text.splitlines() if ln.startswith(": gateway")]
                    assert len(comment) == 1, resp.text[-300:]
                    charged = int(comment[0].split("charged_ms=")[1].split()[0])
                else:
                    charged = int(resp.headers["x-gateway-charged-ms"])
                return resp, charged

            return await asyncio.gather(*(one(i) for i in range(CALLS)))

    results = asyncio.run(run())
    assert all(r.status_code == 200 for r, _ in results), [r.text for r, _ in results
                                                           if r.status_code != 200][:3]
    ids = [r.headers["x-request-id"] for r, _ in results]
    tags = collections.Counter(tag_of(rid) for rid in ids)
    assert len(tags) >= 2, f"one worker served every call: {tags}"
    assert len(set(ids)) == CALLS  # per-process tags keep ids unique across workers

    usage = ledger.usage(account, limit=1000)
    assert sorted(u["id"] for u in usage) == sorted(ids)
    assert sum(c for _, c in results) == sum(u["charged"] for u in usage)
    totals = ledger.totals(account)
    assert totals["remaining"] - totals["debt"] == totals["deltas"], totals
    assert totals["holds"] == 0, totals
    assert funds - totals["remaining"] == sum(u["charged"] for u in usage)
    assert gw.alive()
    # SQLite's one writer per file: the start-up log says what a second worker costs there
    assert ("warning: 2 workers share one SQLite file" in gw.log()) == store_url.startswith(
        "sqlite"), gw.log()[-2000:]


def _client_on_another_worker(url: str, not_tag: str, attempts: int = 80) -> httpx.Client:
    """A keep-alive connection accepted by a worker other than `not_tag` (found by sending
    an unauthenticated call — its 401 carries the serving worker's request id)."""
    for _ in range(attempts):
        client = httpx.Client(base_url=url, timeout=10)
        r = client.post("/v1/chat/completions", content=b"{}",
                        headers={"authorization": "Bearer gw_not_a_key"})
        assert r.status_code == 401, r.text
        if tag_of(r.headers["x-request-id"]) != not_tag:
            return client
        client.close()
    pytest.fail(f"{attempts} new connections all landed on worker {not_tag}")


@pytest.mark.parametrize("shared_state", [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("sql"),
])
def test_a_resume_token_from_one_worker_is_consumed_by_another(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, shared_state: str,
    request: pytest.FixtureRequest,
) -> None:
    db = f"sqlite:///{tmp_path / 'gateway.db'}"
    env = {"GATEWAY_DATABASE_URL": db, **upstream_env(fake_upstream.url)}
    if shared_state == "redis":
        env["GATEWAY_REDIS_URL"] = request.getfixturevalue("redis_url")
    policy = write_policy(tmp_path, read_timeout_s=5)
    (gw,) = gateways.start(1, policy, env, workers=2)
    ledger = ledger_for(db, policy)
    account, key = ledger.funded(0)
    raw = encode(chat_body("resume me elsewhere", max_tokens=5))
    with httpx.Client(base_url=gw.url, timeout=10) as issuer:
        first = issuer.post("/v1/chat/completions", content=raw, headers=auth(key))
    token = assert_problem(first, 402, "insufficient-ai-time")["resume_token"]
    ledger.grant(account, estimate_for(raw, 5))
    other = _client_on_another_worker(gw.url, tag_of(first.headers["x-request-id"]))
    try:
        retry = other.post("/v1/chat/completions", content=raw,
                           headers={**auth(key), "x-resume-token": token})
    finally:
        other.close()
    assert retry.status_code == 200, retry.text
    assert tag_of(retry.headers["x-request-id"]) != tag_of(first.headers["x-request-id"])
    assert retry.headers["x-resume-token-status"] == "consumed"
