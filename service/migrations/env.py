"""Alembic environment: runs on the connection handed over by `service.db.upgrade`."""

from alembic import context
from sqlmodel import SQLModel

import service.models  # noqa: F401  (registers the tables)

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - only through service.db.upgrade
    raise RuntimeError("run migrations with `holdgate db upgrade` (service.db.upgrade)")

context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
