"""decisions: approvals that lapse and waits that are withdrawn (claim/rejoin windows and deadlines)

Revision ID: 7e3b51c0a9d4
Revises: 3c5e0a7d91b2
Create Date: 2026-12-01 21:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "7e3b51c0a9d4"
down_revision = "3c5e0a7d91b2"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        # Rows from before this revision get the policy defaults (10 minutes, 2 minutes).
        batch_op.add_column(sa.Column("claim_within_s", sa.Float(), nullable=False, server_default="600"))
        batch_op.add_column(sa.Column("rejoin_within_s", sa.Float(), nullable=False, server_default="120"))
        batch_op.add_column(sa.Column("collect_by", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("withdrawn_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("rejoin_by", sa.Float(), nullable=True))
    op.create_index("ix_decisions_collect_by", "decisions", ["status", "collect_by"])
    # An ending already given and not collected lapses claim_within after it was given, as new ones do.
    decisions = sa.table(
        "decisions",
        sa.column("status"),
        sa.column("claimed_at"),
        sa.column("decided_at"),
        sa.column("collect_by"),
        sa.column("claim_within_s"),
    )
    op.execute(
        decisions.update()
        .where(decisions.c.status != "pending", decisions.c.status != "cancelled", decisions.c.claimed_at.is_(None))
        .values(collect_by=decisions.c.decided_at + decisions.c.claim_within_s)
    )


def downgrade() -> None:
    op.drop_index("ix_decisions_collect_by", table_name="decisions")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        for column in ("rejoin_by", "withdrawn_at", "collect_by", "rejoin_within_s", "claim_within_s"):
            batch_op.drop_column(column)
