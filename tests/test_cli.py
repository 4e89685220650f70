"""The `holdgate` command line, run in-process with typer's CliRunner against a temporary data dir."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from service import db
from service.cli import app
from service.models import AuditEvent
from service.settings import get_settings
from tests.support.harness import ROOT

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "cancel-async-job": {
            "limits": [{"counter": "cancel-async-job_rate", "window": "minute", "max": 30, "scope": "grant"}]
        },
        "jobs/cancel-*": {"action": "require_approval", "reason": "someone may be waiting for the job"},
        "submit-*": {"action": "allow", "redact": ["prompt"]},
    },
}


@pytest.fixture
def bare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh config dir and no database yet, seen by `get_settings()` (whose cache is cleared around the test)."""
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "policy.json").write_text(json.dumps(POLICY, indent=2))
    monkeypatch.chdir(tmp_path)  # no stray .env file
    for name in ("HOLDGATE_DATABASE_URL", "HOLDGATE_RUN_MIGRATIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOLDGATE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("HOLDGATE_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


@pytest.fixture
def env(bare: Path) -> Path:
    """`bare`, with its database created (`holdgate db upgrade`), as after a first `holdgate serve`."""
    run("db", "upgrade")
    return bare


def run(*args: str, code: int = 0):
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    return result


def database_file(tmp_path: Path) -> Path:
    return tmp_path / "data" / "holdgate.db"


def grant_rows(tmp_path: Path) -> list[tuple]:
    with sqlite3.connect(database_file(tmp_path)) as conn:
        return conn.execute("select name, token_sha256, revoked_at from grants order by name").fetchall()


# -- policy -----------------------------------------------------------------------------------------


def test_policy_check_ok(env):
    result = run("policy", "check", str(env / "config" / "policy.json"))
    assert result.stdout.startswith(f"ok: {env / 'config' / 'policy.json'}: 3 rules, version ")


def test_policy_check_defaults_to_the_config_dir(env):
    assert "3 rules" in run("policy", "check").stdout


def test_policy_check_broken_file_exits_1_with_file_location_and_message(env):
    broken = env / "broken.json"
    policy = json.loads(json.dumps(POLICY))
    policy["tools"]["cancel-async-job"]["limits"][0]["window"] = "minuet"
    broken.write_text(json.dumps(policy, indent=2))
    result = run("policy", "check", str(broken), code=1)
    assert result.stdout == ""
    assert result.stderr.strip() == (
        f"{broken}: tools.cancel-async-job.limits[0].window: invalid window 'minuet'; "
        "use second, minute, hour, day or a whole number of seconds"
    )


def test_policy_check_bad_json_and_missing_file(env):
    bad = env / "bad.json"
    bad.write_text('{"tools": {\n  "x": {,}}}')
    assert run("policy", "check", str(bad), code=1).stderr.startswith(f"{bad}: line 2, column 9: invalid JSON")
    missing = env / "missing.json"
    assert run("policy", "check", str(missing), code=1).stderr.strip() == f"{missing}: (file): file not found"


def test_policy_explain_names_the_deciding_rule(env):
    result = run("policy", "explain", "--server", "jobs", "--tool", "cancel-async-job", "--grant", "agent")
    out = result.stdout
    assert "decided by: rule 'jobs/cancel-*' at tools.jobs/cancel-*" in out
    assert "'jobs/cancel-*' names the server exactly" in out
    assert "action: require_approval" in out
    assert "reason: someone may be waiting for the job" in out

    other = run("policy", "explain", "--server", "time", "--tool", "cancel-async-job").stdout
    assert "decided by: rule 'cancel-async-job' at tools.cancel-async-job (allow" in other
    assert "cancel-async-job_rate: at most 30 in any 1m, per grant" in other

    nothing = run("policy", "explain", "-s", "time", "-t", "get_current_time").stdout
    assert "decided by: default (deny)" in nothing


def test_policy_explain_with_arguments_and_a_file(env):
    other = env / "other.json"
    other.write_text(json.dumps({"default": "allow"}))
    result = run(
        "policy", "explain", "--server", "jobs", "--tool", "submit-llm-request-async",
        "--args", '{"prompt": "hello", "model": "m", "apiKey": "k"}',
    )  # fmt: skip
    assert "decided by: rule 'submit-*'" in result.stdout
    assert '"prompt": "[redacted]"' in result.stdout and '"apiKey": "[redacted]"' in result.stdout
    assert '"model": "m"' in result.stdout

    assert "decided by: default (allow)" in run("policy", "explain", "-s", "a", "-t", "b", "--file", str(other)).stdout


def test_policy_explain_bad_args(env):
    result = run("policy", "explain", "-s", "jobs", "-t", "x", "--args", "{not json", code=2)
    assert "not valid JSON" in result.output
    assert "must be a JSON object" in run("policy", "explain", "-s", "jobs", "-t", "x", "--args", "[1]", code=2).output


# -- grants -----------------------------------------------------------------------------------------


def test_grant_create_prints_the_token_alone_on_the_last_line_and_stores_only_its_hash(env):
    result = run("grant", "create", "claude-desktop")
    token = result.stdout.splitlines()[-1]
    assert token == result.stdout.strip()  # stdout is the token and nothing else
    assert token.startswith("hg_") and len(token) > 30 and " " not in token
    assert result.output.splitlines()[-1] == token  # also last in what a terminal shows
    assert "created" in result.stderr and token not in result.stderr

    [(name, digest, revoked)] = grant_rows(env)
    assert (name, revoked) == ("claude-desktop", None)
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    for path in (env / "data").iterdir():  # the database and its WAL: no trace of the token itself
        assert token.encode() not in path.read_bytes(), path

    second = run("grant", "create", "cursor").stdout.strip()
    assert second != token


def test_grant_create_refuses_duplicates_and_bad_names(env):
    run("grant", "create", "agent")
    assert "already exists" in run("grant", "create", "agent", code=1).stderr
    assert "must match" in run("grant", "create", "bad name", code=1).stderr
    assert "reserved" in run("grant", "create", "anonymous-dev", code=1).stderr
    assert [row[0] for row in grant_rows(env)] == ["agent"]


def test_grant_list_and_revoke(env):
    tokens = [run("grant", "create", name).stdout.strip() for name in ("alpha", "beta")]
    listing = run("grant", "list").stdout
    assert "alpha" in listing and "beta" in listing
    for token in tokens:
        assert token not in listing

    assert "grant 'alpha' revoked" in run("grant", "revoke", "alpha").stdout
    rows = {name: revoked for name, _, revoked in grant_rows(env)}
    assert rows["alpha"] is not None and rows["beta"] is None

    assert "no active grant named 'alpha'" in run("grant", "revoke", "alpha", code=1).stderr  # already revoked
    assert "no active grant named 'ghost'" in run("grant", "revoke", "ghost", code=1).stderr


def test_grant_commands_use_holdgate_database_url(bare, monkeypatch):
    other = bare / "elsewhere" / "gate.db"
    monkeypatch.setenv("HOLDGATE_DATABASE_URL", f"sqlite+aiosqlite:///{other}")
    get_settings.cache_clear()
    run("db", "upgrade")
    run("grant", "create", "agent")
    assert other.exists()
    assert not database_file(bare).exists()


# -- database and audit -----------------------------------------------------------------------------


def test_db_upgrade(bare):
    env = bare
    assert "up to date" in run("db", "upgrade").stdout
    assert "up to date" in run("db", "upgrade").stdout  # idempotent
    with sqlite3.connect(database_file(env)) as conn:
        tables = {row[0] for row in conn.execute("select name from sqlite_master where type = 'table'")}
    assert {"grants", "audit_events", "rate_counters", "alembic_version"} <= tables


def test_audit_exports_on_an_empty_database(env):
    assert run("audit", "--format", "jsonl").stdout == ""

    out = run("audit", "--format", "csv").stdout
    rows = list(csv.reader(io.StringIO(out)))
    assert len(rows) == 1
    assert rows[0][:5] == ["id", "ts", "grant", "server", "tool"]
    assert {"verdict", "rule", "outcome", "args_sha256", "duration_ms"} <= set(rows[0])

    table = run("audit").stdout
    assert "verdict" in table and "grant" in table

    assert run("audit", "--format", "jsonl", "--grant", "agent", "--verdict", "deny").stdout == ""


def test_audit_exports_recorded_events(env):

    async def seed() -> None:
        engine = db.create_engine(get_settings().effective_database_url)
        try:
            async with db.session_scope(db.session_factory(engine)) as session:
                for i, (grant, verdict) in enumerate([("agent", "allow"), ("other", "deny")]):
                    session.add(
                        AuditEvent(
                            ts=datetime(2026, 11, 24, 12, 0, i, tzinfo=UTC),
                            grant=grant,
                            server="jobs",
                            tool="cancel-async-job",
                            arguments=json.dumps({"jobId": str(i), "note": 'a, "quoted"\nline'}),
                            args_sha256="0" * 64,
                            verdict=verdict,
                            rule="cancel-async-job",
                            outcome="ok" if verdict == "allow" else None,
                            duration_ms=1.5,
                        )
                    )
        finally:
            await engine.dispose()

    asyncio.run(seed())
    lines = run("audit", "--format", "jsonl").stdout.splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["grant"], e["verdict"]) for e in events] == [("agent", "allow"), ("other", "deny")]
    assert events[0]["arguments"] == {"jobId": "0", "note": 'a, "quoted"\nline'}
    assert events[0]["ts"] == "2026-11-24T12:00:00+00:00"

    rows = list(csv.DictReader(io.StringIO(run("audit", "--format", "csv").stdout)))
    assert [(r["grant"], r["verdict"], r["outcome"]) for r in rows] == [("agent", "allow", "ok"), ("other", "deny", "")]
    assert json.loads(rows[1]["arguments"]) == {"jobId": "1", "note": 'a, "quoted"\nline'}

    only = run("audit", "--format", "jsonl", "--verdict", "deny").stdout.splitlines()
    assert [json.loads(line)["grant"] for line in only] == ["other"]


# -- a command run in the wrong directory ------------------------------------------------------------

READ_COMMANDS = [
    ("decisions", "list"),
    ("approve", "d_123"),
    ("deny", "--reason", "no", "--all-pending"),
    ("grant", "list"),
    ("grant", "create", "agent"),
    ("grant", "revoke", "agent"),
    ("audit",),
    ("audit", "verify"),
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=" ".join)
def test_commands_refuse_a_missing_database_with_its_path_and_create_nothing(bare, command):
    result = run(*command, code=1)
    expected = database_file(bare).resolve()
    assert f"no holdgate database at {expected}" in " ".join(result.stderr.split()), result.stderr
    assert "HOLDGATE_DATA_DIR" in result.stderr and "holdgate db upgrade" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), "an error message, not a traceback"
    assert not (bare / "data").exists(), "nothing created in the wrong directory"


def test_after_db_upgrade_the_same_commands_work(bare):
    run("db", "upgrade")
    assert "0 decision(s)" in run("decisions", "list").stdout
    run("grant", "create", "agent")
    assert "agent" in run("grant", "list").stdout


# -- serve refuses what the settings refuse ----------------------------------------------------------


def test_serve_refuses_the_anonymous_dev_grant_on_a_public_host_given_on_the_command_line(env):
    """`--host` goes through the same validation as HOLDGATE_HOST (it used to skip it and start)."""
    environment = {
        **os.environ,
        "HOLDGATE_ANONYMOUS_DEV_GRANT": "true",
        "HOLDGATE_CONFIG_DIR": str(env / "config"),
        "HOLDGATE_DATA_DIR": str(env / "data"),
        "PYTHONPATH": str(ROOT),
    }
    (env / "config" / "servers.json").write_text(json.dumps({"mcpServers": {}}))
    try:
        done = subprocess.run(
            [sys.executable, "-c", "from service.cli import app; app()", "serve", "--host", "0.0.0.0", "--port", "0"],
            cwd=env,
            env=environment,
            capture_output=True,
            text=True,
            timeout=60,
        )
    except subprocess.TimeoutExpired as exc:
        raise AssertionError("holdgate started serving on 0.0.0.0 with the anonymous dev grant") from exc
    assert done.returncode == 1, done.stderr
    message = " ".join(done.stderr.split())
    assert "holdgate refuses to start: HOLDGATE_ANONYMOUS_DEV_GRANT is only allowed on a loopback address" in message
    assert "'0.0.0.0'" in message


def test_serve_options_keep_the_other_settings(env, monkeypatch):
    from service.cli import _settings

    monkeypatch.setenv("HOLDGATE_SECRET_KEY", "a key of at least sixteen")
    monkeypatch.setenv("HOLDGATE_ANONYMOUS_DEV_GRANT", "true")
    get_settings.cache_clear()
    settings = _settings(env / "other", host="127.0.0.2", port=9001)
    assert (settings.host, settings.port, settings.config_dir) == ("127.0.0.2", 9001, env / "other")
    assert (
        settings.gateway.anonymous_dev_grant and settings.secret_key.get_secret_value() == "a key of at least sixteen"
    )
