"""decisions: the rule's routing by channel (`routing` JSON) instead of the Slack-only `slack_channel`

`{"slack": {"channel": "C0123ABC"}}` keeps each existing row's Slack channel; a row without one gets `{}`.

Revision ID: 9d4f2a6c1e83
Revises: 5c1a9e7d2b40
Create Date: 2026-12-02 01:20:00
"""

import json

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "9d4f2a6c1e83"
down_revision = "5c1a9e7d2b40"
branch_labels = None
depends_on = None

decisions = sa.table(
    "decisions",
    sa.column("id", sa.String),
    sa.column("slack_channel", sa.String),
    sa.column("routing", sa.Text),
)


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("routing", sa.Text(), nullable=False, server_default="{}"))
    bind = op.get_bind()
    rows = bind.execute(
        sa.select(decisions.c.id, decisions.c.slack_channel).where(decisions.c.slack_channel.is_not(None))
    )
    updates = [{"row_id": id_, "routing": json.dumps({"slack": {"channel": channel}})} for id_, channel in rows]
    if updates:
        bind.execute(
            decisions.update().where(decisions.c.id == sa.bindparam("row_id")).values(routing=sa.bindparam("routing")),
            updates,
        )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("slack_channel")


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slack_channel", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
    bind = op.get_bind()
    rows = bind.execute(sa.select(decisions.c.id, decisions.c.routing).where(decisions.c.routing != "{}"))
    updates = [
        {"row_id": id_, "slack_channel": channel}
        for id_, routing in rows
        if (channel := json.loads(str(routing)).get("slack", {}).get("channel"))
    ]
    if updates:
        bind.execute(
            decisions.update()
            .where(decisions.c.id == sa.bindparam("row_id"))
            .values(slack_channel=sa.bindparam("slack_channel")),
            updates,
        )
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_column("routing")
