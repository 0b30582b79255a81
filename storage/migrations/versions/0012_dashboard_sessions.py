"""dashboard sessions (issue 12): server-side sessions of the account pages and the console

Revision ID: 0012_dashboard_sessions
Revises: 0011_alerts_webhooks
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0012_dashboard_sessions"
down_revision = "0011_alerts_webhooks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "dashboard_sessions",
        sa.Column("session_hash", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.String(length=40), nullable=True),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("session_hash"),
    )
    op.create_index("ix_dashboard_sessions_expiry", "dashboard_sessions", ["expires_at_ms"])


def downgrade() -> None:
    op.drop_index("ix_dashboard_sessions_expiry", table_name="dashboard_sessions")
    op.drop_table("dashboard_sessions")
