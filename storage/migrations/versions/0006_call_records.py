"""Usage records opened at admission: a hold names the call (request id) whose record it guards,
so the lease sweep can close the record of a hold that lapsed with its process as `interrupted`

Revision ID: 0006_call_records
Revises: 0005
Create Date: 2026-11-22
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_call_records"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # nullable: holds placed before this revision (and by callers without a request id) guard
    # no record
    op.add_column("holds", sa.Column("request_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    # Before this revision a usage record existed only once its call settled, and settlement
    # skipped a call that already had one: open (`in_flight`) records would make the calls still
    # running settle for nothing. They are not in the daily rollup yet, so dropping them is exact.
    op.execute("DELETE FROM usage_records WHERE outcome = 'in_flight'")
    with op.batch_alter_table("holds") as batch:
        batch.drop_column("request_id")
