"""The command line's edges: --version, choice options, one-line settings errors, --json on every list command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import service
from service.cli import app
from service.settings import get_settings
from tests.support.harness import ROOT


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data dir with a database (`holdgate db upgrade`), the project's config, no stray .env or HOLDGATE_*."""
    for name in [n for n in os.environ if n.startswith("HOLDGATE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOLDGATE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HOLDGATE_CONFIG_DIR", str(ROOT / "config"))
    get_settings.cache_clear()
    assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
    yield tmp_path
    get_settings.cache_clear()


def holdgate(*args: str, env: dict[str, str] | None = None, cwd: Path) -> subprocess.CompletedProcess:
    """`holdgate ARGS` in a fresh process (what a shell sees: exit status, stdout, stderr)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HOLDGATE_")}
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**clean, "PYTHONPATH": str(ROOT), **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_version(tmp_path):
    done = holdgate("--version", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == f"holdgate {service.__version__}\n"


@pytest.mark.parametrize(
    ("args", "choices"),
    [
        (["decisions", "list", "--status", "bogus"], "'pending', 'approved', 'denied', 'expired', 'cancelled'"),
        (["audit", "--format", "xml"], "'table', 'jsonl', 'csv'"),
        (["serve", "--log-level", "loud"], "'critical', 'error', 'warning', 'info', 'debug', 'trace'"),
    ],
)
def test_a_value_outside_the_choices_is_a_usage_error_naming_them(tmp_path, args, choices):
    done = holdgate(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    message = " ".join(done.stderr.replace("│", " ").split())
    assert choices in message and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("HOLDGATE_PORT", "eighty", "HOLDGATE_PORT: Input should be a valid integer"),
        ("HOLDGATE_APPROVAL_HOLD_S", "soon", "HOLDGATE_APPROVAL_HOLD_S: Input should be a valid number"),
        ("HOLDGATE_ALLOWED_HOSTS", "holdgate.example.com", "HOLDGATE_ALLOWED_HOSTS is not valid JSON"),
        ("HOLDGATE_CHANNELS", "bots.console", "HOLDGATE_CHANNELS is not valid JSON"),
        ("HOLDGATE_GATEWAY__MAX_SESSIONS", "-3", "HOLDGATE_MAX_SESSIONS: Input should be greater than 0"),
    ],
)
@pytest.mark.parametrize("command", [["decisions", "list"], ["approve", "d_x"], ["grant", "list"], ["audit"]])
def test_a_settings_error_is_one_line_naming_the_variable(tmp_path, variable, value, expected, command):
    done = holdgate(*command, env={variable: value, "HOLDGATE_DATA_DIR": str(tmp_path)}, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1, done.stderr  # one line, no traceback
    assert done.stderr.startswith("error: invalid settings: ") and expected in done.stderr
    assert value not in done.stderr.replace(variable, "")  # the value itself is never echoed (it may be a secret)


def test_a_secret_in_a_bad_setting_is_not_echoed(tmp_path):
    done = holdgate(
        "decisions", "list", env={"HOLDGATE_SLACK_BOT_TOKEN": "xoxb-very-secret", "HOLDGATE_PORT": "x"}, cwd=tmp_path
    )
    assert done.returncode == 1 and "xoxb-very-secret" not in done.stderr + done.stdout


def test_every_list_command_speaks_json(workdir):
    runner = CliRunner()
    assert runner.invoke(app, ["grant", "create", "ci-bot"]).exit_code == 0
    grants = json.loads(runner.invoke(app, ["grant", "list", "--json"]).stdout)
    assert grants["total"] == 1 and grants["items"][0]["name"] == "ci-bot" and grants["items"][0]["revoked_at"] is None
    assert "token" not in json.dumps(grants).replace("token_sha256", "")  # only names and dates
    decisions = json.loads(runner.invoke(app, ["decisions", "list", "--json"]).stdout)
    assert decisions == {"items": [], "total": 0}
    audit = json.loads(runner.invoke(app, ["audit", "--json"]).stdout)
    assert audit == {"items": [], "total": 0}
