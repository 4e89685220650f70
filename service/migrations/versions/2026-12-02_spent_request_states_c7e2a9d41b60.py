"""sealed `requestState`s already spent (the `client` approval channel's 2026-07-28 rounds are single use)

Revision ID: c7e2a9d41b60
Revises: e16a7c3d5b21
Create Date: 2026-12-02 08:20:00
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "c7e2a9d41b60"
down_revision = "e16a7c3d5b21"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "spent_request_states",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_spent_request_states_expires_at"), "spent_request_states", ["expires_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_spent_request_states_expires_at"), table_name="spent_request_states")
    op.drop_table("spent_request_states")
