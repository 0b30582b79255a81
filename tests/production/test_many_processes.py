"""Many gateway processes on one PostgreSQL and one Redis (SPEC §3: admission is one atomic step
per account, correct with many gateway processes; resume tokens are single-use across replicas).

Four separate `gateway serve` processes on four ports, so calls are spread over them
deterministically (call i goes to process i % 4).
"""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import chat_body, encode, estimate_for
from tests.fakes.upstream import FakeUpstream
from tests.production._support import (
    FIXED_UNITS,
    GatewayProcess,
    Gateways,
    assert_problem,
    auth,
    ledger_for,
    tag_of,
    upstream_env,
    write_policy,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

N_PROCESSES = 4
N_CALLS = 400
COVERED = 50  # the balance covers exactly this many estimates


def _many_limits() -> httpx.Limits:
    return httpx.Limits(max_connections=None, max_keepalive_connections=None)


def test_400_concurrent_calls_on_4_processes_admit_exactly_what_the_balance_covers(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, pg_url_unmigrated: str,
    redis_url: str,
) -> None:
    # The four replicas start together on an empty database: `serve` migrates it first, so
    # this also checks that simultaneous migrations do not trip over each other.
    # Leases long enough that a loaded machine's stalled event loop cannot let one lapse: this
    # test is about atomic admission; lapsed leases are tests/production/test_faults.py's.
    policy = write_policy(tmp_path, read_timeout_s=20, lease_s=30)
    procs = gateways.start(N_PROCESSES, policy, {
        "GATEWAY_DATABASE_URL": pg_url_unmigrated, "GATEWAY_REDIS_URL": redis_url,
        **upstream_env(fake_upstream.url)})
    ledger = ledger_for(pg_url_unmigrated, policy)
    # `chat_fixed` holds FIXED_UNITS and charges FIXED_UNITS: settling frees nothing, so no
    # matter how calls interleave exactly COVERED can ever be admitted.
    funds = COVERED * FIXED_UNITS
    account, key = ledger.funded(funds)
    raw = encode(chat_body("how many get in?", max_tokens=5))
    fake_upstream.delay_ms = 400  # admitted calls overlap with the admission of the others

    async def fire() -> list[tuple[int, httpx.Response]]:
        async with httpx.AsyncClient(timeout=60, limits=_many_limits()) as client:
            async def one(i: int) -> tuple[int, httpx.Response]:
                gw = procs[i % N_PROCESSES]
                return i % N_PROCESSES, await client.post(
                    gw.url + "/v1/fixed/chat/completions", content=raw, headers=auth(key))

            return await asyncio.gather(*(one(i) for i in range(N_CALLS)))

    results = asyncio.run(fire())
    codes = collections.Counter(r.status_code for _, r in results)
    assert set(codes) <= {200, 402}, codes
    assert codes[200] == COVERED, codes  # never more (money) and never fewer (no lost hold)
    assert codes[402] == N_CALLS - COVERED

    tags_by_process: dict[int, set[str]] = collections.defaultdict(set)
    ok_ids = []
    for index, resp in results:
        tags_by_process[index].add(tag_of(resp.headers["x-request-id"]))
        if resp.status_code == 200:
            assert resp.headers["x-gateway-charged-ms"] == str(FIXED_UNITS)
            assert int(resp.headers["x-gateway-remaining-ms"]) >= 0
            ok_ids.append(resp.headers["x-request-id"])
        else:
            doc = assert_problem(resp, 402, "insufficient-ai-time")
            assert doc["resume_token"].startswith("rt_")
    # every process answered its 100 calls, each under its own request-id tag
    assert all(len(tags) == 1 for tags in tags_by_process.values()), tags_by_process
    assert len({next(iter(t)) for t in tags_by_process.values()}) == N_PROCESSES

    # nothing but the admitted calls reached the upstream
    assert len(fake_upstream.requests.snapshot()) == COVERED
    totals = ledger.totals(account)
    assert totals == {"remaining": 0, "debt": 0, "deltas": 0, "holds": 0}, totals
    assert totals["remaining"] - totals["debt"] == totals["deltas"]
    usage = ledger.usage(account, limit=1000)
    assert sorted(u["id"] for u in usage) == sorted(ok_ids)
    assert sum(u["charged"] for u in usage) == funds
    assert ledger.balance(account).held == 0
    for gw in procs:
        assert gw.alive(), gw.log()[-2000:]


def _warm(client: httpx.AsyncClient, gw: GatewayProcess):  # type: ignore[no-untyped-def]
    return client.get(gw.url + "/healthz")


@pytest.mark.parametrize("both_fit", [True, False], ids=["balance-for-both", "balance-for-one"])
def test_a_resume_token_raced_from_two_processes_is_consumed_once(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, pg_url: str,
    redis_url: str, both_fit: bool,
) -> None:
    policy = write_policy(tmp_path)
    procs = gateways.start(N_PROCESSES, policy, {
        "GATEWAY_DATABASE_URL": pg_url, "GATEWAY_REDIS_URL": redis_url,
        **upstream_env(fake_upstream.url)})
    ledger = ledger_for(pg_url, policy)
    pairs = [(0, 1), (2, 3), (1, 2), (3, 0), (0, 2), (1, 3)]

    async def race(key: str, raw: bytes, token: str, a: GatewayProcess,
                   b: GatewayProcess) -> list[httpx.Response]:
        headers = {**auth(key), "x-resume-token": token}
        async with httpx.AsyncClient(timeout=30) as ca, httpx.AsyncClient(timeout=30) as cb:
            await asyncio.gather(_warm(ca, a), _warm(cb, b))  # connections open: a fair race
            return list(await asyncio.gather(
                ca.post(a.url + "/v1/chat/completions", content=raw, headers=headers),
                cb.post(b.url + "/v1/chat/completions", content=raw, headers=headers)))

    for n, (i, j) in enumerate(pairs):
        account, key = ledger.funded(0)
        raw = encode(chat_body(f"resume me, round {n}", max_tokens=5))
        estimate = estimate_for(raw, 5)
        first = httpx.post(procs[i].url + "/v1/chat/completions", content=raw,
                           headers=auth(key), timeout=10)
        token = assert_problem(first, 402, "insufficient-ai-time")["resume_token"]
        ledger.grant(account, 3 * estimate if both_fit else estimate)
        before = len(fake_upstream.requests.snapshot())

        responses = asyncio.run(race(key, raw, token, procs[i], procs[j]))

        statuses = [r.headers.get("x-resume-token-status") for r in responses
                    if r.status_code == 200]
        assert statuses.count("consumed") == 1, (n, [(r.status_code, r.headers) for r in
                                                      responses])
        if both_fit:
            assert [r.status_code for r in responses] == [200, 200]
            assert sorted(statuses) == ["consumed", "invalid"]  # type: ignore[type-var]
        else:
            assert sorted(r.status_code for r in responses) == [200, 402]
            loser = next(r for r in responses if r.status_code == 402)
            assert_problem(loser, 402, "insufficient-ai-time")
        assert len(fake_upstream.requests.snapshot()) - before == len(statuses)
        totals = ledger.totals(account)
        assert totals["remaining"] - totals["debt"] == totals["deltas"], totals
        assert totals["holds"] == 0, totals
        assert len(ledger.usage(account)) == len(statuses)
