"""`holdgate policy init`: a starter policy, classified by risk, that loads.

Against server-everything (which holdgate's shipped catalogs list) and against an SDK-built server no
catalog lists, whose tools describe themselves more or less (`tests/policy/annotated_server.py`).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import mcp_types as types
from typer.testing import CliRunner

from service.catalog import SHIPPED_DIR, Catalogs, ToolRisk
from service.cli import app
from service.commands.policy_init import classify
from service.policy import load_policy
from tests.support.harness import ROOT, everything_server


def config_with_everything(tmp_path: Path, *, catalog: dict | None = None) -> Path:
    """A config dir with server-everything in servers.json and, only if given, a catalog/ of its own."""
    config = tmp_path / "config"
    config.mkdir()
    (config / "servers.json").write_text(json.dumps({"mcpServers": {"everything": everything_server()}}))
    if catalog is not None:
        (config / "catalog").mkdir()
        (config / "catalog/server-everything.json").write_text(json.dumps(catalog))
    return config


def init(*args: str, code: int = 0):
    result = CliRunner().invoke(app, ["policy", "init", *args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def test_without_a_catalog_dir_init_uses_the_shipped_catalogs(tmp_path, node_available):
    """A config dir without catalog/ used to classify by annotations alone: get-env (readOnlyHint, but
    it returns the server's secrets) was allowed. The shipped catalogs apply now."""
    config = config_with_everything(tmp_path)
    assert not (config / "catalog").exists()
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
    assert all("catalog server-everything.json" in rule["description"] for rule in document["tools"].values())
    assert "warning" not in result.output, "the shipped catalog lists every tool of server-everything"
    assert policy.evaluate("agent", "everything", "a-tool-added-later").action == "deny"
    assert policy.evaluate("agent", "other-server", "echo").action == "deny", "rules are keyed server/tool"

    again = init("--server", "everything", "--config", str(config), code=1)
    assert "exists; pass --force" in again.output


def test_a_catalog_in_the_config_dir_replaces_the_shipped_one_of_the_same_name(tmp_path, node_available):
    own = {"server": "everything", "tools": {"echo": {"risk": "destructive", "level": "low", "note": "Ours."}}}
    config = config_with_everything(tmp_path, catalog=own)
    out = tmp_path / "starter.json"
    init("--server", "everything", "--config", str(config), "--output", str(out))
    policy = load_policy(out)
    assert policy.evaluate("g", "everything", "echo").action == "require_approval"
    # the shipped server-everything.json is replaced, so get-env goes by its annotations (readOnlyHint)
    assert policy.evaluate("g", "everything", "get-env").action == "allow"


def test_tools_nothing_describes_require_approval_with_a_warning(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    annotated = {
        "command": sys.executable,
        "args": ["-m", "tests.policy.annotated_server"],
        "env": {"PYTHONPATH": str(ROOT)},
    }
    (config / "servers.json").write_text(json.dumps({"mcpServers": {"annotated": annotated}}))
    out = tmp_path / "starter.json"
    result = init("--server", "annotated", "--config", str(config), "--output", str(out), "--rate", "5")

    policy = load_policy(out)
    actions = {
        tool: policy.evaluate("g", "annotated", tool)
        for tool in ("reader", "eraser", "writer", "not-read-only", "titled", "mystery")
    }
    assert actions["reader"].action == "allow" and actions["reader"].limits == ()
    assert actions["writer"].action == "allow" and actions["writer"].limits[0].max == 5
    for tool in ("eraser", "not-read-only", "titled", "mystery"):
        assert actions[tool].action == "require_approval", tool
    assert "nothing says what mystery does" in (actions["mystery"].reason or "")
    assert "warning: 2 tool(s) have neither a catalog entry nor annotations" in result.output
    assert "require approval: titled, mystery" in result.output or "require approval: mystery, titled" in result.output
    description = json.loads(out.read_text())["tools"]["annotated/not-read-only"]["description"]
    assert "destructiveHint unset" in description


def test_the_shipped_catalogs_are_package_data(tmp_path):
    """An installed holdgate (what setuptools builds, not this source tree) has the catalogs that
    `policy init` and the dashboard fall back to, and finds them where it is installed."""
    import subprocess

    shipped = sorted(path.name for path in SHIPPED_DIR.glob("*.json"))
    assert {"server-everything.json", "cross-llm-mcp.json"} <= set(shipped)
    assert Catalogs.load(tmp_path / "no-such-dir").risk("everything", "get-env") is not None
    build = [sys.executable, "-c", "from setuptools import setup; setup()", "-q"]
    build += ["egg_info", "--egg-base", str(tmp_path), "build_py", "--build-lib", str(tmp_path / "lib")]
    subprocess.run(build, cwd=ROOT, check=True, capture_output=True)
    assert sorted(path.name for path in (tmp_path / "lib/service/catalog/shipped").glob("*.json")) == shipped
    probe = "from service.catalog import Catalogs, SHIPPED_DIR; print(SHIPPED_DIR); "
    probe += "print(Catalogs.load(SHIPPED_DIR / 'none').risk('everything', 'get-env').level)"
    found = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "lib"), "PATH": "/usr/bin:/bin"},
        check=True,
        capture_output=True,
        text=True,
    )
    assert found.stdout.split() == [str(tmp_path / "lib/service/catalog/shipped"), "high"]


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


def test_classification_order_catalog_then_annotations_then_approval():
    assert classify(tool(read_only_hint=True), None).action == "allow"
    assert classify(tool(read_only_hint=False, destructive_hint=True), None).action == "require_approval"
    assert classify(tool(destructive_hint=False), None).action == "rate_limit"
    # the MCP spec: destructiveHint defaults to true when a tool is not read-only
    assert classify(tool(read_only_hint=False), None).risk == "destructive"
    for unknown in (classify(tool(), None), classify(tool(title="Nothing about risk"), None)):
        assert (unknown.risk, unknown.action) == ("unknown", "require_approval")
    catalog = ToolRisk("destructive", "medium", "Deletes it.", "x.json")
    assert classify(tool(read_only_hint=True), catalog).action == "require_approval", "the catalog wins"
