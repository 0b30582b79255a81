"""The DashboardSessions contract (issue 12), on the memory store, SQLite and PostgreSQL: a
session is found by its id on every adapter of the store (another process), never by its hash,
and ends at sign-out or at its expiry (an injected clock sits exactly on the boundary)."""

from __future__ import annotations

from policies.compiled import Plan
from storage.dashboard_sessions import session_hash
from tests.integration.stores import Ledger, sessions_of
from tests.support import ManualClock

PLAN = Plan(key="it", daily_bonus=0, monthly_bonus_cap=None, welcome_bonus=0, included=0,
            rollover_cap=0)


async def test_open_find_and_end_across_processes(ledger: Ledger, clock: ManualClock) -> None:
    mine, other = sessions_of(ledger, clock), sessions_of(ledger, clock)
    sid, session = await mine.open_session("account", "acct_1", ttl_s=60)

    assert sid.startswith("ds_") and len(sid) > 40
    assert session.kind == "account" and session.account_id == "acct_1"
    assert session.expires_at_ms == clock() + 60_000
    assert await other.find_session(sid) == session
    assert await other.find_session(session_hash(sid)) is None  # the stored form is no id

    assert await other.end_session(sid) is True
    assert await mine.find_session(sid) is None
    assert await mine.end_session(sid) is False


async def test_a_session_ends_at_its_expiry(ledger: Ledger, clock: ManualClock) -> None:
    store = sessions_of(ledger, clock)
    sid, _ = await store.open_session("admin", None, ttl_s=30)
    clock.advance(29_999)
    found = await store.find_session(sid)
    assert found is not None and found.kind == "admin" and found.account_id is None
    clock.advance(1)
    assert await store.find_session(sid) is None
    assert await store.end_session(sid) is False


async def test_sessions_are_independent_and_tokens_differ(ledger: Ledger,
                                                          clock: ManualClock) -> None:
    store = sessions_of(ledger, clock)
    a, sa = await store.open_session("account", "acct_a", ttl_s=60)
    b, sb = await store.open_session("account", "acct_b", ttl_s=60)
    assert a != b and sa.csrf_token != sb.csrf_token
    await store.end_session(a)
    assert await store.find_session(b) == sb
    for bogus in ("", "ds_", "nope", "ds_" + "x" * 200):
        assert await store.find_session(bogus) is None


async def test_expired_sessions_are_swept_on_open(ledger: Ledger, clock: ManualClock) -> None:
    store = sessions_of(ledger, clock)
    old, _ = await store.open_session("account", "acct_1", ttl_s=1)
    clock.advance(5_000)
    await sessions_of(ledger, clock).open_session("account", "acct_1", ttl_s=60)
    clock.now_ms -= 5_000  # a clock moved back cannot revive a swept session
    assert await store.find_session(old) is None


async def test_revoking_the_key_ends_the_sessions_opened_with_it(ledger: Ledger,
                                                                 clock: ManualClock) -> None:
    acct = await ledger.create_account(PLAN)
    key_id, _ = await ledger.create_api_key(acct)
    other_key, _ = await ledger.create_api_key(acct)
    store = sessions_of(ledger, clock)
    sid, session = await store.open_session("account", acct, ttl_s=60, key_id=key_id)
    kept, _ = await store.open_session("account", acct, ttl_s=60, key_id=other_key)
    assert session.key_id == key_id
    assert await sessions_of(ledger, clock).find_session(sid) == session

    assert await ledger.revoke_api_key(key_id) is True
    assert await store.find_session(sid) is None  # on every process: checked on lookup
    assert await sessions_of(ledger, clock).find_session(sid) is None
    assert (await store.find_session(kept)) is not None  # another key's session lives on
    ghost, _ = await store.open_session("account", acct, ttl_s=60, key_id="key_unknown")
    assert await store.find_session(ghost) is None  # a key that does not exist opens nothing
