"""`holdgate tools list|diff|accept` and `policy check`'s word on `servers`, in-process on a temporary database."""

from __future__ import annotations

import asyncio
import json

from service import db
from service.settings import get_settings
from service.tooldefs import ToolDefinitions
from tests.test_cli import bare, env, run  # noqa: F401  (fixtures)


def seed(*listings: list[dict]) -> None:
    """Record each listing of server `jobs` in turn, as the gateway would (the first is its first sight)."""

    async def work() -> None:
        engine = db.create_engine(get_settings().effective_database_url)
        try:
            registry = ToolDefinitions(db.session_factory(engine))
            for listing in listings:
                await registry.observe("jobs", listing, complete=True)
        finally:
            await engine.dispose()

    asyncio.run(work())


A = {"name": "a", "description": "reads", "inputSchema": {"type": "object"}}
A2 = {**A, "description": "reads and deletes"}
B = {"name": "b", "inputSchema": {"type": "object"}}


def test_list_diff_and_accept(env):  # noqa: F811 (the fixture)
    seed([A], [A2, B])
    listed = run("tools", "list").stdout
    assert "changed   jobs/a" in listed and "new       jobs/b" in listed and "never accepted" in listed
    pending = json.loads(run("tools", "list", "--pending", "--json").stdout)
    assert [(p["tool"], p["status"]) for p in pending] == [("a", "changed"), ("b", "new")]

    diff = run("tools", "diff", "jobs").stdout
    assert "jobs/a: changed since accepted by first sight" in diff
    assert '-  "description": "reads",' in diff and '+  "description": "reads and deletes",' in diff
    assert "jobs/b: new (never accepted)" in diff
    current = pending[0]["current_sha256"]
    assert f"holdgate tools accept jobs a --sha256 {current}" in diff

    assert "must be a sha256" in run("tools", "accept", "jobs", "a", "--sha256", "nothex", code=2).output
    stale = run("tools", "accept", "jobs", "a", "--sha256", "0" * 64, code=1)
    assert "review the current diff" in stale.output
    accepted = run("tools", "accept", "jobs", "a", "--sha256", current).stdout
    assert accepted.startswith(f"accepted jobs/a: definition sha256 {current} (replacing ")
    assert "already accepted" in run("tools", "accept", "jobs", "a", code=1).output
    assert "a new tool" in run("tools", "accept", "jobs", "b").stdout
    assert run("tools", "diff", "jobs").stdout.strip() == "every tool of jobs is as accepted"
    one = run("tools", "diff", "jobs", "a").stdout
    assert one.startswith("jobs/a: as accepted") and "by local-operator" in one


def test_unknown_servers_and_tools_exit_1_saying_so(env):  # noqa: F811
    seed([A])
    assert "has recorded no tools of server 'nope'" in run("tools", "diff", "nope", code=1).output
    assert "no definition of tool 'z' on server 'jobs'" in run("tools", "diff", "jobs", "z", code=1).output
    assert "no definition of tool 'z'" in run("tools", "accept", "jobs", "z", code=1).output
    assert run("tools", "list", "nope").stdout.strip() == "no tools recorded for server nope"


def test_policy_check_warns_of_settings_for_a_server_servers_json_does_not_have(bare):  # noqa: F811
    config = bare / "config"
    (config / "servers.json").write_text(json.dumps({"mcpServers": {"jobs": {"command": "python"}}}))
    policy = json.loads((config / "policy.json").read_text())
    policy["servers"] = {"jbos": {"on_tool_change": "deny"}, "jobs": {"on_tool_change": "allow"}}
    (config / "policy.json").write_text(json.dumps(policy))
    result = run("policy", "check")
    assert result.stdout.startswith("ok: ")
    assert "servers.jbos: no server 'jbos'" in result.stderr
    assert "servers.jobs" not in result.stderr
