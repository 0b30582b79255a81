"""Purchases record the ledger units they grant (issue 10: currency and tokens deployments).

`purchases.units`: ledger units a package credits in a currency (micro-units) or tokens
deployment; null for time deployments, whose purchases keep crediting `minutes` × 60,000 ms.

Revision ID: 0007_purchase_units
Revises: 0006_call_records
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_purchase_units"
down_revision = "0006_call_records"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("purchases") as batch:
        batch.add_column(sa.Column("units", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("purchases") as batch:
        batch.drop_column("units")
