"""tool definitions: each upstream tool's accepted and current definition; decisions say a definition changed

Revision ID: e7b3c91f5a20
Revises: e7b3c19d5a42
Create Date: 2026-12-02 05:00:00
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "e7b3c91f5a20"
down_revision = "e7b3c19d5a42"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tool_servers",
        sa.Column("server", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("first_seen_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("server"),
    )
    op.create_table(
        "tool_definitions",
        sa.Column("server", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("tool", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("accepted_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("accepted_definition", sa.Text(), nullable=True),
        sa.Column("accepted_at", sa.Float(), nullable=True),
        sa.Column("accepted_by", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("accepted_via", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("current_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("current_definition", sa.Text(), nullable=False),
        sa.Column("first_seen_at", sa.Float(), nullable=False),
        sa.Column("changed_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("server", "tool"),
    )
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("tool_change", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("tool_change")
    op.drop_table("tool_definitions")
    op.drop_table("tool_servers")
