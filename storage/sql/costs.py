"""Reads of provider costs (issue 10 item 3) and API key limits, in SQLAlchemy Core: the
`Ledger.cost_records` / `cost_summary` and `Accounts.set_key_limits` operations of
storage.sql.ledger.SqlLedger. Costs: USD micro-units; amounts: ledger units; times: UTC
epoch ms.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, update
from sqlalchemy.sql.elements import ColumnElement

from storage.clock import MS_PER_DAY, day_start_ms
from storage.engine.budgets import Limits
from storage.ports import IN_FLIGHT, CostDay, CostGroup, CostQuery
from storage.sql.tables import api_keys, usage_daily, usage_records

u = usage_records


def _record_filter(q: CostQuery) -> list[ColumnElement[bool]]:
    where = [u.c.created_at_ms >= q.from_ms, u.c.created_at_ms < q.to_ms,
             u.c.outcome != IN_FLIGHT, u.c.provider.is_not(None)]
    if q.account_id is not None:
        where.append(u.c.account_id == q.account_id)
    if q.key_id is not None:
        where.append(u.c.key_id == q.key_id)
    if q.end_user is not None:
        where.append(u.c.end_user == q.end_user)
    return where


def cost_records_tx(conn: Connection, q: CostQuery, limit: int,
                    after: tuple[int, str] | None) -> list[dict[str, Any]]:
    """Settled records with a provider matching `q`, newest first; keyset pages below
    `after` = (created_at_ms, id) on the (account_id, created_at_ms) index."""
    where = _record_filter(q)
    if after is not None:
        where.append(or_(u.c.created_at_ms < after[0],
                         and_(u.c.created_at_ms == after[0], u.c.id < after[1])))
    rows = conn.execute(select(u).where(*where)
                        .order_by(u.c.created_at_ms.desc(), u.c.id.desc()).limit(limit))
    return [dict(r._mapping) for r in rows]


def cost_summary_tx(conn: Connection, q: CostQuery) -> list[CostGroup]:
    """Cost by (provider, model). Unfiltered: the daily rollup rows with a provider of the UTC
    days of [from, to) (calls = calls + late: every settlement; ≤ days × operations × models ×
    keys rows per account, whatever the number of calls); with a key or end-user filter: the
    matching usage records."""
    if q.filtered:
        model = func.coalesce(u.c.model, "")
        stmt = (select(u.c.provider, model, func.count(),
                       func.count() - func.count(u.c.total_cost),
                       func.coalesce(func.sum(u.c.input_tokens), 0),
                       func.coalesce(func.sum(u.c.output_tokens), 0),
                       func.coalesce(func.sum(u.c.total_cost), 0),
                       func.coalesce(func.sum(u.c.charged), 0))
                .where(*_record_filter(q)).group_by(u.c.provider, model)
                .order_by(u.c.provider, model))
    else:
        c = usage_daily.c
        where = [c.day_ms >= day_start_ms(q.from_ms), c.day_ms < q.to_ms, c.provider != ""]
        if q.account_id is not None:
            where.append(c.account_id == q.account_id)
        stmt = (select(c.provider, c.model, func.sum(c.calls + c.late), func.sum(c.unpriced),
                       func.sum(c.prompt_tokens), func.sum(c.completion_tokens),
                       func.sum(c.cost), func.sum(c.charged))
                .where(*where).group_by(c.provider, c.model).order_by(c.provider, c.model))
    return [CostGroup(r[0], r[1], *(int(v) for v in r[2:])) for r in conn.execute(stmt)]


def cost_by_day_tx(conn: Connection, account_id: str | None, from_ms: int,
                   to_ms_: int) -> list[CostDay]:
    """Per-UTC-day totals of the cost rollup (the usage_daily rows with a provider) for the
    days of [from, to), oldest first (≤ days × accounts × operations × models × keys rows
    read, whatever the number of calls)."""
    c = usage_daily.c
    where = [c.day_ms >= day_start_ms(from_ms), c.day_ms < to_ms_, c.provider != ""]
    if account_id is not None:
        where.append(c.account_id == account_id)
    stmt = (select(c.day_ms, func.sum(c.calls + c.late), func.sum(c.cost), func.sum(c.charged))
            .where(*where).group_by(c.day_ms).order_by(c.day_ms))
    return [CostDay(*(int(v) for v in r)) for r in conn.execute(stmt)]


def set_key_limits_tx(conn: Connection, key_id: str, limits: Limits) -> str | None:
    """Replace an active key's limits; its account id, or None when no active key has it."""
    row = conn.execute(
        update(api_keys).where(api_keys.c.id == key_id, api_keys.c.revoked_at_ms.is_(None))
        .values(limit_day=limits.day, limit_month=limits.month)
        .returning(api_keys.c.account_id)).first()
    return None if row is None else str(row[0])


def usage_summary_filtered_tx(conn: Connection, account_id: str, from_ms: int, to_ms_: int,
                              key_id: str | None, end_user: str | None
                              ) -> list[tuple[str, int, int, int]]:
    """(operation, UTC day ms, Σ charged, calls) of the account's settled usage records in
    [day of from_ms, to_ms_) made with `key_id` and/or for `end_user` (a scan of the
    account's records in the window: the rollups are not per key or end user)."""
    day = (u.c.created_at_ms // MS_PER_DAY) * MS_PER_DAY
    where = [u.c.account_id == account_id, u.c.created_at_ms >= day_start_ms(from_ms),
             u.c.created_at_ms < to_ms_, u.c.outcome != IN_FLIGHT]
    if key_id is not None:
        where.append(u.c.key_id == key_id)
    if end_user is not None:
        where.append(u.c.end_user == end_user)
    rows = conn.execute(select(u.c.operation, day, func.sum(u.c.charged), func.count())
                        .where(*where).group_by(u.c.operation, day))
    return [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]
