"""The console's cross-account queries (`storage.ports.ConsoleQueries`) on a memory store."""

from __future__ import annotations

from typing import Any

from storage.clock import day_start_ms
from storage.memory.store import MemoryStore

_COLUMNS = ("id", "plan_key", "subscription_status", "created_at_ms")


class MemoryConsole:
    """ConsoleQueries over `store`'s accounts and daily usage rollup."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    async def search_accounts(self, query: str, limit: int,
                              after_id: str | None) -> list[dict[str, Any]]:
        needle = query.lower()
        rows = sorted(self._store.accounts.values(), key=lambda r: r["id"])
        return [{k: r[k] for k in _COLUMNS} for r in rows
                if needle in r["id"].lower() and (after_id is None or r["id"] > after_id)][:limit]

    async def usage_by_day(self, from_ms: int,
                           to_ms_: int) -> list[tuple[int, str, int, int]]:
        groups: dict[tuple[int, str], list[int]] = {}
        for r in self._store.usage_daily.values():
            if day_start_ms(from_ms) <= r["day_ms"] < to_ms_:
                group = groups.setdefault((r["day_ms"], r["operation"]), [0, 0])
                group[0] += r["calls"]
                group[1] += r["charged"]
        return [(day, op, calls, charged)
                for (day, op), (calls, charged) in sorted(groups.items())]
