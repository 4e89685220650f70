"""An upstream's own tasks, passed through (tools the policy lets run), spoken on the wire in both revisions:
tools/list keeps the upstream's taskSupport, a task-augmented call goes upstream as a task under a holdgate id, and
tasks/get, tasks/result, tasks/list, tasks/cancel (2025-11-25) and the extension's tasks/get|update|cancel reach the
upstream's task; other grants, forged ids and the upstream's own ids reach nothing.

Peers: tests/peers/task_server.py (a low-level `mcp` Server doing tasks on the wire) and server-everything's
`simulate-research-query` (the TypeScript SDK's task runtime, `taskSupport: "required"`)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from service.models import AuditEvent
from tests.approvals.support import api, approval_policy, decisions, wait_for_decisions
from tests.support.harness import ROOT, everything_server, run_gateway
from tests.tasks.support import Wire2026, wire_2025
from tests.tasks.test_tasks_2026 import poll_until_ended

TASK_PEER = ROOT / "tests/peers/task_server.py"


def peer(tmp_path: Path) -> dict:
    gates = tmp_path / "gates"
    gates.mkdir(parents=True, exist_ok=True)
    env = {"TASK_GATE_DIR": str(gates), "TASK_CALL_LOG": str(tmp_path / "peer_calls.jsonl")}
    return {"command": sys.executable, "args": [str(TASK_PEER), "stdio"], "env": env}


def open_gate(tmp_path: Path, name: str) -> None:
    (tmp_path / "gates" / name).write_text("open")


def peer_runs(tmp_path: Path) -> list[dict]:
    log = tmp_path / "peer_calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def peer_policy() -> dict:
    policy = approval_policy()
    policy["tools"] = {
        "peer/gate": {"action": "allow"},
        "peer/crash": {"action": "allow"},
        "peer/refuse": {"action": "allow"},
        "peer/plain": {"action": "allow"},
        "peer/held": {"action": "allow"},
        "everything/simulate-research-query": {"action": "allow"},
    }
    return policy


async def poll_2025(wire, task_id: str) -> dict:
    for _ in range(600):
        got = (await wire.request("tasks/get", {"taskId": task_id}))["result"]
        if got["status"] not in ("working", "input_required"):
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} did not end: {got}")


async def audit_rows(gw, tool: str) -> list[AuditEvent]:
    from sqlmodel import select

    for _ in range(100):
        async with gw.state.sessions() as session:
            rows = list(await session.scalars(select(AuditEvent).where(AuditEvent.tool == tool)))
        if rows:
            return rows
        await asyncio.sleep(0.05)
    return []


async def test_2025_an_allowed_tool_keeps_the_upstreams_task_support_and_its_task_passes_through(tmp_path, database):
    async with (
        run_gateway(tmp_path, policy=peer_policy(), servers={"peer": peer(tmp_path)}, **database) as gw,
        wire_2025(gw, "peer") as wire,
    ):
        listed = (await wire.request("tools/list"))["result"]["tools"]
        support = {t["name"]: (t.get("execution") or {}).get("taskSupport") for t in listed}
        assert support == {"gate": "optional", "crash": "required", "refuse": "optional", "plain": None}

        created = (await wire.call_as_task("gate", {"name": "g1"}))["result"]["task"]
        assert created["taskId"].startswith("t_") and created["status"] == "working"
        got = (await wire.request("tasks/get", {"taskId": created["taskId"]}))["result"]
        assert got["taskId"] == created["taskId"] and got["status"] == "working"
        assert got["pollInterval"] == 100, "the upstream's own task, as it says it"

        waiting = asyncio.create_task(wire.request("tasks/result", {"taskId": created["taskId"]}))
        await asyncio.sleep(0.3)
        assert not waiting.done(), "tasks/result blocks while the upstream's task works"
        open_gate(tmp_path, "g1")
        result = (await asyncio.wait_for(waiting, 30))["result"]
        assert result["content"][0]["text"] == "opened g1"
        assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": created["taskId"]}

        done = (await wire.request("tasks/get", {"taskId": created["taskId"]}))["result"]
        listed_tasks = (await wire.request("tasks/list"))["result"]["tasks"]
        [row] = await audit_rows(gw, "gate")
    assert done["status"] == "completed"
    assert [(t["taskId"], t["status"]) for t in listed_tasks] == [(created["taskId"], "completed")]
    assert peer_runs(tmp_path) == [{"tool": "gate", "task": True}], "the upstream ran it once, as a task"
    assert row.verdict == "allowed" and row.outcome == "task" and created["taskId"] in (row.detail or "")
    assert await decisions(gw) == [], "an allowed call opens no decision"


async def test_2025_failures_pass_through_as_the_upstream_gave_them(tmp_path):
    async with (
        run_gateway(tmp_path, policy=peer_policy(), servers={"peer": peer(tmp_path)}) as gw,
        wire_2025(gw, "peer") as wire,
    ):
        crashed = (await wire.call_as_task("crash", {}))["result"]["task"]
        refused = (await wire.call_as_task("refuse", {}))["result"]["task"]
        crash_result = await wire.request("tasks/result", {"taskId": crashed["taskId"]})
        refuse_result = (await wire.request("tasks/result", {"taskId": refused["taskId"]}))["result"]
        crash_got = await wire.request("tasks/get", {"taskId": crashed["taskId"]})
        crash_got = crash_got["result"]
        refuse_got = (await wire.request("tasks/get", {"taskId": refused["taskId"]}))["result"]
        not_a_task_tool = await wire.call_as_task("plain", {"text": "x"})
        required_without_task = await wire.request("tools/call", {"name": "crash", "arguments": {}})
    assert crash_result["error"]["code"] == 4200 and crash_result["error"]["message"] == "the peer crashed"
    assert crash_result["error"]["data"]["_meta"]["io.modelcontextprotocol/related-task"] == {
        "taskId": crashed["taskId"]
    }
    assert refuse_result["isError"] is True and "not today" in refuse_result["content"][0]["text"]
    assert crash_got["status"] == refuse_got["status"] == "failed"
    assert not_a_task_tool["error"]["code"] == -32601, "a tool with no task support here or upstream: -32601"
    assert required_without_task["error"]["code"] == -32601, "the upstream's answer to a required tool without task"


async def test_2025_cancel_reaches_the_upstream_and_the_task_stays_cancelled(tmp_path):
    async with (
        run_gateway(tmp_path, policy=peer_policy(), servers={"peer": peer(tmp_path)}) as gw,
        wire_2025(gw, "peer") as wire,
    ):
        task = (await wire.call_as_task("gate", {"name": "g2"}))["result"]["task"]
        cancelled = (await wire.request("tasks/cancel", {"taskId": task["taskId"]}))["result"]
        open_gate(tmp_path, "g2")
        await asyncio.sleep(0.2)
        after = (await wire.request("tasks/get", {"taskId": task["taskId"]}))["result"]
        twice = await wire.request("tasks/cancel", {"taskId": task["taskId"]})
    assert cancelled["status"] == "cancelled" and cancelled["taskId"] == task["taskId"]
    assert after["status"] == "cancelled"
    assert twice["error"]["code"] == -32602 and "already ended" in twice["error"]["message"]


async def test_other_grants_forged_and_upstream_ids_reach_nothing(tmp_path):
    async with (
        run_gateway(
            tmp_path,
            policy=peer_policy(),
            servers={"peer": peer(tmp_path), "jobs2": peer(tmp_path / "second")},
            grants=["agent", "other"],
        ) as gw,
        wire_2025(gw, "peer") as wire,
        wire_2025(gw, "peer", grant="other") as other,
        wire_2025(gw, "jobs2") as elsewhere,
    ):
        task = (await wire.call_as_task("gate", {"name": "g3"}))["result"]["task"]
        # The upstream's own id, as the peer gave it out, is not a holdgate task id.
        shared = await gw.state.proxies["peer"].shared_upstream()
        upstream_ids = [t["taskId"] for t in (await shared.request_unchecked("tasks/list", {}))["tasks"]]
        foreign_get = await other.request("tasks/get", {"taskId": task["taskId"]})
        foreign_cancel = await other.request("tasks/cancel", {"taskId": task["taskId"]})
        foreign_result = await other.request("tasks/result", {"taskId": task["taskId"]})
        other_list = (await other.request("tasks/list"))["result"]["tasks"]
        by_upstream_id = await wire.request("tasks/get", {"taskId": upstream_ids[0]})
        forged = await wire.request("tasks/cancel", {"taskId": "t_" + "A" * 32})
        through_another_server = await elsewhere.request("tasks/cancel", {"taskId": task["taskId"]})
        still = (await wire.request("tasks/get", {"taskId": task["taskId"]}))["result"]
        upstream_still = await shared.request_unchecked("tasks/get", {"taskId": upstream_ids[0]})
    for answer in (foreign_get, foreign_cancel, foreign_result, by_upstream_id, forged, through_another_server):
        assert answer["error"]["code"] == -32602 and "no task" in answer["error"]["message"], answer
    assert other_list == []
    assert still["status"] == "working" and upstream_still["status"] == "working", "nothing was cancelled"


async def test_2026_the_extension_passes_an_upstream_task_through_in_its_own_shapes(tmp_path, database):
    async with run_gateway(tmp_path, policy=peer_policy(), servers={"peer": peer(tmp_path)}, **database) as gw:
        wire = Wire2026([gw.mcp_url("peer")], gw.tokens["agent"])
        created = (await wire.call("gate", {"name": "g4"}))["result"]
        assert created["resultType"] == "task" and created["taskId"].startswith("t_")
        assert created["status"] == "working" and created["pollIntervalMs"] == 100 and created["ttlMs"] > 0
        ack = (
            await wire.request(
                "tasks/update", {"taskId": created["taskId"], "inputResponses": {}}, name=created["taskId"]
            )
        )["result"]
        open_gate(tmp_path, "g4")
        done = await poll_until_ended(wire, created["taskId"])
        refused = (await wire.call("refuse", {}))["result"]
        refused_end = await poll_until_ended(wire, refused["taskId"])
        crashed = (await wire.call("crash", {}))["result"]
        crashed_end = await poll_until_ended(wire, crashed["taskId"])
        cancel_me = (await wire.call("gate", {"name": "g5"}))["result"]
        cancel_ack = (await wire.task("tasks/cancel", cancel_me["taskId"]))["result"]
        cancelled = (await wire.task("tasks/get", cancel_me["taskId"]))["result"]
        without_extension = (await wire.call("gate", {"name": "g6"}, tasks=False))["result"]
        plain = (await wire.call("plain", {"text": "hi"}))["result"]
    assert ack["resultType"] == "complete"
    assert done["status"] == "completed" and done["result"]["content"][0]["text"] == "opened g4"
    assert refused_end["status"] == "completed", "the extension: a tool error result completes the task"
    assert refused_end["result"]["isError"] is True
    assert crashed_end["status"] == "failed" and crashed_end["error"]["code"] == 4200
    assert cancel_ack["resultType"] == "complete" and cancelled["status"] == "cancelled"
    assert without_extension["resultType"] == "complete" and "gate at once" in without_extension["content"][0]["text"]
    assert plain["resultType"] == "complete" and "plain at once" in plain["content"][0]["text"]


async def test_a_2026_request_without_the_extension_gets_a_required_tools_result_through_its_task(tmp_path):
    async with run_gateway(tmp_path, policy=peer_policy(), servers={"peer": peer(tmp_path)}) as gw:
        wire = Wire2026([gw.mcp_url("peer")], gw.tokens["agent"])
        answer = await wire.call("crash", {}, tasks=False)
    assert answer["error"]["code"] == 4200, "holdgate made the call as the upstream's task and gave its outcome"
    assert peer_runs(tmp_path) == [{"tool": "crash", "task": True}]


async def test_a_held_tool_whose_upstream_requires_tasks_is_held_then_run_as_the_upstreams_task(tmp_path):
    """server-everything's simulate-research-query must be called as a task; held here, holdgate lists it
    `optional` (its own held task), and once approved calls it upstream as a task and follows it to its result."""
    policy = approval_policy()
    policy["tools"] = {
        "everything/simulate-research-query": {
            "action": "require_approval",
            "approval": {"approvers": ["group:ops"], "channels": ["console"], "timeout": "15m"},
        },
        "everything/*": {"action": "allow"},
    }
    async with (
        run_gateway(tmp_path, policy=policy, servers={"everything": everything_server()}) as gw,
        wire_2025(gw, "everything") as wire,
    ):
        listed = (await wire.request("tools/list"))["result"]["tools"]
        support = {t["name"]: (t.get("execution") or {}).get("taskSupport") for t in listed}
        task = (await wire.call_as_task("simulate-research-query", {"topic": "tides"}))["result"]["task"]
        [decision] = await wait_for_decisions(gw)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        result = (await wire.request("tasks/result", {"taskId": task["taskId"]}))["result"]
    assert support["simulate-research-query"] == "optional"
    assert result.get("isError") is not True and "tides" in result["content"][0]["text"]
    assert result["_meta"]["io.modelcontextprotocol/related-task"] == {"taskId": task["taskId"]}


async def test_server_everythings_required_task_tool_passes_through(tmp_path):
    async with (
        run_gateway(tmp_path, policy=peer_policy(), servers={"everything": everything_server()}) as gw,
        wire_2025(gw, "everything") as wire,
    ):
        listed = (await wire.request("tools/list"))["result"]["tools"]
        support = {t["name"]: (t.get("execution") or {}).get("taskSupport") for t in listed}
        task = (await wire.call_as_task("simulate-research-query", {"topic": "rivers"}))["result"]["task"]
        ended = await poll_2025(wire, task["taskId"])
        result = (await wire.request("tasks/result", {"taskId": task["taskId"]}))["result"]
    assert support["simulate-research-query"] == "required"
    assert ended["status"] == "completed"
    assert "rivers" in result["content"][0]["text"]


async def test_2026_another_grant_and_forged_ids_reach_nothing_and_change_nothing(tmp_path):
    async with run_gateway(
        tmp_path, policy=peer_policy(), servers={"peer": peer(tmp_path)}, grants=["agent", "other"]
    ) as gw:
        wire = Wire2026([gw.mcp_url("peer")], gw.tokens["agent"])
        other = Wire2026([gw.mcp_url("peer")], gw.tokens["other"])
        task = (await wire.call("gate", {"name": "g7"}))["result"]
        foreign = [await other.task(method, task["taskId"]) for method in ("tasks/get", "tasks/cancel")]
        foreign.append(
            await other.request(
                "tasks/update", {"taskId": task["taskId"], "inputResponses": {"x": {}}}, name=task["taskId"]
            )
        )
        forged = await wire.task("tasks/cancel", "t_" + "B" * 32)
        mismatched = await wire.request("tasks/cancel", {"taskId": task["taskId"]}, name="t_" + "B" * 32)
        still = (await wire.task("tasks/get", task["taskId"]))["result"]
    for answer in (*foreign, forged):
        assert answer["error"]["code"] == -32602 and "no task" in answer["error"]["message"], answer
    assert mismatched["error"]["code"] == -32020
    assert still["status"] == "working", "nothing reached the upstream's task"
