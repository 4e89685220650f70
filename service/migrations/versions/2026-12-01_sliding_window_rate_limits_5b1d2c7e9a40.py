"""sliding-window rate limits: a ring of call times per counter key

Revision ID: 5b1d2c7e9a40
Revises: 7e3b51c0a9d4
Create Date: 2026-12-01 21:00:00.000000

`rate_counters` held one count per fixed window; it now holds one row per (counter, scope key),
and `rate_counter_calls` the times of the key's last calls (see `service.policy.limits`). The
calls counted in windows still open are carried over, stamped with the time of the upgrade: the
old rows do not say when inside the window each call came, and stamping them late can only make
a limit stricter for one window, never let a burst through across the upgrade.
"""

import time
from typing import cast

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "5b1d2c7e9a40"
down_revision = "7e3b51c0a9d4"
branch_labels = None
depends_on = None

MAX_CARRIED = 100_000
"""A key keeps at most this many calls (a limit's `max` is at most 100,000)."""


def upgrade() -> None:
    now = time.time()
    bind = op.get_bind()
    old = sa.table(
        "rate_counters",
        sa.column("counter", sa.String),
        sa.column("scope_key", sa.String),
        sa.column("window_start", sa.BigInteger),
        sa.column("window_seconds", sa.Integer),
        sa.column("count", sa.Integer),
    )
    carried: dict[tuple[str, str], tuple[int, int]] = {}
    rows = bind.execute(
        sa.select(old.c.counter, old.c.scope_key, old.c.window_seconds, old.c["count"]).where(
            old.c.window_start + old.c.window_seconds > now, old.c["count"] > 0
        )
    )
    for counter, scope_key, window_seconds, count in rows:
        key = (str(counter), str(scope_key))
        counted = (min(cast(int, count), MAX_CARRIED), cast(int, window_seconds))  # sa.table columns are untyped
        carried[key] = max(carried.get(key, (0, 0)), counted)

    op.drop_table("rate_counters")
    keys = op.create_table(
        "rate_counters",
        sa.Column("counter", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("scope_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("next_slot", sa.Integer(), nullable=False),
        sa.Column("last_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("counter", "scope_key"),
    )
    calls = op.create_table(
        "rate_counter_calls",
        sa.Column("counter", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("scope_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("slot", sa.Integer(), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("counter", "scope_key", "slot"),
    )
    if carried:
        # size = the calls carried: the first call under the policy's `max` rebuilds the ring to that size
        op.bulk_insert(
            keys,
            [
                {"counter": c, "scope_key": k, "window_seconds": w, "size": n, "next_slot": 0, "last_at": now}
                for (c, k), (n, w) in carried.items()
            ],
        )
        op.bulk_insert(
            calls,
            [
                {"counter": c, "scope_key": k, "slot": slot, "at": now, "window_seconds": w}
                for (c, k), (n, w) in carried.items()
                for slot in range(n)
            ],
        )


def downgrade() -> None:
    op.drop_table("rate_counter_calls")
    op.drop_table("rate_counters")
    op.create_table(
        "rate_counters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("counter", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("scope_key", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("window_seconds", sa.Integer(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("counter", "scope_key", "window_start"),
    )
