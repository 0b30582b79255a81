"""Stripe invoices mirrored from webhooks, reconciliation reports, and partial indexes on the
ledger's Stripe-keyed credits (issue 11 items 5–6)

Revision ID: 0010_invoices_reconciliation
Revises: 0009_billing_surface
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_invoices_reconciliation"
down_revision = "0009_billing_surface"
branch_labels = None
depends_on = None

_STRIPE_KEYS = "substr(idempotency_key, 1, 7) = 'stripe_'"


def upgrade() -> None:
    op.create_table(
        "invoices",
        sa.Column("invoice_id", sa.String(length=255), primary_key=True),
        sa.Column("account_id", sa.String(length=40), sa.ForeignKey("accounts.id"),
                  nullable=False),
        sa.Column("number", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("stripe_status", sa.String(length=16), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("subtotal_cents", sa.BigInteger(), nullable=False),
        sa.Column("tax_cents", sa.BigInteger(), nullable=False),
        sa.Column("discount_cents", sa.BigInteger(), nullable=False),
        sa.Column("total_cents", sa.BigInteger(), nullable=False),
        sa.Column("credits_applied_cents", sa.BigInteger(), nullable=False),
        sa.Column("amount_due_cents", sa.BigInteger(), nullable=False),
        sa.Column("amount_paid_cents", sa.BigInteger(), nullable=False),
        sa.Column("period_start_ms", sa.BigInteger(), nullable=True),
        sa.Column("period_end_ms", sa.BigInteger(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("due_date_ms", sa.BigInteger(), nullable=True),
        sa.Column("finalized_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("paid_at_ms", sa.BigInteger(), nullable=True),
        sa.Column("hosted_invoice_url", sa.Text(), nullable=True),
        sa.Column("invoice_pdf", sa.Text(), nullable=True),
        sa.Column("subscription_id", sa.String(length=255), nullable=True),
        sa.Column("billing_reason", sa.String(length=64), nullable=True),
        sa.Column("lines_json", sa.Text(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("version_rank", sa.Integer(), nullable=False),
        sa.Column("version_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("version_attempts", sa.Integer(), nullable=False),
        sa.Column("version_event_ms", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_invoices_account_created", "invoices",
                    ["account_id", "created_at_ms", "invoice_id"])
    op.create_table(
        "reconciliation_reports",
        sa.Column("id", sa.String(length=40), primary_key=True),
        sa.Column("from_ms", sa.BigInteger(), nullable=False),
        sa.Column("to_ms", sa.BigInteger(), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("applied", sa.Boolean(), nullable=False),
        sa.Column("document_json", sa.Text(), nullable=False),
    )
    op.create_index("ix_ledger_stripe_key", "ledger_entries", ["idempotency_key"],
                    sqlite_where=sa.text(_STRIPE_KEYS), postgresql_where=sa.text(_STRIPE_KEYS))
    op.create_index("ix_ledger_stripe_time", "ledger_entries", ["created_at_ms"],
                    sqlite_where=sa.text(_STRIPE_KEYS), postgresql_where=sa.text(_STRIPE_KEYS))


def downgrade() -> None:
    op.drop_index("ix_ledger_stripe_time", table_name="ledger_entries")
    op.drop_index("ix_ledger_stripe_key", table_name="ledger_entries")
    op.drop_table("reconciliation_reports")
    op.drop_index("ix_invoices_account_created", table_name="invoices")
    op.drop_table("invoices")
