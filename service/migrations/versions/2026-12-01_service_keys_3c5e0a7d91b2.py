"""service keys: the key of the arguments digest when HOLDGATE_SECRET_KEY is not set

Revision ID: 3c5e0a7d91b2
Revises: c9608998ef43
Create Date: 2026-12-01 21:20:00
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "3c5e0a7d91b2"
down_revision = "c9608998ef43"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "service_keys",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("secret", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("service_keys")
