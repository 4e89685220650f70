"""tasks the upstream itself made, passed through: `tasks.upstream_task_id` and `tasks.origin`

A passed-through task is a row like a held call's task (holdgate's own random id, bound to the grant and the
server), naming the upstream's task id and the upstream connection it lives on (`service.gateway.task_passthrough`).

Revision ID: 5c2e9a7d4b10
Revises: f3a8d61c7b90
Create Date: 2026-12-02 08:00:00
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "5c2e9a7d4b10"
down_revision = "f3a8d61c7b90"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upstream_task_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.add_column(sa.Column("origin", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks", schema=None) as batch_op:
        batch_op.drop_column("origin")
        batch_op.drop_column("upstream_task_id")
