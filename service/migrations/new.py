"""Autogenerate a migration: `python -m service.migrations.new "message"` (see README here)."""

from __future__ import annotations

import sys
import tempfile
from datetime import date
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine

from service.db import _alembic_config


def main(message: str) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        with engine.begin() as conn:
            config = _alembic_config(conn)
            config.set_main_option("file_template", f"{date.today():%Y-%m-%d}_%%(slug)s_%%(rev)s")
            command.upgrade(config, "head")
            command.revision(config, message=message, autogenerate=True)


if __name__ == "__main__":
    main(" ".join(sys.argv[1:]) or "schema change")
