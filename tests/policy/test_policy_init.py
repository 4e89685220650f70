"""`holdgate policy init` against server-everything: a starter policy, classified by risk, that loads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mcp_types as types
from typer.testing import CliRunner

from service.catalog import ToolRisk
from service.cli import app
from service.policy import load_policy
from service.policy.init import classify
from tests.support.harness import ROOT, everything_server


def config_with_everything(tmp_path: Path, *, catalog: bool) -> Path:
    config = tmp_path / "config"
    config.mkdir()
    (config / "servers.json").write_text(json.dumps({"mcpServers": {"everything": everything_server()}}))
    if catalog:
        shutil.copytree(ROOT / "config/catalog", config / "catalog")
    return config


def init(*args: str, code: int = 0):
    result = CliRunner().invoke(app, ["policy", "init", *args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def test_init_writes_a_policy_by_catalog_risk_that_loads(tmp_path, node_available):
    config = config_with_everything(tmp_path, catalog=True)
    result = init("--server", "everything", "--config", str(config))
    written = config / "policy.json"
    assert f"wrote {written}" in result.output

    policy = load_policy(written)
    document = json.loads(written.read_text())
    assert document["default"] == "deny"
    assert policy.evaluate("agent", "everything", "echo").action == "allow"
    assert policy.evaluate("agent", "everything", "echo").limits == ()
    write = policy.evaluate("agent", "everything", "toggle-simulated-logging")
    assert write.action == "allow" and write.limits[0].max == 30 and write.limits[0].window_seconds == 60
    # get-env only reads, but the catalog rates it high risk (it returns the server's secrets).
    assert policy.evaluate("agent", "everything", "get-env").action == "require_approval"
    assert "catalog server-everything.json" in document["tools"]["everything/echo"]["description"]
    assert policy.evaluate("agent", "everything", "a-tool-added-later").action == "deny"
    assert policy.evaluate("agent", "other-server", "echo").action == "deny", "rules are keyed server/tool"

    again = init("--server", "everything", "--config", str(config), code=1)
    assert "exists; pass --force" in again.output


def test_init_without_a_catalog_reads_the_tools_annotations(tmp_path, node_available):
    config = config_with_everything(tmp_path, catalog=False)
    out = tmp_path / "starter.json"
    init("--server", "everything", "--config", str(config), "--output", str(out), "--rate", "5")
    policy = load_policy(out)
    assert policy.evaluate("g", "everything", "get-env").action == "allow"  # readOnlyHint
    toggle = policy.evaluate("g", "everything", "toggle-subscriber-updates")
    assert toggle.action == "allow" and toggle.limits[0].max == 5
    assert "annotations" in json.loads(out.read_text())["tools"]["everything/get-env"]["description"]


def test_init_names_an_unknown_server(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "servers.json").write_text(json.dumps({"mcpServers": {"jobs": {"command": "true"}}}))
    result = init("--server", "nope", "--config", str(config), "--output", "-", code=1)
    assert "no server 'nope'" in result.output and "servers: jobs" in result.output


def tool(**hints) -> types.Tool:
    return types.Tool(
        name="t", input_schema={"type": "object"}, annotations=types.ToolAnnotations(**hints) if hints else None
    )


def test_classification_order_catalog_then_annotations_then_write():
    assert classify(tool(read_only_hint=True), None).action == "allow"
    assert classify(tool(read_only_hint=False, destructive_hint=True), None).action == "require_approval"
    assert classify(tool(destructive_hint=False), None).action == "rate_limit"
    unknown = classify(tool(), None)
    assert (unknown.risk, unknown.action) == ("write", "rate_limit")
    catalog = ToolRisk("destructive", "medium", "Deletes it.", "x.json")
    assert classify(tool(read_only_hint=True), catalog).action == "require_approval", "the catalog wins"
