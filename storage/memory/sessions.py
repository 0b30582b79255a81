"""Dashboard sessions in this process (the `DashboardSessions` port) for a memory store: kept in
the store's `dashboard_sessions` dict by id hash; expired ones swept on open. A session opened
with an API key is found only while that key (the store's `api_keys`) is active."""

from __future__ import annotations

from storage.clock import MS_PER_SECOND, Clock, now_ms
from storage.dashboard_sessions import new_csrf_token, new_session_id, session_hash, well_formed
from storage.memory.store import MemoryStore
from storage.ports import DashboardSession, SessionKind


class MemorySessions:
    """Sessions in `store` (shared by every adapter on it; default: a store of its own),
    stamped by `clock` (UTC epoch ms)."""

    def __init__(self, store: MemoryStore | None = None, clock: Clock = now_ms) -> None:
        self._store = store if store is not None else MemoryStore()
        self._clock = clock

    async def open_session(self, kind: SessionKind, account_id: str | None,
                           ttl_s: int, key_id: str | None = None) -> tuple[str, DashboardSession]:
        now, live = self._clock(), self._store.dashboard_sessions
        for h in [h for h, s in live.items() if s.expires_at_ms <= now]:
            del live[h]
        session_id = new_session_id()
        session = DashboardSession(kind, account_id, new_csrf_token(),
                                   now + ttl_s * MS_PER_SECOND, key_id)
        live[session_hash(session_id)] = session
        return session_id, session

    async def find_session(self, session_id: str) -> DashboardSession | None:
        if not well_formed(session_id):
            return None
        session: DashboardSession | None = self._store.dashboard_sessions.get(
            session_hash(session_id))
        if session is None or session.expires_at_ms <= self._clock():
            return None
        if session.key_id is not None:
            key = self._store.api_keys.get(session.key_id)
            if key is None or key["revoked_at_ms"] is not None:
                return None
        return session

    async def end_session(self, session_id: str) -> bool:
        if not well_formed(session_id):
            return False
        session = self._store.dashboard_sessions.pop(session_hash(session_id), None)
        return session is not None and session.expires_at_ms > self._clock()
