"""Account event log (live stream), daily usage rollup, Stripe subscriptions, refunds and
auto top-up

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_ACCOUNT_COLUMNS = [
    sa.Column("event_seq", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("stripe_customer_id", sa.String(length=255), nullable=True),
    sa.Column("stripe_subscription_id", sa.String(length=255), nullable=True),
    sa.Column("subscription_key", sa.String(length=64), nullable=True),
    sa.Column("subscription_event_at_ms", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Column("pending_plan_key", sa.String(length=64), nullable=True),
    sa.Column("pending_effective_at_ms", sa.BigInteger(), nullable=True),
    sa.Column("auto_topup_threshold", sa.BigInteger(), nullable=True),
]


def upgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        for column in _ACCOUNT_COLUMNS:
            batch.add_column(column)
    op.create_table(
        "account_events",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("data_json", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "seq"),
    )
    op.create_index("ix_account_events_time", "account_events", ["created_at_ms"])
    op.create_table(
        "usage_daily",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("day_ms", sa.BigInteger(), nullable=False),
        sa.Column("operation", sa.String(length=64), nullable=False),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("charged", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "day_ms", "operation"),
    )
    # Backfill the rollup from existing usage records (one pass, at migration time).
    op.execute(
        "INSERT INTO usage_daily (account_id, day_ms, operation, calls, charged)"
        " SELECT account_id, (created_at_ms / 86400000) * 86400000, operation, COUNT(*),"
        " COALESCE(SUM(charged), 0) FROM usage_records"
        " GROUP BY account_id, (created_at_ms / 86400000) * 86400000, operation"
    )
    op.create_index("ix_buckets_expiring", "buckets", ["expires_at_ms"],
                    sqlite_where=sa.text("remaining > 0"),
                    postgresql_where=sa.text("remaining > 0"))
    with op.batch_alter_table("purchases") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=16), nullable=False,
                                   server_default="checkout"))
        batch.add_column(sa.Column("payment_intent_id", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("bucket_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("refunded_cents", sa.BigInteger(), nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("clawed_back", sa.BigInteger(), nullable=False,
                                   server_default="0"))
    op.create_index("ix_purchases_payment_intent", "purchases", ["payment_intent_id"])
    op.create_table(
        "pending_refunds",
        sa.Column("payment_intent_id", sa.String(length=255), nullable=False),
        sa.Column("charge_id", sa.String(length=255), nullable=False),
        sa.Column("amount_cents", sa.BigInteger(), nullable=False),
        sa.Column("refunded_cents", sa.BigInteger(), nullable=False),
        sa.Column("received_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("payment_intent_id"),
    )
    op.create_table(
        "auto_topups",
        sa.Column("account_id", sa.String(length=40), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("threshold", sa.BigInteger(), nullable=False),
        sa.Column("package_key", sa.String(length=64), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("stripe_customer_id", sa.String(length=255), nullable=True),
        sa.Column("payment_method_id", sa.String(length=255), nullable=True),
        sa.Column("pending_attempt", sa.String(length=64), nullable=True),
        sa.Column("pending_since_ms", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("failures", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at_ms", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated_at_ms", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"]),
        sa.PrimaryKeyConstraint("account_id"),
    )


def downgrade() -> None:
    op.drop_table("auto_topups")
    op.drop_table("pending_refunds")
    op.drop_index("ix_purchases_payment_intent", table_name="purchases")
    with op.batch_alter_table("purchases") as batch:
        for name in ("clawed_back", "refunded_cents", "bucket_id", "payment_intent_id", "kind"):
            batch.drop_column(name)
    op.drop_index("ix_buckets_expiring", table_name="buckets")
    op.drop_table("usage_daily")
    op.drop_index("ix_account_events_time", table_name="account_events")
    op.drop_table("account_events")
    with op.batch_alter_table("accounts") as batch:
        for column in reversed(_ACCOUNT_COLUMNS):
            batch.drop_column(column.name)
