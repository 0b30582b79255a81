"""HMAC request nonces (replay protection shared by every process when Redis is not configured)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hmac_nonces",
        sa.Column("nonce_key", sa.String(length=200), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("nonce_key"),
    )
    op.create_index("ix_hmac_nonces_expiry", "hmac_nonces", ["expires_at_ms"])


def downgrade() -> None:
    op.drop_index("ix_hmac_nonces_expiry", table_name="hmac_nonces")
    op.drop_table("hmac_nonces")
