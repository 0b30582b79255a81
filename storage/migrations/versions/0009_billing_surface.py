"""The rest of the billing surface (issue 11 items 1–4): the account's default payment method
(what auto top-up charges when its settings name none) and, for purchases of an arbitrary
credit amount in a currency deployment, the exact ledger units a purchase credits.

Revision ID: 0009_billing_surface
Revises: 0006_call_records
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_billing_surface"
down_revision = "0006_call_records"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("default_payment_method_id", sa.String(length=255),
                                        nullable=True))
    # NULL: a package purchase, crediting `minutes` of AI time as before
    op.add_column("purchases", sa.Column("units", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("purchases") as batch:
        batch.drop_column("units")
    with op.batch_alter_table("accounts") as batch:
        batch.drop_column("default_payment_method_id")
