"""dashboard sessions remember the API key they were opened with (issue 12): revoking the key
ends them

Revision ID: 0014_session_key
Revises: 0012_dashboard_sessions
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0014_session_key"
down_revision = "0012_dashboard_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("dashboard_sessions", sa.Column("key_id", sa.String(length=40), nullable=True))


def downgrade() -> None:
    op.drop_column("dashboard_sessions", "key_id")
