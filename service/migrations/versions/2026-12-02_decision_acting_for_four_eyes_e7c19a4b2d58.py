"""decisions: whom the calling agent acts for, four eyes, and the approver groups an identity provider may fill

Existing rows: nobody known (`acting_for` NULL), no four-eyes rule, no groups.

Revision ID: e7c19a4b2d58
Revises: a4d2c8e61f37
Create Date: 2026-12-02 05:00:00
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "e7c19a4b2d58"
down_revision = "a4d2c8e61f37"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("acting_for", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.add_column(sa.Column("four_eyes", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("approver_groups", sa.Text(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("approver_groups")
        batch_op.drop_column("four_eyes")
        batch_op.drop_column("acting_for")
