"""decisions: the release as a lease (holder, lease expiry, sending mark, stored result)

Revision ID: 5c1a9e7d2b40
Revises: 5b1d2c7e9a40
Create Date: 2026-12-01 21:10:00
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "5c1a9e7d2b40"
down_revision = "5b1d2c7e9a40"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claim_holder", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column("lease_until", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("sending_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("outcome_at", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("result", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("previous_attempt", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    # What reconciliation scans: approved claims with no outcome, by lease expiry.
    op.create_index("ix_decisions_lease", "decisions", ["status", "lease_until"])


def downgrade() -> None:
    op.drop_index("ix_decisions_lease", table_name="decisions")
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        for column in ("previous_attempt", "result", "outcome_at", "sending_at", "lease_until", "claim_holder"):
            batch_op.drop_column(column)
