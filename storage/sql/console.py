"""The console's cross-account queries (`storage.ports.ConsoleQueries`) on the SQL store:
account search (a `LIKE` on the id, wildcards escaped) and usage per UTC day summed from the
daily rollup `usage_daily` (≤ 31 × operations × models × keys × accounts rows a month, whatever
the number of calls)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from storage.clock import day_start_ms
from storage.sql.engine import Runner
from storage.sql.tables import accounts, usage_daily


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def search_accounts_tx(conn: Connection, query: str, limit: int,
                       after_id: str | None) -> list[dict[str, Any]]:
    """Accounts whose id contains `query` (case-insensitive), by id after `after_id`."""
    pattern = "%" + _escape_like(query.lower()) + "%"
    q = (select(accounts.c.id, accounts.c.plan_key, accounts.c.subscription_status,
                accounts.c.created_at_ms)
         .where(func.lower(accounts.c.id).like(pattern, escape="\\"))
         .order_by(accounts.c.id).limit(limit))
    if after_id is not None:
        q = q.where(accounts.c.id > after_id)
    return [dict(r._mapping) for r in conn.execute(q)]


def usage_by_day_tx(conn: Connection, from_ms: int,
                    to_ms_: int) -> list[tuple[int, str, int, int]]:
    """(day start ms, operation, Σ calls, Σ charged) per UTC day and operation of
    [from_ms, to_ms_), oldest first."""
    rows = conn.execute(
        select(usage_daily.c.day_ms, usage_daily.c.operation, func.sum(usage_daily.c.calls),
               func.sum(usage_daily.c.charged))
        .where(usage_daily.c.day_ms >= day_start_ms(from_ms), usage_daily.c.day_ms < to_ms_)
        .group_by(usage_daily.c.day_ms, usage_daily.c.operation)
        .order_by(usage_daily.c.day_ms, usage_daily.c.operation))
    return [(int(r[0]), str(r[1]), int(r[2]), int(r[3])) for r in rows]


class SqlConsole:
    """ConsoleQueries on the ledger database (`runner`). Raises StoreUnavailable."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    async def search_accounts(self, query: str, limit: int,
                              after_id: str | None) -> list[dict[str, Any]]:
        return await self._runner.run(search_accounts_tx, query, limit, after_id)

    async def usage_by_day(self, from_ms: int,
                           to_ms_: int) -> list[tuple[int, str, int, int]]:
        return await self._runner.run(usage_by_day_tx, from_ms, to_ms_)
