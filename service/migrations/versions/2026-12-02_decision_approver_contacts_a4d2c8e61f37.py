"""decisions: approvers' contacts keyed by channel ({"name", "contacts": {channel: [ids]}})

Rewrites each stored approver `{"name", "slack_ids": [...], "emails": [...]}` as
`{"name", "contacts": {"slack": [...], "email": [...]}}` (channels with no id left out), so a decision names
how a channel recognises its approvers without knowing the channels. Same meaning: the same people, reached
and recognised by the same ids. Rows already in the new form are left alone. The code reads both forms
(`service.approvals.approvers.read_approver`), so the rewrite is tidiness, not a precondition.

The conversion is written out here rather than imported: a migration must mean the same later, whatever the
code becomes.

Revision ID: a4d2c8e61f37
Revises: 9d4f2a6c1e83
Create Date: 2026-12-02 00:40:00
"""

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "a4d2c8e61f37"
down_revision = "9d4f2a6c1e83"
branch_labels = None
depends_on = None

LEGACY_KEYS = {"slack_ids": "slack", "emails": "email"}
BATCH = 500

decisions = sa.table("decisions", sa.column("id", sa.String()), sa.column("approvers", sa.Text()))


def _to_contacts(approver: dict[str, Any]) -> dict[str, Any]:
    if "contacts" in approver:
        return approver
    contacts = {channel: list(approver.get(key) or ()) for key, channel in LEGACY_KEYS.items()}
    return {"name": approver["name"], "contacts": {channel: ids for channel, ids in contacts.items() if ids}}


def _to_legacy(approver: dict[str, Any]) -> dict[str, Any]:
    """Back to the old form; ids on channels other than Slack and email have no place there and are dropped."""
    if "contacts" not in approver:
        return approver
    contacts = approver["contacts"]
    return {"name": approver["name"], **{key: list(contacts.get(channel, ())) for key, channel in LEGACY_KEYS.items()}}


def _rewrite(convert: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    connection = op.get_bind()
    last = ""
    while True:
        rows = connection.execute(
            sa.select(decisions.c.id, decisions.c.approvers)
            .where(decisions.c.id > last)
            .order_by(decisions.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        changed = []
        for decision_id, stored in rows:
            rewritten = json.dumps([convert(approver) for approver in json.loads(str(stored))])
            if rewritten != stored:
                changed.append({"row_id": decision_id, "approvers": rewritten})
        if changed:
            connection.execute(
                decisions.update().where(decisions.c.id == sa.bindparam("row_id")),
                changed,
            )
        last = rows[-1][0]


def upgrade() -> None:
    _rewrite(_to_contacts)


def downgrade() -> None:
    _rewrite(_to_legacy)
