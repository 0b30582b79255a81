"""Raw reads of the SQL store's tables for audits and tests (the `Inspection` port): what a
contract test checks beyond the ports' own answers. Never on a request path."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection

from storage.ports import UnknownAccount
from storage.sql.tables import (
    accounts,
    allocations,
    api_keys,
    buckets,
    ledger_entries,
    usage_daily,
    usage_records,
)


def entry_rows_tx(conn: Connection, account_id: str) -> list[dict[str, Any]]:
    """Every ledger entry of the account, oldest (lowest id) first."""
    rows = conn.execute(select(ledger_entries).where(ledger_entries.c.account_id == account_id)
                        .order_by(ledger_entries.c.id))
    return [dict(r._mapping) for r in rows]


def bucket_rows_tx(conn: Connection, account_id: str) -> list[dict[str, Any]]:
    """Every bucket of the account (expired and empty too), by creation time then id."""
    rows = conn.execute(select(buckets).where(buckets.c.account_id == account_id)
                        .order_by(buckets.c.created_at_ms, buckets.c.id))
    return [dict(r._mapping) for r in rows]


def allocation_rows_tx(conn: Connection, account_id: str,
                       key: str) -> list[tuple[str, str, int]]:
    """(bucket id, bucket source, amount) of the entry with idempotency `key`, in order."""
    rows = conn.execute(
        select(allocations.c.bucket_id, buckets.c.source, allocations.c.amount)
        .join(ledger_entries, ledger_entries.c.id == allocations.c.entry_id)
        .join(buckets, buckets.c.id == allocations.c.bucket_id)
        .where(ledger_entries.c.account_id == account_id,
               ledger_entries.c.idempotency_key == key)
        .order_by(allocations.c.id))
    return [(r.bucket_id, r.source, int(r.amount)) for r in rows]


def usage_row_tx(conn: Connection, request_id: str) -> dict[str, Any] | None:
    """The usage record of a call, or None."""
    row = conn.execute(select(usage_records).where(usage_records.c.id == request_id)).first()
    return None if row is None else dict(row._mapping)


def rollup_rows_tx(conn: Connection, account_id: str) -> list[tuple[str, int, int]]:
    """(operation, calls, charged) of the account's daily rollup, per UTC day and operation."""
    d = usage_daily.c
    rows = conn.execute(select(d.operation, func.sum(d.calls), func.sum(d.charged))
                        .where(d.account_id == account_id).group_by(d.day_ms, d.operation))
    return [(r[0], int(r[1]), int(r[2])) for r in rows]


def account_row_tx(conn: Connection, account_id: str) -> dict[str, Any]:
    """The account's row. Raises UnknownAccount."""
    row = conn.execute(select(accounts).where(accounts.c.id == account_id)).first()
    if row is None:
        raise UnknownAccount(account_id)
    return dict(row._mapping)


def api_key_rows_tx(conn: Connection) -> list[dict[str, Any]]:
    """Every API key row."""
    return [dict(r._mapping) for r in conn.execute(select(api_keys))]
