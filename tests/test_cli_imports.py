"""What the `holdgate` command line imports: the lazy-import rule at the top of service/cli.py, checked.

`holdgate approve`, `deny` and `decisions list` are what an operator types while agents wait; their start-up is
mostly the imports they pull. These tests look at the import graph (what is in `sys.modules`) of a fresh
interpreter, not at a clock: the timing figures are bench/bench_cli.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from service.approvals import STATUSES
from service.cli import DecisionStatus
from tests.support.harness import ROOT

WEB_STACK = ("fastapi", "starlette", "uvicorn", "mcp", "slack_sdk", "aiohttp", "httpx", "jinja2", "authlib")
"""Never needed by the commands that only read or vote on decisions."""

DATABASE_STACK = ("sqlalchemy", "sqlmodel", "alembic", "aiosqlite", "asyncpg", "psycopg", "pydantic_settings")
"""Needed only once a command works on the database, never to start or to parse arguments."""

NOT_TO_VOTE = ("alembic", "mako", "cel_expr_python", "google", "rich")
"""Not needed by a vote or a list on a database that is current: the migrations (only when the schema is behind),
the policy's compiler and CEL (only to evaluate or to edit arguments), rich (the table is plain text)."""

PROBE = """
import json, sys
from service.cli import app
args = json.loads(sys.argv[1])
try:
    if args is not None:
        app(args, prog_name="holdgate")
except SystemExit:
    pass
print("\\n" + json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def imported_by(args: list[str] | None, cwd: Path, env: dict[str, str] | None = None) -> set[str]:
    """The top-level packages a fresh `holdgate ARGS` has imported when it ends (None: only import the CLI)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def test_importing_the_cli_pulls_neither_the_web_nor_the_database_stack(tmp_path):
    loaded = imported_by(None, tmp_path)
    assert "typer" in loaded  # the probe does see imports
    assert loaded.isdisjoint(WEB_STACK + DATABASE_STACK), sorted(loaded & {*WEB_STACK, *DATABASE_STACK})


@pytest.mark.parametrize(
    "args",
    [
        ["approve", "--help"],
        ["deny", "--help"],
        ["decisions", "list", "--help"],
        ["decisions", "list", "--status", "bogus"],
        ["--version"],
    ],
)
def test_parsing_the_decision_commands_imports_nothing_heavy(tmp_path, args):
    loaded = imported_by(args, tmp_path)
    assert loaded.isdisjoint(WEB_STACK + DATABASE_STACK), sorted(loaded & {*WEB_STACK, *DATABASE_STACK})


@pytest.mark.parametrize(
    "args",
    [
        ["decisions", "list", "--json"],
        ["decisions", "list", "--status", "pending"],
        ["approve", "d_missing"],
        ["deny", "d_missing", "--reason", "not now"],
        ["approve", "--all-pending"],
    ],
)
def test_the_decision_commands_on_a_database_import_no_web_stack(tmp_path, args):
    env = {"HOLDGATE_DATA_DIR": str(tmp_path / "data"), "HOLDGATE_CONFIG_DIR": str(ROOT / "config")}
    subprocess.run(
        [sys.executable, "-m", "service", "db", "upgrade"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    loaded = imported_by(args, tmp_path, env)
    assert "sqlalchemy" in loaded  # it did reach the database
    assert loaded.isdisjoint(WEB_STACK + NOT_TO_VOTE), sorted(loaded & {*WEB_STACK, *NOT_TO_VOTE})


def test_a_database_behind_the_migrations_is_still_upgraded_by_a_decision_command(tmp_path):
    """The schema check without Alembic is a shortcut for a current database only: one that is behind (here,
    new) still gets Alembic's upgrade before the command reads it."""
    env = {"HOLDGATE_DATA_DIR": str(tmp_path / "data"), "HOLDGATE_CONFIG_DIR": str(ROOT / "config")}
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "holdgate.db").touch()  # exists (not refused as missing) but has no schema yet
    loaded = imported_by(["decisions", "list", "--json"], tmp_path, env)
    assert "alembic" in loaded
    again = imported_by(["decisions", "list", "--json"], tmp_path, env)
    assert "alembic" not in again  # upgraded by the first: the second takes the shortcut


def test_the_status_choices_are_the_decision_statuses():
    assert typing.get_args(DecisionStatus) == STATUSES
