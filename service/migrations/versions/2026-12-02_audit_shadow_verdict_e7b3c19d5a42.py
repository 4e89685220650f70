"""audit_events: the shadow policy's verdict and rule where they differ from the enforced one

Two nullable columns (`shadow_verdict`, `shadow_rule`), empty on every existing record, and an index on
`shadow_verdict` for the dashboard's "shadow disagrees" filter. The hash chain is unchanged for existing
records: the two fields enter a record's hash only when set (`service.audit.chain.record_hash`).

Revision ID: e7b3c19d5a42
Revises: e7c19a4b2d58
Create Date: 2026-12-02 05:00:00
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "e7b3c19d5a42"
down_revision = "e7c19a4b2d58"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_events") as batch:
        batch.add_column(sa.Column("shadow_verdict", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        batch.add_column(sa.Column("shadow_rule", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True))
    op.create_index("ix_audit_events_shadow_verdict", "audit_events", ["shadow_verdict"])


def downgrade() -> None:
    op.drop_index("ix_audit_events_shadow_verdict", table_name="audit_events")
    with op.batch_alter_table("audit_events") as batch:
        batch.drop_column("shadow_rule")
        batch.drop_column("shadow_verdict")
