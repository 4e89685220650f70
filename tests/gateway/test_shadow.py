"""Shadow rules end to end: a real MCP client through holdgate to the demo jobs server, with a shadow policy
beside the enforced one. Only the enforced verdict acts; where the shadow disagrees the audit record says
what it would have done (and the hash chain still verifies), /metrics counts it by rule, the dashboard's
history filters on it, and a broken shadow file pauses shadowing without touching the enforced policy."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY

from service.audit import chain
from service.audit import service as audit_service
from tests.approvals.support import api, approval_policy
from tests.dashboard.support import browser, sign_in
from tests.support.harness import audit_events, executed_calls, run_gateway, servers, text_of


def enforced() -> dict[str, Any]:
    policy = approval_policy()
    policy["tools"]["cancel-async-job"] = {"action": "allow"}
    return policy


def shadow() -> dict[str, Any]:
    """Tighter: cancelling a production job is refused, listing jobs is limited to once a minute."""
    return {
        "version": "1",
        "default": "deny",
        "tools": {
            "cancel-async-job": {
                "action": "allow",
                "cases": [{"when": "args.jobId.startsWith('prod-')", "action": "deny", "reason": "no prod"}],
            },
            "list-async-jobs": {"rate_limit": {"max": 1, "window": "minute"}},
        },
    }


def disagreements(rule: str, enforced: str, shadow: str) -> float:
    value = REGISTRY.get_sample_value(
        "holdgate_shadow_disagreements_total", {"rule": rule, "enforced": enforced, "shadow": shadow}
    )
    return value or 0.0


async def test_shadow_disagreements_reach_the_audit_and_the_metrics(tmp_path: Path, database: dict[str, Any]) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config/policy.shadow.json").write_text(json.dumps(shadow()))
    before = {
        "prod": disagreements("cancel-async-job.cases[0]", "allow", "deny"),
        "list": disagreements("list-async-jobs", "allow", "rate_limited"),
    }
    async with run_gateway(tmp_path, policy=enforced(), servers=servers(tmp_path), **database) as gw:
        async with gw.session("jobs") as session:
            prod = await session.call_tool("cancel-async-job", {"jobId": "prod-1"})
            dev = await session.call_tool("cancel-async-job", {"jobId": "dev-1"})
            first = await session.call_tool("list-async-jobs", {})
            second = await session.call_tool("list-async-jobs", {})
            refused = await session.call_tool("submit-llm-request-async", {"prompt": "x", "provider": "openai"})
        await gw.state.audit.flush()
        events = [(e.tool, e.verdict, e.shadow_verdict, e.shadow_rule) for e in await audit_events(gw)]
        async with gw.state.sessions() as db_session:
            report = await chain.verify(db_session)
            exported = [
                audit_service.to_jsonl(event)
                async for event in audit_service.iter_events(db_session, flt=audit_service.AuditFilter())
            ]
        health = (await _get(gw, "/healthz")).json()
        api_rows = (await api(gw, "GET", "/api/audit?shadow_disagrees=true", "alice")).json()["items"]
        shadow_version = gw.state.shadow.current.version if gw.state.shadow.current is not None else None
        async with browser(gw) as client:
            await sign_in(client, "alice")
            page = (await client.get("/history", params={"tab": "calls", "shadow": "1"})).text

    # only the enforced verdict acts: both cancels and both lists reached the upstream (which knows no such jobs)
    assert all("holdgate" not in text_of(result) for result in (prod, dev, first, second))
    assert [c["arguments"].get("jobId") for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"] == [
        "prod-1",
        "dev-1",
    ]
    assert refused.is_error and "holdgate denied" in text_of(refused)
    assert events == [
        ("cancel-async-job", "allowed", "deny", "cancel-async-job.cases[0]"),
        ("cancel-async-job", "allowed", None, None),
        ("list-async-jobs", "allowed", None, None),
        ("list-async-jobs", "allowed", "rate_limited", "list-async-jobs"),
        ("submit-llm-request-async", "denied", None, None),  # both deny: no disagreement
    ]
    assert report.ok, report.describe()
    assert json.loads(exported[0])["shadow_verdict"] == "deny"
    assert [(row["tool"], row["shadow_verdict"]) for row in api_rows] == [
        ("list-async-jobs", "rate_limited"),
        ("cancel-async-job", "deny"),
    ]
    assert chain.verify_export(exported).ok, "an export with the shadow fields verifies too"
    assert disagreements("cancel-async-job.cases[0]", "allow", "deny") == before["prod"] + 1
    assert disagreements("list-async-jobs", "allow", "rate_limited") == before["list"] + 1
    assert health["shadow_policy"] == {"active": True, "version": shadow_version, "paused": False}
    rows = re.findall(r"<tr>\s*<td>.*?</tr>", page, re.S)
    assert len(rows) == 2, "the history's 'shadow disagrees' filter shows the two disagreeing calls"
    assert "cancel-async-job.cases[0]" in page and "rate_limited" in page


async def test_a_broken_shadow_file_pauses_shadowing_and_never_the_policy(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    shadow_file = tmp_path / "config/policy.shadow.json"
    shadow_file.write_text('{"version": "1", "default": "deny", "tools": {"x": {"action": "maybe"}}}')
    async with run_gateway(tmp_path, policy=enforced(), servers=servers(tmp_path)) as gw:
        assert not gw.state.shadow.active and gw.state.shadow.last_error is not None  # it started anyway
        health = (await _get(gw, "/healthz")).json()
        assert health["status"] == "degraded" and health["shadow_policy"]["paused"] is True
        assert any(problem.startswith("shadow policy:") for problem in health["problems"])
        assert "tools.x" not in json.dumps(health), "no file contents or paths on the unauthenticated route"
        assert REGISTRY.get_sample_value("holdgate_shadow_policy_loaded") == 0
        async with gw.session("jobs") as session:
            paused = await session.call_tool("cancel-async-job", {"jobId": "prod-2"})

            shadow_file.write_text(json.dumps(shadow()))
            assert gw.state.shadow.reload()
            resumed = await session.call_tool("cancel-async-job", {"jobId": "prod-3"})

            shadow_file.unlink()
            gw.state.shadow.reload()
            stopped = await session.call_tool("cancel-async-job", {"jobId": "prod-4"})
        await gw.state.audit.flush()
        events = [(e.verdict, e.shadow_verdict) for e in await audit_events(gw)]
        health = (await _get(gw, "/healthz")).json()

    assert all("holdgate" not in text_of(result) for result in (paused, resumed, stopped))
    assert events == [("allowed", None), ("allowed", "deny"), ("allowed", None)]
    assert health["status"] == "ok" and health["shadow_policy"] == {"active": False, "version": None, "paused": False}


async def _get(gw, path: str):
    import httpx2

    async with httpx2.AsyncClient(base_url=gw.url, timeout=30) as client:
        return await client.get(path)
