"""Faults on the production path, with real processes: a gateway killed with `kill -9` while
streams are in flight, Redis dying mid-traffic, PostgreSQL becoming unreachable, and upstreams
that hang or reset. Money must never be created, lost or stranded (SPEC §3, §6, §9)."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
import pytest

from tests.e2e.helpers import chat_body, encode, estimate_for, price
from tests.fakes.upstream import FakeUpstream
from tests.production._support import (
    GatewayProcess,
    Gateways,
    PgCluster,
    RedisServer,
    assert_problem,
    auth,
    ledger_for,
    run_cli,
    upstream_env,
    wait_until,
    write_policy,
)
from tests.support import LedgerHandle

CHARGED_RE = re.compile(r"charged_ms=(\d+)")
LEASE_S = 3
KILLED_STREAMS = 20


@dataclass
class StreamRead:
    """What a client saw of one SSE response."""

    status: int | None = None
    request_id: str | None = None
    events: int = 0
    comment: str | None = None
    error: str | None = None
    started: threading.Event = field(default_factory=threading.Event)

    @property
    def charged(self) -> int:
        assert self.comment is not None, self
        m = CHARGED_RE.search(self.comment)
        assert m, self.comment
        return int(m.group(1))


def read_stream(url: str, raw: bytes, key: str, out: StreamRead) -> StreamRead:
    try:
        with httpx.Client(timeout=httpx.Timeout(30.0)) as client, \
                client.stream("POST", url, content=raw, headers=auth(key)) as resp:
            out.status = resp.status_code
            out.request_id = resp.headers.get("x-request-id")
            for line in resp.iter_lines():
                if line.startswith("data:"):
                    out.events += 1
                    out.started.set()
                elif line.startswith(": gateway "):
                    out.comment = line
    except httpx.HTTPError as exc:
        out.error = f"{type(exc).__name__}: {exc}"
    finally:
        out.started.set()
    return out


def assert_money_consistent(ledger: LedgerHandle, account: str, funds: int) -> dict[str, int]:
    """Σ remaining − debt == Σ deltas; nothing held; what usage records charged is exactly
    what left the buckets."""
    totals = ledger.totals(account)
    assert totals["remaining"] - totals["debt"] == totals["deltas"], totals
    assert ledger.balance(account).held == 0
    charged = sum(u["charged"] for u in ledger.usage(account, limit=10_000))
    assert charged == funds - totals["remaining"] + totals["debt"], (charged, funds, totals)
    return totals


# ---- a. kill -9 with streams in flight ---------------------------------------------------------

@pytest.mark.postgres
def test_kill_9_with_streams_in_flight_strands_no_balance_and_records_every_call(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, pg_url: str,
) -> None:
    policy = write_policy(tmp_path, lease_s=LEASE_S, read_timeout_s=5, total_timeout_s=600)
    victim, survivor = gateways.start(2, policy, {"GATEWAY_DATABASE_URL": pg_url,
                                                  **upstream_env(fake_upstream.url)})
    ledger = ledger_for(pg_url, policy)
    path = "/v1/chat/completions"
    # slow streams on the victim: 200 events 50 ms apart (~10 s each)
    long_raws = [encode(chat_body(f"long stream {i}", max_tokens=200, model="gpt-fake-slow",
                                  stream=True)) for i in range(KILLED_STREAMS)]
    held_by_victim = sum(estimate_for(r, 200) for r in long_raws)
    short_raws = [encode(chat_body(f"short call {i}", max_tokens=5)) for i in range(5)]
    paced_raws = [encode(chat_body(f"paced stream {i}", max_tokens=5, model="gpt-fake-paced",
                                   stream=True)) for i in range(2)]
    per_call = max(estimate_for(r, 5) for r in short_raws + paced_raws)
    big_raw = encode(chat_body("one big call", max_tokens=200))
    funds = held_by_victim + 8 * per_call
    assert estimate_for(big_raw, 200) > 8 * per_call  # fits only once the victim's holds go
    account, key = ledger.funded(funds)

    reads = [StreamRead() for _ in long_raws]
    threads = [threading.Thread(target=read_stream, args=(victim.url + path, raw, key, out),
                                daemon=True) for raw, out in zip(long_raws, reads, strict=True)]
    started_at = time.monotonic()
    for t in threads:
        t.start()
    for out in reads:
        assert out.started.wait(15), "a stream on the victim did not start"
        assert out.status == 200 and out.request_id, out

    # the survivor serves calls meanwhile; each completes and settles
    completed: list[str] = []
    for raw in short_raws:
        r = httpx.post(survivor.url + path, content=raw, headers=auth(key), timeout=10)
        assert r.status_code == 200, r.text
        completed.append(r.headers["x-request-id"])
    for raw in paced_raws:
        out = read_stream(survivor.url + path, raw, key, StreamRead())
        assert out.status == 200 and out.comment and out.error is None, out
        completed.append(out.request_id)  # type: ignore[arg-type]

    # older than one lease: the victim's holds are alive only because it renews them
    time.sleep(max(0.0, started_at + LEASE_S + 1.5 - time.monotonic()))
    assert all(t.is_alive() for t in threads), "the slow streams ended before the kill"
    assert ledger.balance(account).held == held_by_victim
    blocked = httpx.post(survivor.url + path, content=big_raw, headers=auth(key), timeout=10)
    assert_problem(blocked, 402, "insufficient-ai-time")

    victim.kill9()
    killed_at = time.monotonic()
    killed = {out.request_id: estimate_for(raw, 200) for out, raw in zip(reads, long_raws,
                                                                         strict=True)}
    records = {u["id"]: u for u in ledger.usage(account, limit=1000)}
    # every admitted call has its record from admission on, the killed ones still in flight
    assert {rid: records[rid]["outcome"] for rid in killed} == dict.fromkeys(killed, "in_flight")
    assert ledger.balance(account).held == held_by_victim  # nobody released them...
    assert wait_until(lambda: ledger.balance(account).held == 0, timeout_s=15, interval_s=0.1)
    lapsed_after = time.monotonic() - killed_at  # ...the lease ran out
    assert lapsed_after <= LEASE_S + LEASE_S / 3 + 2.0, lapsed_after

    freed = httpx.post(survivor.url + path, content=big_raw, headers=auth(key), timeout=10)
    assert freed.status_code == 200, freed.text
    completed.append(freed.headers["x-request-id"])

    for t in threads:
        t.join(10)
    for out in reads:  # every victim stream was cut off, none finished
        assert out.error is not None and out.comment is None and out.events < 200, out

    # the survivor's lease sweep closes the killed calls' records: interrupted, charged nothing,
    # the estimate recorded as unbilled (bounded poll: lapse + one lease + one sweep period)
    def interrupted() -> bool:
        rows = {u["id"]: u for u in ledger.usage(account, limit=1000)}
        return all(rows[rid]["outcome"] == "interrupted" for rid in killed)

    assert wait_until(interrupted, timeout_s=2 * LEASE_S + LEASE_S / 3 + 5, interval_s=0.2)
    ids = collections.Counter(u["id"] for u in ledger.usage(account, limit=1000))
    assert all(ids[rid] == 1 for rid in completed), ids  # each completed call: one record
    assert all(ids[rid] == 1 for rid in killed), ids  # each killed call: one record too
    assert sum(ids.values()) == len(completed) + len(killed)
    shown = run_cli(["--config", str(policy), "usage", account, "--json", "--limit", "1000"],
                    {"GATEWAY_DATABASE_URL": pg_url}, tmp_path)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    listed = {r["id"]: r for r in json.loads(shown.stdout)}
    for rid, estimate in killed.items():
        r = listed[rid]
        assert (r["outcome"], r["charged"], r["unbilled"], r["estimated"]) == (
            "interrupted", 0, estimate, estimate), r
        assert r["streamed"] and r["operation"] == "chat" and r["model"] == "gpt-fake-slow", r
    text = run_cli(["--config", str(policy), "usage", account, "--limit", "1000"],
                   {"GATEWAY_DATABASE_URL": pg_url}, tmp_path)
    lines = [line for line in text.stdout.splitlines() if "(none, interrupted)" in line]
    assert len(lines) == len(killed), text.stdout
    assert all("unbilled" in line for line in lines), lines
    assert_money_consistent(ledger, account, funds)
    assert survivor.alive()


# ---- b. Redis stops mid-traffic ----------------------------------------------------------------

@dataclass
class Outcome:
    phase: str
    status: int
    request_id: str
    charged: int | None
    seconds: float


class Traffic:
    """Calls in a background thread, two at a time (one per gateway), until stopped. Every
    third call is a stream. `phase` labels what is going on while a call runs."""

    def __init__(self, procs: list[GatewayProcess], key: str) -> None:
        self.procs = procs
        self.key = key
        self.phase = "before"
        self.results: list[Outcome] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(*(self._lane(client, gw, n) for n, gw in enumerate(self.procs)))

    async def _lane(self, client: httpx.AsyncClient, gw: GatewayProcess, lane: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            phase = self.phase
            stream = n % 3 == 0
            raw = encode(chat_body(f"traffic {lane}.{n}", max_tokens=5,
                                   model="gpt-fake-paced" if stream else "gpt-fake",
                                   stream=stream))
            t0 = time.monotonic()
            try:
                async with client.stream("POST", gw.url + "/v1/chat/completions", content=raw,
                                         headers=auth(self.key)) as resp:
                    charged: int | None = None
                    if stream:
                        async for line in resp.aiter_lines():
                            m = CHARGED_RE.search(line) if line.startswith(": gateway") \
                                else None
                            if m:
                                charged = int(m.group(1))
                    else:
                        await resp.aread()
                        if "x-gateway-charged-ms" in resp.headers:
                            charged = int(resp.headers["x-gateway-charged-ms"])
                    self.results.append(Outcome(phase, resp.status_code,
                                                resp.headers.get("x-request-id", ""), charged,
                                                time.monotonic() - t0))
            except httpx.HTTPError as exc:
                self.errors.append(f"{phase}: {type(exc).__name__}: {exc}")


def _readyz(gw: GatewayProcess) -> tuple[int, dict[str, Any]]:
    r = httpx.get(gw.url + "/readyz", timeout=10)
    return r.status_code, r.json()


def _metric(gw: GatewayProcess, series: str) -> float:
    text = httpx.get(gw.url + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _resume_round(ledger: LedgerHandle, issuer: GatewayProcess, retrier: GatewayProcess,
                  text: str) -> str:
    """402 on `issuer`, grant, retry with the token on `retrier`: the token status."""
    account, key = ledger.funded(0)
    raw = encode(chat_body(text, max_tokens=5))
    first = httpx.post(issuer.url + "/v1/chat/completions", content=raw, headers=auth(key),
                       timeout=20)
    token = assert_problem(first, 402, "insufficient-ai-time")["resume_token"]
    ledger.grant(account, estimate_for(raw, 5))
    retry = httpx.post(retrier.url + "/v1/chat/completions", content=raw,
                       headers={**auth(key), "x-resume-token": token}, timeout=20)
    assert retry.status_code == 200, retry.text
    return retry.headers["x-resume-token-status"]


@pytest.mark.postgres
@pytest.mark.redis
def test_redis_dying_mid_traffic_loses_no_call_and_no_money(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, pg_url: str,
    redis_server: RedisServer,
) -> None:
    policy = write_policy(tmp_path, read_timeout_s=5)
    procs = gateways.start(2, policy, {"GATEWAY_DATABASE_URL": pg_url,
                                       "GATEWAY_REDIS_URL": redis_server.url,
                                       **upstream_env(fake_upstream.url)})
    a, b = procs
    ledger = ledger_for(pg_url, policy)
    for gw in procs:
        assert _readyz(gw) == (200, {"status": "ready", "checks": {
            "database": "ok", "redis": "ok", "policy": "ok"}})
    # Redis really is the shared store: a token issued by one process is consumed by the other
    assert _resume_round(ledger, a, b, "shared before the outage") == "consumed"

    funds = 500_000
    account, key = ledger.funded(funds)
    with Traffic(procs, key) as traffic:
        time.sleep(1.0)
        redis_server.kill()
        traffic.phase = "outage"
        time.sleep(2.0)
        for gw in procs:
            status, doc = _readyz(gw)
            assert status == 200, doc  # Redis carries no money: degraded, still ready
            assert doc["checks"]["database"] == "ok", doc
            assert doc["checks"]["redis"].startswith("degraded: unreachable"), doc
        # the resume flow degrades to the issuing process, it does not fail
        assert _resume_round(ledger, a, a, "issued during the outage") == "consumed"
        traffic.phase = "restarting"
        redis_server.start()  # same port, empty
        for gw in procs:
            assert wait_until(lambda gw=gw: _readyz(gw)[1]["checks"]["redis"] == "ok",
                              timeout_s=15, interval_s=0.2)
        traffic.phase = "after"
        time.sleep(2.5)  # past the Redis breaker's 2 s cooldown: shared state is back

    assert not traffic.errors, traffic.errors[:5]
    by_phase = collections.Counter(o.phase for o in traffic.results)
    assert by_phase["before"] >= 3 and by_phase["outage"] >= 3 and by_phase["after"] >= 3, \
        by_phase
    bad = [o for o in traffic.results if o.status != 200 or o.charged is None]
    assert not bad, bad[:5]
    slow = [o for o in traffic.results if o.phase == "outage" and o.seconds > 2.5]
    assert not slow, slow[:5]  # degraded, not stalled (the Redis client's timeouts are 2 s)
    for gw in procs:  # the outage really hit the rate-limit counters of both processes
        assert _metric(gw, 'gateway_store_errors_total{step="redis_rate_limits"}') > 0
    ids = [o.request_id for o in traffic.results]
    usage = ledger.usage(account, limit=10_000)
    assert sorted(u["id"] for u in usage) == sorted(ids)  # one record per call, no more
    assert sum(o.charged for o in traffic.results) == sum(u["charged"] for u in usage)  # type: ignore[misc]
    totals = assert_money_consistent(ledger, account, funds)
    assert totals["holds"] == 0, totals
    assert _resume_round(ledger, b, a, "shared after the outage") == "consumed"


@pytest.mark.postgres
@pytest.mark.redis
def test_a_stalled_redis_slows_calls_by_its_timeout_and_loses_nothing(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, pg_url: str,
    redis_server: RedisServer,
) -> None:
    """Redis frozen (SIGSTOP: connections open, no answers) rather than gone: calls wait for
    the Redis client's 2 s timeout, then go on without it."""
    policy = write_policy(tmp_path, read_timeout_s=5)
    (gw,) = gateways.start(1, policy, {"GATEWAY_DATABASE_URL": pg_url,
                                       "GATEWAY_REDIS_URL": redis_server.url,
                                       **upstream_env(fake_upstream.url)})
    ledger = ledger_for(pg_url, policy)
    funds = 100_000
    account, key = ledger.funded(funds)
    url = gw.url + "/v1/chat/completions"

    def call(text: str) -> tuple[httpx.Response, float]:
        t0 = time.monotonic()
        r = httpx.post(url, content=encode(chat_body(text)), headers=auth(key), timeout=60)
        return r, time.monotonic() - t0

    assert call("before")[0].status_code == 200
    assert redis_server.proc is not None
    redis_server.proc.send_signal(signal.SIGSTOP)
    try:
        stalled = [call(f"stalled {i}") for i in range(2)]
        status, doc = _readyz(gw)
        assert status == 200 and doc["checks"]["redis"].startswith("degraded"), doc
    finally:
        redis_server.proc.send_signal(signal.SIGCONT)
    for r, took in stalled:
        assert r.status_code == 200, r.text
        assert took < 1.5, took  # at most one short Redis timeout, then the breaker skips it
    assert wait_until(lambda: _readyz(gw)[1]["checks"]["redis"] == "ok", timeout_s=10,
                      interval_s=0.2)
    after, took = call("after")
    assert after.status_code == 200 and took < 1.5, took
    assert len(ledger.usage(account)) == 4
    totals = assert_money_consistent(ledger, account, funds)
    assert totals["holds"] == 0


# ---- c. PostgreSQL unreachable ---------------------------------------------------------------

@pytest.mark.postgres
def test_store_unreachable_deny_answers_503_allow_proxies_unbilled_and_it_recovers(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, pg_cluster: PgCluster,
) -> None:
    url = pg_cluster.create_database()
    policy = write_policy(tmp_path, read_timeout_s=5)
    # keys stay cached through the outage (the call that caches them runs before it)
    (gw,) = gateways.start(1, policy, {"GATEWAY_DATABASE_URL": url,
                                       "GATEWAY_KEY_CACHE_TTL_S": "600",
                                       **upstream_env(fake_upstream.url)})
    spool = Path(gw.env["GATEWAY_UNBILLED_PATH"])
    ledger = ledger_for(url, policy)
    funds = 100_000
    account, key = ledger.funded(funds)
    unseen_key = ledger.key(account)  # never used before the outage: not in the key cache
    deny, allow = gw.url + "/v1/chat/completions", gw.url + "/v1/allow/chat/completions"
    warm = httpx.post(deny, content=encode(chat_body("warm up")), headers=auth(key), timeout=10)
    assert warm.status_code == 200, warm.text
    settled = [warm.headers["x-request-id"]]
    # a stream admitted before the outage, still running when the store goes away (~2 s)
    inflight_body = chat_body("in flight", max_tokens=40, model="gpt-fake-slow", stream=True)
    inflight = StreamRead()
    reader = threading.Thread(target=read_stream, daemon=True,
                              args=(deny, encode(inflight_body), key, inflight))
    reader.start()
    assert inflight.started.wait(10) and inflight.status == 200, inflight

    pg_cluster.stop()
    sent_upstream = len(fake_upstream.requests.snapshot())
    for body in (chat_body("denied"), chat_body("denied stream", stream=True)):
        for k in (key, unseen_key):
            r = httpx.post(deny, content=encode(body), headers=auth(k), timeout=20)
            assert_problem(r, 503, "store-unavailable")
    assert len(fake_upstream.requests.snapshot()) == sent_upstream  # nothing went upstream
    status, doc = _readyz(gw)
    assert status == 503 and doc["checks"]["database"].startswith("unreachable"), doc

    # fail mode allow: proxied, and said to be unbilled
    body = chat_body("allowed while the store is down", max_tokens=6)
    r = httpx.post(allow, content=encode(body), headers=auth(key), timeout=20)
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-unbilled"] == "store-unavailable"
    assert "x-gateway-charged-ms" not in r.headers
    assert r.json()["choices"][0]["message"]["content"] == " tok" * 6
    stream_body = chat_body("allowed stream", max_tokens=4, model="gpt-fake-paced", stream=True)
    out = read_stream(allow, encode(stream_body), key, StreamRead())
    assert out.status == 200 and out.error is None and out.events >= 4, out
    assert out.comment is not None and "unbilled=store-unavailable" in out.comment, out
    assert len(fake_upstream.requests.snapshot()) == sent_upstream + 2
    reader.join(15)
    # the in-flight stream finished for its client; its charge could not be recorded
    assert inflight.error is None and inflight.events > 40, inflight  # role, 40 tokens, …
    assert inflight.comment is not None and "unbilled=store-unavailable" in inflight.comment
    unbilled = {r.headers["x-request-id"]: price(body, 6),
                out.request_id: price(stream_body, 4),
                inflight.request_id: price(inflight_body, 40)}

    pg_cluster.start()  # the same gateway process comes back by itself
    assert wait_until(lambda: _readyz(gw)[0] == 200, timeout_s=15, interval_s=0.2)
    back = httpx.post(deny, content=encode(chat_body("back again")), headers=auth(unseen_key),
                      timeout=10)
    assert back.status_code == 200, back.text
    settled.append(back.headers["x-request-id"])
    assert gw.alive()
    usage = {u["id"]: u for u in ledger.usage(account)}
    # the unbilled calls are not in the ledger (yet); the in-flight stream has the record its
    # admission opened, not charged (in flight, or interrupted once its hold lapsed) — unless
    # the immediate shutdown (a crash) came before that admission's asynchronous commit reached
    # the WAL on disk (migration 0017_pg_fast): then neither its record nor its hold survived,
    # and the reconciliation below records and charges the call all the same
    assert set(usage) - {inflight.request_id} == set(settled), usage.keys()
    if inflight.request_id in usage:
        assert usage[inflight.request_id]["outcome"] in ("in_flight", "interrupted")
        assert usage[inflight.request_id]["charged"] == 0
    # the in-flight stream's hold is no longer renewed: it lapses within a lease
    assert wait_until(lambda: ledger.balance(account).held == 0, timeout_s=LEASE_S + 3)
    assert_money_consistent(ledger, account, funds)  # (the lapsed hold's row stays, expired)

    # reconciliation: the spool settles once, however often it is replayed
    assert spool.exists(), "fail mode allow served calls but spooled nothing"
    kept = tmp_path / "spool-copy.jsonl"
    shutil.copy(spool, kept)
    env = {"GATEWAY_DATABASE_URL": url, "GATEWAY_UNBILLED_PATH": str(spool)}
    done = run_cli(["--config", str(policy), "reconcile"], env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    usage = {u["id"]: u for u in ledger.usage(account)}
    assert set(usage) == set(settled) | set(unbilled), usage.keys()
    for rid, units in unbilled.items():
        assert usage[rid]["charged"] == units, usage[rid]
    after_first = ledger.totals(account)
    shutil.copy(kept, spool)  # the same spool again: nothing is charged twice
    again = run_cli(["--config", str(policy), "reconcile"], env, tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert ledger.totals(account) == after_first
    assert len(ledger.usage(account)) == len(settled) + len(unbilled)
    assert_money_consistent(ledger, account, funds)


@pytest.mark.postgres
def test_fail_mode_allow_keeps_serving_a_known_key_through_a_long_outage(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, pg_cluster: PgCluster,
) -> None:
    url = pg_cluster.create_database()
    policy = write_policy(tmp_path, read_timeout_s=5)
    (gw,) = gateways.start(1, policy, {"GATEWAY_DATABASE_URL": url,
                                       "GATEWAY_KEY_CACHE_TTL_S": "1",
                                       **upstream_env(fake_upstream.url)})
    ledger = ledger_for(url, policy)
    _account, key = ledger.funded(100_000)
    allow = gw.url + "/v1/allow/chat/completions"
    assert httpx.post(allow, content=encode(chat_body("known key")), headers=auth(key),
                      timeout=10).status_code == 200
    pg_cluster.stop()
    time.sleep(1.5)  # the outage outlasts the key cache entry
    r = httpx.post(allow, content=encode(chat_body("still allowed?")), headers=auth(key),
                   timeout=20)
    assert r.status_code == 200, r.text
    assert r.headers["x-gateway-unbilled"] == "store-unavailable"


# ---- d. upstreams that hang or reset --------------------------------------------------------

@pytest.mark.postgres
def test_hanging_and_resetting_upstreams_are_not_charged(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, pg_url: str,
) -> None:
    read_timeout = 1.0
    policy = write_policy(tmp_path, read_timeout_s=read_timeout, total_timeout_s=600)
    (gw,) = gateways.start(1, policy, {"GATEWAY_DATABASE_URL": pg_url,
                                       **upstream_env(fake_upstream.url)})
    ledger = ledger_for(pg_url, policy)
    funds = 50_000
    account, key = ledger.funded(funds)
    cases = [("gpt-fake-hang", False, 504, "upstream-timeout", "upstream_timeout"),
             ("gpt-fake-hang", True, 504, "upstream-timeout", "upstream_timeout"),
             ("gpt-fake-reset", False, 502, "upstream-unavailable", "upstream_connection"),
             ("gpt-fake-reset", True, 502, "upstream-unavailable", "upstream_connection")]
    outcomes = {}
    for model, stream, status, slug, outcome in cases:
        raw = encode(chat_body(f"{model} stream={stream}", max_tokens=50, model=model,
                               stream=stream))
        t0 = time.monotonic()
        r = httpx.post(gw.url + "/v1/chat/completions", content=raw, headers=auth(key),
                       timeout=30)
        took = time.monotonic() - t0
        doc = assert_problem(r, status, slug)
        assert "not charged" in doc["detail"].lower(), doc
        if status == 504:
            assert read_timeout * 0.9 <= took < read_timeout + 4, took
        outcomes[r.headers["x-request-id"]] = outcome
        balance = ledger.balance(account)
        assert balance.held == 0  # the hold is released with the answer
        assert balance.available == funds  # and nothing was charged
    assert len(fake_upstream.requests.snapshot()) == len(cases)  # each one did go upstream
    usage = {u["id"]: u for u in ledger.usage(account)}
    assert set(usage) == set(outcomes)
    for rid, u in usage.items():
        assert u["charged"] == 0 and u["outcome"] == outcomes[rid], u
    totals = assert_money_consistent(ledger, account, funds)
    assert totals == {"remaining": funds, "debt": 0, "deltas": funds, "holds": 0}
    assert gw.alive()


# ---- e. SIGTERM (a rolling restart) drains what is in flight ----------------------------------

@pytest.mark.postgres
def test_sigterm_lets_in_flight_calls_finish_and_settle(
    tmp_path: Path, gateways: Gateways, fake_upstream: FakeUpstream, pg_url: str,
) -> None:
    policy = write_policy(tmp_path, read_timeout_s=5)
    (gw,) = gateways.start(1, policy, {"GATEWAY_DATABASE_URL": pg_url,
                                       **upstream_env(fake_upstream.url)})
    ledger = ledger_for(pg_url, policy)
    funds = 100_000
    account, key = ledger.funded(funds)
    url = gw.url + "/v1/chat/completions"
    stream_body = chat_body("drain me", max_tokens=60, model="gpt-fake-slow", stream=True)
    stream = StreamRead()
    streamer = threading.Thread(target=read_stream, daemon=True,
                                args=(url, encode(stream_body), key, stream))
    streamer.start()
    assert stream.started.wait(10)
    fake_upstream.delay_ms = 1500  # a buffered call whose upstream answers after the SIGTERM
    buffered: dict[str, Any] = {}
    json_body = chat_body("drain me too", max_tokens=5)

    def post_buffered() -> None:
        try:
            buffered["resp"] = httpx.post(url, content=encode(json_body), headers=auth(key),
                                          timeout=30)
        except httpx.HTTPError as exc:
            buffered["error"] = repr(exc)

    poster = threading.Thread(target=post_buffered, daemon=True)
    poster.start()
    assert len(fake_upstream.wait_for_requests(2, timeout_s=5)) >= 2
    os.killpg(gw.pid, signal.SIGTERM)
    gw.proc.wait(timeout=20)  # uvicorn's graceful shutdown: 10 s
    streamer.join(10)
    poster.join(10)

    assert stream.error is None and stream.comment is not None, stream
    assert stream.charged == price(stream_body, 60)
    assert "error" not in buffered, buffered
    resp = buffered["resp"]
    assert resp.status_code == 200, resp.text
    assert int(resp.headers["x-gateway-charged-ms"]) == price(json_body, 5)
    usage = {u["id"]: u["charged"] for u in ledger.usage(account)}
    assert usage == {stream.request_id: stream.charged,
                     resp.headers["x-request-id"]: price(json_body, 5)}
    totals = assert_money_consistent(ledger, account, funds)
    assert totals["holds"] == 0  # released by settlement, not left to lapse
