"""Admission under contention, on SQLite and PostgreSQL: a balance that covers exactly N estimates
admits exactly N calls however many race for it, and settling them all keeps the books exact.

- In-process: 50 admits with asyncio.gather — over one SqlLedger on SQLite (its runner is inline),
  over 4 SqlLedger instances (4 connection pools, interleaved) on PostgreSQL.
- Multi-process: 4 Python processes, each racing 25 admits, against one account.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from policies.compiled import Plan
from storage.engine.buckets import Source
from storage.ports import Admission, CallRecord, Shortfall
from storage.sql.engine import is_sqlite
from storage.sql.ledger import SqlLedger
from tests.integration.stores import SQL_STORES

NewAccount = Callable[[Plan], Awaitable[str]]

REPO = Path(__file__).resolve().parents[2]
PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)
ESTIMATE = 6_000
COVERED = 10
ATTEMPTS = 50


@pytest.fixture(params=SQL_STORES)
def ledger_kind(request: pytest.FixtureRequest) -> str:
    """SQL stores only: this module is about row locks and connection pools."""
    return str(request.param)


def call(account_id: str, request_id: str) -> CallRecord:
    return CallRecord(request_id=request_id, account_id=account_id, operation="it.race",
                      model=None, upstream_status=200, duration_ms=100, estimated=ESTIMATE)


async def test_concurrent_admits_never_overcommit(ledger: SqlLedger, new_account: NewAccount,
                                                  probe: Any) -> None:
    url = ledger.runner.url
    ledgers = [ledger] if is_sqlite(url) else [ledger] + [SqlLedger(url) for _ in range(3)]
    try:
        acct = await new_account(PLAN)
        await ledger.grant(acct, Source.GIFT, COVERED * ESTIMATE, "fund", None, "race funds")

        results = await _gather(
            ledgers[i % len(ledgers)].admit(acct, ESTIMATE, "it.race", 120, PLAN)
            for i in range(ATTEMPTS))

        admitted = [r for r in results if isinstance(r, Admission)]
        refused = [r for r in results if isinstance(r, Shortfall)]
        assert len(admitted) == COVERED and len(refused) == ATTEMPTS - COVERED
        assert len({a.hold_id for a in admitted}) == COVERED
        assert sorted(a.available_after for a in admitted) == [
            ESTIMATE * k for k in range(COVERED)]  # each admission saw the previous ones
        assert all(r.available == 0 and r.required == ESTIMATE for r in refused)
        snap = await ledger.balance(acct)
        assert snap.held == COVERED * ESTIMATE and snap.available == 0

        rng = random.Random(20250901)
        charges = [rng.randint(0, ESTIMATE) for _ in admitted]
        settled = await _gather(
            ledgers[i % len(ledgers)].settle(a.hold_id, call(acct, f"req_{i}"), c, "clamp")
            for i, (a, c) in enumerate(zip(admitted, charges, strict=True)))

        assert [s.charged for s in settled] == charges
        assert all(s.unbilled == 0 and not s.replayed for s in settled)
        t = await probe.assert_invariant(acct)
        assert t["holds"] == 0 and t["debt"] == 0
        assert t["remaining"] == COVERED * ESTIMATE - sum(charges)
        snap = await ledger.balance(acct)
        assert snap.held == 0 and snap.available == COVERED * ESTIMATE - sum(charges)
    finally:
        for extra in ledgers[1:]:
            await extra.close()


async def _gather(aws: Any) -> list[Any]:
    import asyncio

    return list(await asyncio.gather(*aws))


# ---- several processes against one database --------------------------------------------------

WORKER = r"""
import asyncio, json, sys
from policies.compiled import Plan
from storage.ports import Admission
from storage.sql.ledger import SqlLedger

url, account, attempts, estimate, in_flight = sys.argv[1:6]
attempts, estimate, in_flight = int(attempts), int(estimate), int(in_flight)
plan = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)

async def main():
    ledger = SqlLedger(url)
    await ledger.runner.ping()            # connect before the start signal
    print("ready", flush=True)
    sys.stdin.readline()                  # every worker starts on the same "go"
    gate = asyncio.Semaphore(in_flight)

    async def one():
        async with gate:
            return await ledger.admit(account, estimate, "it.mp", 120, plan)

    results = await asyncio.gather(*(one() for _ in range(attempts)))
    await ledger.close()
    print(json.dumps([r.hold_id for r in results if isinstance(r, Admission)]), flush=True)

asyncio.run(main())
"""

PROCESSES = 4
PER_PROCESS = 25
MP_COVERED = 50
# In-flight admits per worker: the Runner's PostgreSQL pool_size, so 4 workers stay well under
# max_connections (100) even when other suites share the server.
IN_FLIGHT = 10


def _worker_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p))


async def _funded_account(url: str, units: int) -> str:
    ledger = SqlLedger(url)
    try:
        acct = await ledger.create_account(PLAN)
        await ledger.grant(acct, Source.GIFT, units, "fund", None, "race funds")
        return acct
    finally:
        await ledger.close()


async def _settle_all_and_audit(url: str, acct: str, hold_ids: list[str],
                                charge: int) -> dict[str, int]:
    ledger = SqlLedger(url)
    try:
        for i, hold_id in enumerate(hold_ids):
            done = await ledger.settle(hold_id, call(acct, f"mp_{i}"), charge, "clamp")
            assert done.charged == charge and done.unbilled == 0 and not done.replayed
        t = await ledger.totals(acct)
        assert t["remaining"] - t["debt"] == t["deltas"], t
        return t
    finally:
        await ledger.close()


async def test_admission_across_processes(ledger_url: str) -> None:
    """4 processes × 25 admits racing for 50 covered estimates (SqlLedger as shipped)."""
    acct = await _funded_account(ledger_url, MP_COVERED * ESTIMATE)
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, ledger_url, acct, str(PER_PROCESS), str(ESTIMATE),
             str(IN_FLIGHT)],
            cwd=REPO, env=_worker_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        for _ in range(PROCESSES)
    ]
    try:
        for w in workers:
            assert w.stdout is not None
            line = w.stdout.readline()
            assert line.strip() == "ready", _failure(w, line)
        for w in workers:  # release them together
            assert w.stdin is not None
            w.stdin.write("go\n")
            w.stdin.flush()
        outputs = [w.communicate(timeout=60) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()

    hold_ids: list[str] = []
    for w, (out, err) in zip(workers, outputs, strict=True):
        assert w.returncode == 0, err
        hold_ids += json.loads(out.strip().splitlines()[-1])

    # 100 attempts ran against 50 covered estimates: never more, and exactly that many
    assert len(hold_ids) == MP_COVERED and len(set(hold_ids)) == MP_COVERED
    check = SqlLedger(ledger_url)
    try:
        snap = await check.balance(acct)
    finally:
        await check.close()
    assert snap.held == MP_COVERED * ESTIMATE and snap.available == 0

    t = await _settle_all_and_audit(ledger_url, acct, hold_ids, ESTIMATE)
    assert t == {"remaining": 0, "debt": 0, "deltas": 0, "holds": 0}


def _failure(worker: subprocess.Popen[str], line: str) -> str:
    worker.kill()
    _, err = worker.communicate(timeout=10)
    return f"worker did not start: {line!r}\n{err}"


# ---- forked workers (a pre-forking server imports the app, then forks) -----------------------

FORKED = r"""
import asyncio, json, os, sys
from policies.compiled import Plan
from storage.ports import CallRecord
from storage.ids import new_sequential_id
from storage.sql.ledger import SqlLedger

url, account = sys.argv[1:3]
plan = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)

async def one_call():
    ledger = SqlLedger(url)
    try:
        adm = await ledger.admit(account, 1000, "it.fork", 60, plan)
        request_id = new_sequential_id("req")   # as gateway/proxy/pipeline.py names requests
        rec = CallRecord(request_id=request_id, account_id=account, operation="it.fork",
                         model=None, upstream_status=200, duration_ms=5, estimated=1000)
        done = await ledger.settle(adm.hold_id, rec, 1000, "clamp")
        return {"hold": adm.hold_id, "req": request_id, "charged": done.charged,
                "replayed": done.replayed}
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        await ledger.close()

read_end, write_end = os.pipe()
pid = os.fork()
if pid == 0:
    os.write(write_end, json.dumps(asyncio.run(one_call())).encode())
    os._exit(0)
os.waitpid(pid, 0)
child = json.loads(os.read(read_end, 1 << 16))
print(json.dumps([child, asyncio.run(one_call())]))
"""


async def test_forked_workers_do_not_share_ids(ledger_url: str) -> None:
    acct = await _funded_account(ledger_url, 10_000)
    proc = subprocess.run([sys.executable, "-c", FORKED, ledger_url, acct], cwd=REPO,
                          env=_worker_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    child, parent = json.loads(proc.stdout.strip().splitlines()[-1])
    check = SqlLedger(ledger_url)
    try:
        t = await check.totals(acct)
    finally:
        await check.close()
    assert t["remaining"] - t["debt"] == t["deltas"], t
    assert "error" not in child and "error" not in parent, (child, parent)
    assert child["hold"] != parent["hold"] and child["req"] != parent["req"], (child, parent)
    assert child["charged"] == parent["charged"] == 1000, (child, parent)
    assert t["remaining"] == 8_000  # both calls were paid for
