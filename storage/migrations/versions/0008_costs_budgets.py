"""Provider cost per call, budgets per API key and end user (issue 10 items 3–5).

- usage_records: provider, key_id, end_user, cache_write_tokens, prompt/completion/total cost in
  USD micro-units (null when the price source does not know the model: `cost_reason` says why)
  and the price data's version.
- holds: key_id and end_user, so live holds count toward their limits.
- api_keys: limit_day and limit_month in ledger units (null = no limit).
- cost_daily: the rollup behind cost summaries (per account, UTC day, provider, model).
- spend_daily: what each key and end user was charged per UTC day (budgets read it).

Revision ID: 0008_costs_budgets
Revises: 0007_purchase_units
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_costs_budgets"
down_revision = "0007_purchase_units"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("provider", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("key_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("end_user", sa.String(length=256), nullable=True))
        batch.add_column(sa.Column("cache_write_tokens", sa.Integer(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("prompt_cost", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("completion_cost", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("total_cost", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("cost_reason", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("price_version", sa.String(length=32), nullable=True))
    with op.batch_alter_table("holds") as batch:
        batch.add_column(sa.Column("key_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("end_user", sa.String(length=256), nullable=True))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("limit_day", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("limit_month", sa.BigInteger(), nullable=True))
    op.create_table(
        "cost_daily",
        sa.Column("account_id", sa.String(length=40), primary_key=True),
        sa.Column("day_ms", sa.BigInteger(), primary_key=True),
        sa.Column("provider", sa.String(length=64), primary_key=True),
        sa.Column("model", sa.String(length=200), primary_key=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("unpriced", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", sa.BigInteger(), nullable=False),
        sa.Column("charged", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_cost_daily_day", "cost_daily", ["day_ms"])
    op.create_table(
        "spend_daily",
        sa.Column("scope", sa.String(length=8), primary_key=True),
        sa.Column("scope_id", sa.String(length=300), primary_key=True),
        sa.Column("day_ms", sa.BigInteger(), primary_key=True),
        sa.Column("charged", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("spend_daily")
    op.drop_index("ix_cost_daily_day", table_name="cost_daily")
    op.drop_table("cost_daily")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("limit_month")
        batch.drop_column("limit_day")
    with op.batch_alter_table("holds") as batch:
        batch.drop_column("end_user")
        batch.drop_column("key_id")
    with op.batch_alter_table("usage_records") as batch:
        for name in ("price_version", "cost_reason", "total_cost", "completion_cost",
                     "prompt_cost", "cache_write_tokens", "end_user", "key_id", "provider"):
            batch.drop_column(name)
