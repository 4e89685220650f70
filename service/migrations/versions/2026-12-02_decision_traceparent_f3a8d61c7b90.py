"""decisions: the W3C traceparent of the call that opened the decision, so its changes join that call's trace

Existing rows: none (opened without tracing, or before it was kept); their changes are traced as before.

Revision ID: f3a8d61c7b90
Revises: c7e2a9d41b60
Create Date: 2026-12-02 08:30:00
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "f3a8d61c7b90"
down_revision = "c7e2a9d41b60"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("traceparent", sqlmodel.sql.sqltypes.AutoString(length=55), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("traceparent")
