"""The dashboard without a browser: sign-in, redirects, CSRF, 404, a decision's story, history,
export, rules, and the live event stream."""

from __future__ import annotations

import asyncio
import csv
import io
import json

from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.dashboard.support import browser, csrf_of, sign_in, with_catalogs
from tests.support.harness import run_gateway, servers


async def test_nothing_is_visible_without_signing_in(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw, browser(gw) as client:
        for path in ("/", "/history?tab=calls", "/rules", "/decisions/d_x", "/history/export?format=csv", "/events"):
            response = await client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login?next=%2F"), response.headers["location"]
        assert (await client.post("/decisions/d_x/deny", data={"reason": "no"})).status_code == 303

        login = await client.get("/login?next=/rules")
        assert login.status_code == 200 and 'name="token"' in login.text
        wrong = await client.post("/login", data={"token": "nope", "csrf": csrf_of(login.text), "next": "/rules"})
        assert wrong.status_code == 401 and "belongs to no person" in wrong.text
        forged = await client.post("/login", data={"token": "alice-token-1", "csrf": "guess"})
        assert forged.status_code == 403
        ok = await client.post("/login", data={"token": "alice-token-1", "csrf": csrf_of(wrong.text), "next": "/rules"})
        assert ok.status_code == 303 and ok.headers["location"] == "/rules"
        assert "signed in as" in (await client.get("/")).text

        missing = await client.get("/decisions/d_does_not_exist")
        assert missing.status_code == 404
        assert "There is no decision d_does_not_exist" in missing.text

        no_csrf = await client.post("/decisions/d_x/deny", data={"reason": "no"})
        assert no_csrf.status_code == 403

        evil = await client.get("/login?next=//evil.example/")
        assert evil.status_code == 303 and evil.headers["location"] == "/"


async def test_deny_from_the_dashboard_and_read_the_whole_story(tmp_path):
    with_catalogs(tmp_path)
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
        browser(gw) as client,
    ):
        csrf = await sign_in(client, "alice")
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-7"}))
        [decision] = await wait_for_decisions(gw)

        queue = (await client.get("/")).text
        assert f'id="decision-{decision.id}"' in queue and "job-7" in queue
        assert "alice, bob" in queue and "write, medium" in queue, "approvers and the catalog's risk"

        no_reason = await client.post(f"/decisions/{decision.id}/deny", data={"csrf": csrf, "reason": ""})
        assert no_reason.status_code == 303 and "reason+is+required" in no_reason.headers["location"]
        denied = await client.post(
            f"/decisions/{decision.id}/deny", data={"csrf": csrf, "reason": "still running", "next": "/"}
        )
        assert denied.status_code == 303
        result = await asyncio.wait_for(call, 10)
        assert result.is_error
        await gw.state.audit.flush()

        story = await client.get(f"/decisions/{decision.id}")
        assert story.status_code == 200
        text = story.text
        assert 'data-testid="status">denied' in text
        assert "<strong>alice</strong> denied via dashboard" in text and "still running" in text
        assert "console" in text, "the notification the rule's channel was sent"
        assert 'data-testid="time-to-decide"' in text

        history = (await client.get("/history?status=denied&approver=alice")).text
        assert f'id="row-{decision.id}"' in history and "<svg" in history
        assert f'id="row-{decision.id}"' not in (await client.get("/history?approver=bob")).text
        calls = (await client.get("/history?tab=calls&server=jobs")).text
        assert "cancel-async-job" in calls and decision.id in calls

        exported = await client.get("/history/export?status=denied&format=csv")
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [(r["id"], r["status"], r["reason"], r["decided_via"]) for r in rows] == [
            (decision.id, "denied", "still running", "dashboard")
        ]
        assert "attachment" in exported.headers["content-disposition"]
        lines = (await client.get("/history/export?tab=calls&format=jsonl")).text.splitlines()
        assert json.loads(lines[-1])["decision_id"] == decision.id and "hash" in json.loads(lines[-1])

        rules = (await client.get("/rules?server=jobs&tool=cancel-async-job&grant=agent")).text
        assert "list-async-jobs" in rules and "require_approval" in rules
        assert "decided by: rule &#39;cancel-async-job&#39;" in rules, "policy explain in the browser"


async def test_the_event_stream_tells_open_pages_about_decisions(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
        browser(gw) as client,
    ):
        await sign_in(client, "alice")
        async with client.stream("GET", "/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.aiter_lines()
            assert (await anext(lines)).startswith("retry:")
            call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-8"}))
            [decision] = await wait_for_decisions(gw)
            await api(gw, "POST", f"/api/decisions/{decision.id}/deny", "bob", json={"reason": "no"})
            seen = []
            async with asyncio.timeout(10):
                async for line in lines:
                    if line.startswith("data:"):
                        seen.append(json.loads(line[5:]))
                        if {"id": decision.id, "status": "denied"} in seen:
                            break
            assert {"id": decision.id, "status": "pending"} in seen, "the new held call was announced"
        await asyncio.wait_for(call, 10)
