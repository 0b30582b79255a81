"""Dashboard sessions in the SQL store (the `DashboardSessions` port): one row per session, keyed
by the SHA-256 of its id, so every gateway process on the database sees a sign-in and a sign-out
at once. Expired rows are swept on open (at most once a minute per process). A session opened
with an API key (`key_id`) is found only while that key is active: revoking the key ends it on
every process, checked on each lookup against `api_keys`."""

from __future__ import annotations

import time

from storage.clock import MS_PER_SECOND, Clock, now_ms
from storage.dashboard_sessions import new_csrf_token, new_session_id, session_hash, well_formed
from storage.ports import DashboardSession, SessionKind
from storage.sql.engine import Runner
from storage.sql.executor import Executor, Sql

_INSERT = Sql("INSERT INTO dashboard_sessions (session_hash, kind, account_id, csrf_token,"
              " created_at_ms, expires_at_ms, key_id) VALUES (?, ?, ?, ?, ?, ?, ?)")
_SWEEP = Sql("DELETE FROM dashboard_sessions WHERE expires_at_ms <= ?")
_SELECT = Sql("SELECT s.kind, s.account_id, s.csrf_token, s.expires_at_ms, s.key_id"
              " FROM dashboard_sessions s LEFT JOIN api_keys k ON k.id = s.key_id"
              " WHERE s.session_hash = ? AND s.expires_at_ms > ?"
              " AND (s.key_id IS NULL OR (k.id IS NOT NULL AND k.revoked_at_ms IS NULL))")
_DELETE = Sql("DELETE FROM dashboard_sessions WHERE session_hash = ? AND expires_at_ms > ?")
_SWEEP_EVERY_S = 60.0


async def _open(db: Executor, h: str, s: DashboardSession, at: int,
                sweep: bool) -> None:
    if sweep:
        await db.run(_SWEEP, (at,))
    await db.run(_INSERT, (h, s.kind, s.account_id, s.csrf_token, at, s.expires_at_ms,
                          s.key_id))


async def _find(db: Executor, h: str, at: int) -> DashboardSession | None:
    row = await db.one(_SELECT, (h, at))
    if row is None:
        return None
    kind: SessionKind = "admin" if row[0] == "admin" else "account"
    return DashboardSession(kind, row[1], row[2], int(row[3]), row[4])


async def _end(db: Executor, h: str, at: int) -> bool:
    return bool(await db.run(_DELETE, (h, at)) == 1)


class SqlSessions:
    """DashboardSessions on the ledger database (`runner`), stamped by `clock` (UTC epoch ms).
    Raises StoreUnavailable when the database is unreachable."""

    def __init__(self, runner: Runner, clock: Clock = now_ms) -> None:
        self._runner = runner
        self._clock = clock
        self._last_sweep = 0.0

    async def open_session(self, kind: SessionKind, account_id: str | None,
                           ttl_s: int, key_id: str | None = None) -> tuple[str, DashboardSession]:
        now = self._clock()
        sweep = time.monotonic() - self._last_sweep > _SWEEP_EVERY_S
        if sweep:
            self._last_sweep = time.monotonic()
        session_id = new_session_id()
        session = DashboardSession(kind, account_id, new_csrf_token(),
                                   now + ttl_s * MS_PER_SECOND, key_id)
        await self._runner.run_raw(_open, session_hash(session_id), session, now, sweep)
        return session_id, session

    async def find_session(self, session_id: str) -> DashboardSession | None:
        if not well_formed(session_id):
            return None
        return await self._runner.run_raw(_find, session_hash(session_id), self._clock())

    async def end_session(self, session_id: str) -> bool:
        if not well_formed(session_id):
            return False
        return await self._runner.run_raw(_end, session_hash(session_id), self._clock())
