"""Edit before release, end to end: a real MCP client through holdgate to the demo jobs server, on SQLite and
PostgreSQL. An approver of an `editable` rule approves with changed arguments (REST, CLI); the edited call is
evaluated by the policy again and must land on the same rule's approval or on allow; the upstream receives the
edited arguments once; the agent is told; the audit keeps both argument sets and the changes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from service.approvals import MAX_EDIT_BYTES
from tests.approvals.support import api, approval_policy, decisions, wait_for_decisions
from tests.dashboard.support import browser, sign_in
from tests.support.harness import audit_events, executed_calls, run_gateway, servers, text_of


def editable_policy() -> dict[str, Any]:
    """cancel-async-job: allowed; prod jobs need ops (editable), fin jobs need carol, payroll is never cancelled;
    submit-llm-request-async needs ops too but is not editable, and its prompt is redacted."""
    policy = approval_policy()
    ops = {"approvers": ["group:ops"], "channels": ["console"], "timeout": "15m"}
    carol = {"approvers": ["carol"]}
    policy["tools"]["cancel-async-job"] = {
        "action": "allow",
        "cases": [
            {"when": "args.jobId == 'job-payroll'", "action": "deny", "reason": "payroll is never cancelled"},
            {"when": "args.jobId.startsWith('prod-')", "action": "require_approval", "approval": ops, "editable": True},
            {"when": "args.jobId.startsWith('fin-')", "action": "require_approval", "approval": carol},
        ],
    }
    policy["tools"]["submit-llm-request-async"] = {"action": "require_approval", "approval": ops}
    return policy


def cancelled(tmp_path: Path) -> list[str]:
    return [c["arguments"]["jobId"] for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


async def approve(gw, decision_id: str, body: Any = None, person: str = "alice"):
    return await api(gw, "POST", f"/api/decisions/{decision_id}/approve", person, json=body)


async def test_an_edited_approval_reaches_the_upstream_with_the_edited_arguments_once(
    tmp_path: Path, database: dict[str, Any]
) -> None:
    async with (
        run_gateway(
            tmp_path, policy=editable_policy(), servers=servers(tmp_path), approval_hold_s=30, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "prod-1"}))
        [decision] = await wait_for_decisions(gw)
        assert decision.editable and decision.rule == "cancel-async-job.cases[1]"
        answer = await approve(gw, decision.id, {"arguments": {"jobId": "prod-2"}, "reason": "prod-1 is live"})
        result = await asyncio.wait_for(held, 10)
        retry = await session.call_tool("cancel-async-job", {"jobId": "prod-1"})  # the agent lost the answer
        view = (await api(gw, "GET", f"/api/decisions/{decision.id}", "bob")).json()
        await gw.state.audit.flush()
        events = [e for e in await audit_events(gw) if e.decision_id == decision.id]
        async with gw.state.sessions() as db_session:
            from service.models import Decision

            row = await db_session.get(Decision, decision.id)

    assert answer.status_code == 200, answer.text
    assert answer.json()["decision"]["edit"]["changes"] == [{"path": "jobId", "from": "prod-1", "to": "prod-2"}]
    assert cancelled(tmp_path) == ["prod-2"], "the upstream ran the edited call, once"
    said = text_of(result)
    assert said.startswith(
        f"holdgate: approved with edits by alice (decision {decision.id}); cancel-async-job ran with changed "
        'arguments: jobId: "prod-1" → "prod-2"'
    )
    assert "prod-2" in result.content[1].text, "then the upstream's own answer, about the edited call"
    assert text_of(retry) == said, "a retry gets the stored result of the edited run; nothing runs twice"

    assert view["status"] == "approved" and view["execution"]["outcome"] in ("ok", "tool_error")
    assert view["arguments"] == {"jobId": "prod-1"}, "the call as the agent sent it"
    assert view["edit"] == {
        "by": "alice",
        "arguments": {"jobId": "prod-2"},
        "changes": [{"path": "jobId", "from": "prod-1", "to": "prod-2"}],
    }
    assert row is not None and row.edited_arguments is None, "the whole edited arguments are not kept after the run"

    sent, ran, replayed = events
    assert (sent.verdict, sent.outcome, json.loads(sent.arguments)) == ("approved", "edited", {"jobId": "prod-1"})
    assert (ran.verdict, json.loads(ran.arguments)) == ("approved", {"jobId": "prod-2"})
    assert sent.detail is not None and 'jobId: "prod-1" → "prod-2"' in sent.detail
    assert ran.detail is not None and ran.detail.startswith("holdgate: approved with edits by alice")
    assert sent.args_sha256 != ran.args_sha256, "each record's digest is of its own arguments"
    assert replayed.outcome == "replayed"


async def test_an_edit_must_land_on_this_rules_approval_or_on_allow(tmp_path: Path, database: dict[str, Any]) -> None:
    async with (
        run_gateway(
            tmp_path, policy=editable_policy(), servers=servers(tmp_path), approval_hold_s=30, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "prod-3"}))
        [decision] = await wait_for_decisions(gw)
        to_deny = await approve(gw, decision.id, {"arguments": {"jobId": "job-payroll"}})
        to_other_rule = await approve(gw, decision.id, {"arguments": {"jobId": "fin-9"}})
        missing_key = await approve(gw, decision.id, {"arguments": {"id": "prod-3"}})
        [still] = await decisions(gw)
        votes = (await api(gw, "GET", f"/api/decisions/{decision.id}", "bob")).json()["votes"]
        to_allow = await approve(gw, decision.id, {"arguments": {"jobId": "dev-3"}}, person="bob")
        result = await asyncio.wait_for(held, 10)

    assert to_deny.status_code == 422
    assert to_deny.json()["detail"] == (
        "the edited call cannot be approved here: the policy denies it (rule cancel-async-job.cases[0]: payroll is "
        "never cancelled)"
    )
    assert to_other_rule.status_code == 422
    assert (
        "it needs approval under rule cancel-async-job.cases[2], not under rule cancel-async-job.cases[1]"
        in (to_other_rule.json()["detail"])
    )
    assert missing_key.status_code == 422 and 'Key not found in map : "jobId"' in missing_key.json()["detail"]
    assert (still.status, still.edit, votes) == ("pending", None, []), "a refused edit changes nothing"
    assert to_allow.status_code == 200, to_allow.text
    assert cancelled(tmp_path) == ["dev-3"], "an edit that lands on allow runs"
    assert 'jobId: "prod-3" → "dev-3"' in text_of(result)


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ([{"jobId": "prod-2"}], "arguments must be a JSON object (the tool's whole argument object), not an array"),
        ("prod-2", "not a string"),
        (None, "not null"),
        (7, "not a number"),
        ({"jobId": "prod-\u0000x"}, "NUL character"),  # the REST edge refuses NUL anywhere in a request
        ({"jobId": "prod-2", "n": 2**64}, "outside CEL's 64-bit range"),
        ({"jobId": "prod-2", "deep": json.loads("[" * 100 + "]" * 100)}, "nested more than 64 levels deep"),
        ({"jobId": "prod-2", "pad": "x" * MAX_EDIT_BYTES}, f"at most {MAX_EDIT_BYTES:,}"),
        ({"jobId": "[redacted]"}, "'[redacted]' at jobId stands for a value you cannot see"),
    ],
)
async def test_odd_arguments_are_refused_with_a_clear_422_and_no_change(
    tmp_path: Path, arguments: Any, problem: str
) -> None:
    async with (
        run_gateway(tmp_path, policy=editable_policy(), servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
    ):
        held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "prod-4"}))
        [decision] = await wait_for_decisions(gw)
        refused = await approve(gw, decision.id, {"arguments": arguments})
        [still] = await decisions(gw)
        plain = await approve(gw, decision.id)
        await asyncio.wait_for(held, 10)

    assert refused.status_code == 422, refused.text
    assert problem in refused.json()["detail"]
    assert still.status == "pending"
    assert plain.status_code == 200
    assert cancelled(tmp_path) == ["prod-4"]


async def test_the_same_arguments_are_a_plain_approval_and_a_rule_that_is_not_editable_refuses_arguments(
    tmp_path: Path,
) -> None:
    submit = {"provider": "chatgpt", "prompt": "hello"}
    async with (
        run_gateway(tmp_path, policy=editable_policy(), servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
    ):
        same = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "prod-5"}))
        other = asyncio.create_task(session.call_tool("submit-llm-request-async", submit))
        held = {d.tool: d for d in await wait_for_decisions(gw, 2)}
        not_editable = await approve(gw, held["submit-llm-request-async"].id, {"arguments": {**submit, "prompt": "x"}})
        unchanged = await approve(gw, held["cancel-async-job"].id, {"arguments": {"jobId": "prod-5"}})
        result = await asyncio.wait_for(same, 10)
        other.cancel()

    assert not_editable.status_code == 422
    assert "rule (submit-llm-request-async) is not editable" in not_editable.json()["detail"]
    assert unchanged.status_code == 200 and unchanged.json()["decision"]["edit"] is None
    assert "holdgate" not in text_of(result), "a plain approval: the upstream's answer, no edit note"
    assert cancelled(tmp_path) == ["prod-5"]


async def test_a_redacted_value_left_as_shown_keeps_the_calls_own_value(tmp_path: Path) -> None:
    """The approver never sees a secret: `[redacted]` left in place runs with the call's own value."""
    policy = editable_policy()
    policy["tools"]["submit-llm-request-async"] = {
        "action": "require_approval",
        "editable": True,
        "redact": ["prompt"],
        "approval": {"approvers": ["group:ops"]},
    }
    async with (
        run_gateway(tmp_path, policy=policy, servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
    ):
        secret = "summarise the merger memo"
        held = asyncio.create_task(
            session.call_tool("submit-llm-request-async", {"provider": "chatgpt", "prompt": secret, "temperature": 0.9})
        )
        [decision] = await wait_for_decisions(gw)
        assert decision.arguments["prompt"] == "[redacted]"
        edited = {**decision.arguments, "temperature": 0.2}
        answer = await approve(gw, decision.id, {"arguments": edited})
        await asyncio.wait_for(held, 10)
        await gw.state.audit.flush()
        stored = " ".join(e.arguments + (e.detail or "") for e in await audit_events(gw))

    assert answer.status_code == 200, answer.text
    assert answer.json()["decision"]["edit"]["changes"] == [{"path": "temperature", "from": 0.9, "to": 0.2}]
    [run] = executed_calls(tmp_path)
    assert run["arguments"] == {"provider": "chatgpt", "prompt": secret, "temperature": 0.2}
    assert secret not in stored, "redaction still applies to both argument sets"


async def test_the_cli_approves_with_arguments(tmp_path: Path, holdgate) -> None:
    async with (
        run_gateway(
            tmp_path,
            policy=editable_policy(),
            servers=servers(tmp_path),
            approval_hold_s=30,
            approval_poll_interval_s=0.05,
        ) as gw,
        gw.session("jobs") as session,
    ):
        held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "prod-6"}))
        [decision] = await wait_for_decisions(gw)
        bad_json = await holdgate("approve", decision.id, "--arguments", "{jobId: prod-2}")
        denied = await holdgate("approve", decision.id, "--arguments", '{"jobId": "job-payroll"}')
        two = await holdgate("approve", decision.id, "d_other", "--arguments", '{"jobId": "prod-7"}')
        edited = await holdgate("approve", decision.id, "--arguments", '{"jobId": "prod-7"}')
        result = await asyncio.wait_for(held, 10)

    assert bad_json.exit_code == 2 and "not JSON" in bad_json.output
    assert denied.exit_code == 1
    assert "the policy denies it (rule cancel-async-job.cases[0]" in " ".join(denied.stderr.split())  # unwrapped
    assert two.exit_code == 2
    assert edited.exit_code == 0, edited.output
    assert f"{decision.id} approved by local-operator (with edits)" in edited.stdout
    assert cancelled(tmp_path) == ["prod-7"]
    assert 'jobId: "prod-6" → "prod-7"' in text_of(result)


async def test_the_dashboard_decision_page_edits_in_a_text_area(tmp_path: Path) -> None:
    async with (
        run_gateway(tmp_path, policy=editable_policy(), servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
        browser(gw) as client,
    ):
        held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "prod-8"}))
        other = asyncio.create_task(
            session.call_tool("submit-llm-request-async", {"provider": "chatgpt", "prompt": "hi"})
        )
        by_tool = {d.tool: d for d in await wait_for_decisions(gw, 2)}
        decision = by_tool["cancel-async-job"]
        csrf = await sign_in(client, "alice")
        page = await client.get(f"/decisions/{decision.id}")
        plain_page = await client.get(f"/decisions/{by_tool['submit-llm-request-async'].id}")
        url = f"/decisions/{decision.id}/approve"
        form = {"csrf": csrf, "next": f"/decisions/{decision.id}"}
        not_json = await client.post(url, data={**form, "arguments": "{jobId"}, headers={"accept": "application/json"})
        denied = await client.post(url, data={**form, "arguments": '{"jobId": "job-payroll"}'})
        edited = await client.post(url, data={**form, "arguments": '{\n  "jobId": "prod-9"\n}'})
        result = await asyncio.wait_for(held, 10)
        after = await client.get(f"/decisions/{decision.id}")
        other.cancel()

    assert 'data-testid="edit-arguments"' in page.text and "prod-8" in page.text
    assert 'data-testid="edit-arguments"' not in plain_page.text, "only an editable decision offers the text area"
    assert not_json.status_code == 422 and "the arguments are not JSON" in not_json.json()["message"]
    assert denied.status_code == 303 and "the+policy+denies+it" in denied.headers["location"]
    assert edited.status_code == 303, edited.text
    assert cancelled(tmp_path) == ["prod-9"]
    assert 'jobId: "prod-8" → "prod-9"' in text_of(result)
    assert 'data-testid="edit"><strong>Approved with edits</strong> by alice' in after.text
    assert "&#34;prod-8&#34; → &#34;prod-9&#34;" in after.text or '"prod-8" → "prod-9"' in after.text


async def test_an_edit_that_raises_an_amount_is_charged_the_increase_at_release(tmp_path: Path) -> None:
    policy = editable_policy()
    policy["tools"]["submit-llm-request-async"] = {
        "action": "require_approval",
        "editable": True,
        "approval": {"approvers": ["group:ops"]},
        "limits": [{"counter": "heat", "window": "hour", "max": 2.0, "amount": "args.temperature"}],
    }

    def submit(temperature: float) -> dict[str, Any]:
        return {"provider": "chatgpt", "prompt": f"at {temperature}", "temperature": temperature}

    async with (
        run_gateway(tmp_path, policy=policy, servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
    ):
        first = asyncio.create_task(session.call_tool("submit-llm-request-async", submit(0.5)))  # 0.5 counted
        [a] = await wait_for_decisions(gw)
        second = asyncio.create_task(session.call_tool("submit-llm-request-async", submit(1.0)))  # 1.5 counted
        await wait_for_decisions(gw, 2)
        too_hot = await approve(gw, a.id, {"arguments": submit(1.2) | {"prompt": "at 0.5"}})  # +0.7: 2.2 > 2.0
        refused = await asyncio.wait_for(first, 10)
        view = (await api(gw, "GET", f"/api/decisions/{a.id}", "bob")).json()
        second.cancel()

    assert too_hot.status_code == 200, "the approval is given; the limit is charged when the call runs"
    assert refused.is_error
    assert f"was approved with edits (decision {a.id}), but the edited call has no room in limit 'heat'" in (
        text_of(refused)
    )
    assert "retry_after=" in text_of(refused)
    assert executed_calls(tmp_path) == [], "not run"
    assert view["status"] == "approved" and view["released"] is False and view["execution"] is None
    assert view["state"].startswith("approved; waiting for the agent to call again"), "the approval stays"
