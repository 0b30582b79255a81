"""The rest of the billing surface (issue 11 items 1–4): the account's default payment method
(what auto top-up charges when its settings name none). (The ledger units a
purchase credits, also used by credit purchases of any amount, are revision 0007's column.)

Revision ID: 0009_billing_surface
Revises: 0008_costs_budgets
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_billing_surface"
down_revision = "0008_costs_budgets"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("default_payment_method_id", sa.String(length=255),
                                        nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("default_payment_method_id")
