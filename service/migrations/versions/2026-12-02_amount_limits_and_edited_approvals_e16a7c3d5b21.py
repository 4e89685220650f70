"""limits that add up an amount (`rate_amounts`); decisions that may be approved with edited arguments

`rate_amounts` keeps, per counter key, the calls inside the window of a limit with an `amount` (time and
amount; see `service.policy.limits`). Decisions get `editable` (from the rule, false for every existing row) and
the approval's edit: `edited_arguments` (whole, until the run), `edited_shown` and `edit_diff` (redacted).

Revision ID: e16a7c3d5b21
Revises: bc1f1fb2da93
Create Date: 2026-12-02 05:00:00
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "e16a7c3d5b21"
down_revision = "bc1f1fb2da93"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_amounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("counter", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("scope_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("amount", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rate_amounts_key_at", "rate_amounts", ["counter", "scope_key", "at"], unique=False)
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("editable", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("edited_arguments", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("edited_shown", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("edit_diff", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("edit_diff")
        batch_op.drop_column("edited_shown")
        batch_op.drop_column("edited_arguments")
        batch_op.drop_column("editable")
    op.drop_index("ix_rate_amounts_key_at", table_name="rate_amounts")
    op.drop_table("rate_amounts")
