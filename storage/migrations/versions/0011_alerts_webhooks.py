"""Low-balance alerts (the account's own threshold and its alert state) and outgoing webhooks
(endpoints, the delivery outbox written in the events' transactions, delivery attempts).

Revision ID: 0011_alerts_webhooks
Revises: 0010_invoices_reconciliation
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_alerts_webhooks"
down_revision = "0010_invoices_reconciliation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("low_balance_threshold", sa.BigInteger(), nullable=True))
    op.add_column("accounts", sa.Column("balance_alert", sa.String(length=16), nullable=False,
                                        server_default="ok"))
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("event_types_json", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("secret", sa.String(length=100), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("message_id", sa.String(length=40), nullable=False),
        sa.Column("endpoint_id", sa.String(length=40), sa.ForeignKey("webhook_endpoints.id"),
                  nullable=False),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("payload_json", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("lease_until_ms", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at_ms", sa.BigInteger(), nullable=True),
        sa.UniqueConstraint("message_id", "endpoint_id", name="uq_webhook_deliveries_message"),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["next_attempt_at_ms"],
                    sqlite_where=sa.text("status = 'pending'"),
                    postgresql_where=sa.text("status = 'pending'"))
    op.create_index("ix_webhook_deliveries_endpoint", "webhook_deliveries",
                    ["endpoint_id", "created_at_ms"])
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer().with_variant(sa.BigInteger(), "postgresql"),
                  autoincrement=True, primary_key=True),
        sa.Column("delivery_id", sa.String(length=40), sa.ForeignKey("webhook_deliveries.id"),
                  nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_webhook_attempts_delivery", "webhook_attempts",
                    ["delivery_id", "attempt"])


def downgrade() -> None:
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhook_endpoints")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("balance_alert")
        batch.drop_column("low_balance_threshold")
