"""Standing approvals end to end: a real MCP client through holdgate to the demo jobs server, people deciding
through the REST API and the CLI, on SQLite and PostgreSQL, with an injected clock for the lapses.

Each scope covers exactly what it should: `same_args` the same grant's identical calls (not other arguments,
not another grant), `tool` every call of the tool on that server by that grant (not another tool, not another
server); both lapse on time; revoking stops the next call; a quorum of two gives one only when both ask for it;
asking for more than the rule allows is refused with nothing changed; and a covered call still obeys limits and
cases that deny.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from service.approvals import StandingQuery
from tests.approvals.support import api, approval_policy, decisions, wait_for_decisions
from tests.support.harness import (
    Clock,
    Gateway,
    audit_events,
    jobs_server,
    run_gateway,
    text_of,
)

SCOPES = {"same_args": "1h", "tool": "30m"}


def standing_policy(**approval: Any) -> dict[str, Any]:
    """cancel-async-job and get-async-job-result need ops' approval and allow standing approvals (SCOPES)."""
    policy = approval_policy(scopes=SCOPES, **approval)
    policy["tools"]["get-async-job-result"] = json.loads(json.dumps(policy["tools"]["cancel-async-job"]))
    return policy


def two_servers(tmp_path) -> dict[str, Any]:
    """The jobs server twice, as `jobs` and `jobs2`, each logging what it runs."""
    return {
        "jobs": jobs_server(tmp_path / "jobs", tmp_path / "calls.jsonl"),
        "jobs2": jobs_server(tmp_path / "jobs2", tmp_path / "calls2.jsonl"),
    }


def ran(tmp_path, log: str = "calls.jsonl") -> list[tuple[str, dict]]:
    path = tmp_path / log
    lines = path.read_text().splitlines() if path.exists() else []
    return [(c["tool"], c["arguments"]) for c in map(json.loads, lines)]


async def approve_held(
    gw: Gateway, session, tool: str, args: dict, body: dict | None = None, person: str = "alice"
) -> tuple[Any, dict]:
    """Make the call, approve its decision as `person` with `body`, and return (the call's result, the answer)."""
    before = {d.id for d in await decisions(gw)}
    call = asyncio.create_task(session.call_tool(tool, args))
    decision = await _new_pending(gw, before)
    response = await api(gw, "POST", f"/api/decisions/{decision}/approve", person, json=body or {})
    assert response.status_code == 200, response.text
    return await asyncio.wait_for(call, 10), response.json()


async def _new_pending(gw: Gateway, before: set[str]) -> str:
    for _ in range(500):
        found = [d.id for d in await decisions(gw, status="pending") if d.id not in before]
        if found:
            return found[0]
        await asyncio.sleep(0.02)
    raise AssertionError("the call was not held")


async def assert_held(gw: Gateway, session, tool: str, args: dict) -> None:
    """The call is held (a new pending decision opens for it): not covered. Denied again to end it."""
    before = {d.id for d in await decisions(gw)}
    call = asyncio.create_task(session.call_tool(tool, args))
    decision = await _new_pending(gw, before)
    denied = await api(gw, "POST", f"/api/decisions/{decision}/deny", "bob", json={"reason": "not covered"})
    assert denied.status_code == 200, denied.text
    result = await asyncio.wait_for(call, 10)
    assert result.is_error and "not covered" in text_of(result)


async def assert_covered(gw: Gateway, session, tool: str, args: dict) -> None:
    """The call runs at once, with no decision opened for it."""
    before = len(await decisions(gw))
    result = await asyncio.wait_for(session.call_tool(tool, args), 10)
    assert "holdgate" not in text_of(result), "the upstream's own answer (the demo's jobs do not exist: a tool error)"
    assert len(await decisions(gw)) == before, "a covered call opens no decision"


async def test_same_args_covers_the_same_grants_identical_calls_only_and_lapses(tmp_path, database):
    clock = Clock(time.time())
    async with run_gateway(
        tmp_path,
        policy=standing_policy(),
        servers=two_servers(tmp_path),
        grants=["agent", "agent2"],
        clock=clock,
        approval_hold_s=30,
        approval_sweep_interval_s=0.2,
        **database,
    ) as gw:
        async with gw.session("jobs") as session, gw.session("jobs", grant="agent2") as other_grant:
            result, answer = await approve_held(
                gw, session, "cancel-async-job", {"jobId": "j-1"}, {"scope": "same_args", "for": "1h"}
            )
            assert "holdgate" not in text_of(result)
            standing_id = answer["decision"]["standing_id"]
            assert standing_id and standing_id.startswith("s_")
            assert f"standing approval {standing_id}" in answer["message"]

            await assert_covered(gw, session, "cancel-async-job", {"jobId": "j-1"})
            await assert_covered(gw, session, "cancel-async-job", {"jobId": "j-1"})
            await assert_held(gw, session, "cancel-async-job", {"jobId": "j-2"})  # other arguments
            await assert_held(gw, other_grant, "cancel-async-job", {"jobId": "j-1"})  # another grant

            clock.now += 3600 - 1
            await assert_covered(gw, session, "cancel-async-job", {"jobId": "j-1"})
            clock.now += 1
            await assert_held(gw, session, "cancel-async-job", {"jobId": "j-1"})  # lapsed, on the clock

        for _ in range(200):  # the sweep audits the expiry
            await gw.state.audit.flush()
            events = await audit_events(gw)
            if any(e.verdict == "standing_expired" for e in events):
                break
            await asyncio.sleep(0.05)

    assert ran(tmp_path).count(("cancel-async-job", {"jobId": "j-1"})) == 4  # approved once, then 3 covered
    covered = [e for e in events if e.standing_id == standing_id and e.verdict == "approved"]
    assert len(covered) == 3 and all(e.outcome in {"ok", "tool_error"} for e in covered)
    assert all(standing_id in (e.reason or "") for e in covered)
    lifecycle = [e.verdict for e in events if e.standing_id == standing_id and e.verdict.startswith("standing_")]
    assert lifecycle == ["standing_approved", "standing_expired"]


async def test_tool_scope_covers_the_tool_on_that_server_only_and_lapses(tmp_path, database):
    clock = Clock(time.time())
    async with (
        run_gateway(
            tmp_path,
            policy=standing_policy(),
            servers=two_servers(tmp_path),
            clock=clock,
            approval_hold_s=30,
            **database,
        ) as gw,
        gw.session("jobs") as session,
        gw.session("jobs2") as other_server,
    ):
        await approve_held(gw, session, "cancel-async-job", {"jobId": "t-1"}, {"scope": "tool", "for": "30m"})
        await assert_covered(gw, session, "cancel-async-job", {"jobId": "t-2"})
        await assert_covered(gw, session, "cancel-async-job", {"jobId": "t-3"})
        await assert_held(gw, session, "get-async-job-result", {"jobId": "t-2"})  # another tool
        await assert_held(gw, other_server, "cancel-async-job", {"jobId": "t-2"})  # another server
        clock.now += 30 * 60
        await assert_held(gw, session, "cancel-async-job", {"jobId": "t-4"})

    assert [args["jobId"] for tool, args in ran(tmp_path) if tool == "cancel-async-job"] == ["t-1", "t-2", "t-3"]
    assert ran(tmp_path, "calls2.jsonl") == []


async def test_revoking_stops_the_next_call_and_is_audited(tmp_path, database, holdgate):
    async with (
        run_gateway(
            tmp_path, policy=standing_policy(), servers=two_servers(tmp_path), approval_hold_s=30, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        _, answer = await approve_held(
            gw, session, "cancel-async-job", {"jobId": "r-1"}, {"scope": "tool", "for": "30m"}
        )
        standing_id = answer["decision"]["standing_id"]
        await assert_covered(gw, session, "cancel-async-job", {"jobId": "r-2"})

        listed = await api(gw, "GET", "/api/standing", "bob")
        assert [s["id"] for s in listed.json()["items"]] == [standing_id]
        item = listed.json()["items"][0]
        assert (item["scope"], item["grant"], item["tool"], item["approved_by"]) == (
            "tool",
            "agent",
            "cancel-async-job",
            "alice",
        )
        unauthenticated = await api(gw, "POST", f"/api/standing/{standing_id}/revoke")
        revoked = await api(gw, "POST", f"/api/standing/{standing_id}/revoke", "bob", json={"reason": "done"})
        again = await api(gw, "POST", f"/api/standing/{standing_id}/revoke", "bob")
        unknown = await api(gw, "POST", "/api/standing/s_nope/revoke", "bob")

        await assert_held(gw, session, "cancel-async-job", {"jobId": "r-3"})
        active = await api(gw, "GET", "/api/standing", "bob")
        everything = await api(gw, "GET", "/api/standing?all=true", "bob")
        await gw.state.audit.flush()
        events = await audit_events(gw)

    assert unauthenticated.status_code == 401
    assert revoked.status_code == 200 and revoked.json()["revoked_by"] == "bob" and not revoked.json()["active"]
    assert again.status_code == 409 and "already ended" in again.json()["detail"]
    assert unknown.status_code == 404
    assert active.json()["items"] == []
    assert everything.json()["items"][0]["state"].startswith("revoked by bob")
    [revoke_event] = [e for e in events if e.verdict == "standing_revoked"]
    assert revoke_event.standing_id == standing_id and "revoked by bob via api: done" in (revoke_event.reason or "")


async def test_cli_gives_lists_and_revokes_and_the_restarted_gateway_keeps_it(tmp_path, database, holdgate):
    """`holdgate approve ID --scope --for`, `holdgate standing list/revoke`; a restart keeps the standing one."""
    if database:
        pytest.skip("the CLI reads the configured database; PostgreSQL runs are covered through the REST API")
    async with (
        run_gateway(tmp_path, policy=standing_policy(), servers=two_servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "c-1"}))
        [decision] = await wait_for_decisions(gw)
        too_long = await holdgate("approve", decision.id, "--scope", "tool", "--for", "2h")
        no_such_scope = await holdgate("approve", decision.id, "--scope", "forever", "--for", "1m")
        for_alone = await holdgate("approve", decision.id, "--for", "1m")
        assert (await decisions(gw))[0].status == "pending" and (await gw.state.approvals.service.get(decision.id))[
            1
        ] == [], "a refused standing approval records nothing"
        given = await holdgate("approve", decision.id, "--scope", "same_args", "--for", "45m")
        await asyncio.wait_for(call, 10)
        tokens = gw.tokens
    assert too_long.exit_code == 1 and "may last at most 30m" in " ".join(too_long.output.split()), too_long.output
    assert no_such_scope.exit_code == 2 and "unknown scope 'forever'" in no_such_scope.output
    assert for_alone.exit_code == 2 and "--for goes with --scope" in for_alone.output
    assert given.exit_code == 0 and "standing approval s_" in " ".join(given.output.split()), given.output

    # Restarted 11 minutes later: past the rule's claim_within, so the same call again is not a retry of the
    # approved one (which would get that run's result back) but a new call, covered or held.
    later = Clock(time.time() + 11 * 60)
    async with (
        run_gateway(tmp_path, policy=None, servers={}, grants=[], tokens=tokens, clock=later, approval_hold_s=30) as gw,
        gw.session("jobs") as session,
    ):
        await assert_covered(gw, session, "cancel-async-job", {"jobId": "c-1"})  # after a restart
        listed = await holdgate("standing", "list", "--json")
        [item] = json.loads(listed.stdout)["items"]
        table = await holdgate("standing", "list")
        revoked = await holdgate("standing", "revoke", item["id"], "--reason", "task done")
        twice = await holdgate("standing", "revoke", item["id"])
        await assert_held(gw, session, "cancel-async-job", {"jobId": "c-1"})

    assert (
        item["scope"] == "same_args"
        and item["arguments"] == {"jobId": "c-1"}
        and item["approved_by"] == ("local-operator")
    )
    assert item["id"] in table.stdout
    assert revoked.exit_code == 0, revoked.output
    assert twice.exit_code == 1 and "already ended" in twice.output


async def test_quorum_of_two_gives_a_standing_approval_only_when_both_ask(tmp_path, database):
    async with (
        run_gateway(
            tmp_path, policy=standing_policy(quorum=2), servers=two_servers(tmp_path), approval_hold_s=30, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        # Both ask: the narrowest scope and the shortest time any of them asked.
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "q-1"}))
        [decision] = await wait_for_decisions(gw)
        first = await api(
            gw, "POST", f"/api/decisions/{decision.id}/approve", "alice", json={"scope": "tool", "for": "30m"}
        )
        assert first.json()["decided"] is False and "asking for a standing approval" in first.json()["message"]
        assert await gw.state.approvals.service.standing_list(StandingQuery()) == []
        second = await api(
            gw, "POST", f"/api/decisions/{decision.id}/approve", "bob", json={"scope": "same_args", "for": "10m"}
        )
        await asyncio.wait_for(call, 10)
        [standing] = await gw.state.approvals.service.standing_list(StandingQuery())
        assert (standing.scope, standing.expires_at - standing.created_at) == ("same_args", 600)
        assert standing.approved_by == "alice, bob"
        await assert_covered(gw, session, "cancel-async-job", {"jobId": "q-1"})
        await assert_held(gw, session, "cancel-async-job", {"jobId": "q-2"})  # same_args, not tool

        # One approves once: the call runs once, and nothing stands.
        call = asyncio.create_task(session.call_tool("get-async-job-result", {"jobId": "q-3"}))
        [mixed] = [d for d in await wait_for_decisions(gw) if d.tool == "get-async-job-result"]
        await api(gw, "POST", f"/api/decisions/{mixed.id}/approve", "alice", json={"scope": "tool", "for": "30m"})
        once = await api(gw, "POST", f"/api/decisions/{mixed.id}/approve", "bob")
        await asyncio.wait_for(call, 10)
        await assert_held(gw, session, "get-async-job-result", {"jobId": "q-4"})  # alice asked for tool: none stands

    assert second.json()["decided"] is True and second.json()["decision"]["standing_id"] == standing.id
    assert once.json()["decided"] is True and once.json()["decision"]["standing_id"] is None
    assert "approved once: not every approving vote asked" in once.json()["message"]


async def test_asking_more_than_the_rule_allows_is_refused_with_nothing_changed(tmp_path, database):
    policy = standing_policy()
    policy["tools"]["get-async-job-result"]["approval"].pop("scopes")  # one-off approvals only
    async with (
        run_gateway(tmp_path, policy=policy, servers=two_servers(tmp_path), approval_hold_s=30, **database) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "x-1"}))
        one_off = asyncio.create_task(session.call_tool("get-async-job-result", {"jobId": "x-1"}))
        held = {d.tool: d.id for d in await wait_for_decisions(gw, 2)}
        decision = held["cancel-async-job"]
        path = f"/api/decisions/{decision}/approve"
        refusals = {
            "too long": await api(gw, "POST", path, "alice", json={"scope": "tool", "for": "31m"}),
            "unknown scope": await api(gw, "POST", path, "alice", json={"scope": "forever", "for": "1m"}),
            "no duration": await api(gw, "POST", path, "alice", json={"scope": "tool"}),
            "zero": await api(gw, "POST", path, "alice", json={"scope": "tool", "for": "0s"}),
            "huge": await api(
                gw,
                "POST",
                path,
                "alice",
                content=b'{"scope": "tool", "for": 1e400}',
                headers={"Content-Type": "application/json"},
            ),
            "nul": await api(gw, "POST", path, "alice", json={"scope": "tool\u0000", "for": "1m"}),
            "for alone": await api(gw, "POST", path, "alice", json={"for": "1m"}),
            "standing deny": await api(
                gw,
                "POST",
                f"/api/decisions/{decision}/deny",
                "alice",
                json={"reason": "x", "scope": "tool", "for": "1m"},
            ),
            "rule allows none": await api(
                gw,
                "POST",
                f"/api/decisions/{held['get-async-job-result']}/approve",
                "alice",
                json={"scope": "same_args", "for": "1m"},
            ),
        }
        view = (await api(gw, "GET", f"/api/decisions/{decision}", "alice")).json()
        ok = await api(gw, "POST", path, "alice", json={"scope": "tool", "for": "30m"})
        await asyncio.wait_for(call, 10)
        await api(gw, "POST", f"/api/decisions/{held['get-async-job-result']}/approve", "alice")
        await asyncio.wait_for(one_off, 10)

    for what, response in refusals.items():
        assert response.status_code == 422, (what, response.status_code, response.text)
    assert "may last at most 30m" in refusals["too long"].json()["detail"]
    assert "unknown scope 'forever'" in refusals["unknown scope"].json()["detail"]
    assert "allows one-off approvals only" in refusals["rule allows none"].json()["detail"]
    assert view["status"] == "pending" and view["votes"] == [], "nothing was recorded"
    assert view["scopes"] == {"same_args": 3600.0, "tool": 1800.0}
    assert ok.status_code == 200 and ok.json()["decided"] is True


async def test_a_covered_call_still_obeys_limits_and_cases_that_deny(tmp_path, database):
    policy = standing_policy()
    rule = policy["tools"]["cancel-async-job"]
    rule["limits"] = [{"counter": "cancels", "window": "hour", "max": 3, "scope": "grant"}]
    rule["cases"] = [{"when": "args.jobId.startsWith('prod-')", "action": "deny", "reason": "never production"}]
    async with (
        run_gateway(tmp_path, policy=policy, servers=two_servers(tmp_path), approval_hold_s=30, **database) as gw,
        gw.session("jobs") as session,
    ):
        await approve_held(gw, session, "cancel-async-job", {"jobId": "l-1"}, {"scope": "tool", "for": "30m"})
        denied = await session.call_tool("cancel-async-job", {"jobId": "prod-1"})
        await assert_covered(gw, session, "cancel-async-job", {"jobId": "l-2"})
        await assert_covered(gw, session, "cancel-async-job", {"jobId": "l-3"})
        limited = await session.call_tool("cancel-async-job", {"jobId": "l-4"})

    assert denied.is_error and "never production" in text_of(denied)
    assert limited.is_error and "rate limit" in text_of(limited)
    assert [args["jobId"] for _, args in ran(tmp_path)] == ["l-1", "l-2", "l-3"]


async def test_the_approved_call_called_again_collects_its_decision_then_the_standing_approval_covers(tmp_path):
    """No progress token, a short hold: the agent is told "approval pending" and calls again once approved. That
    call collects the decision (which records its run) rather than running beside it under the standing approval."""
    async with (
        run_gateway(tmp_path, policy=standing_policy(), servers=two_servers(tmp_path), approval_hold_s=0.3) as gw,
        gw.session("jobs") as session,
    ):
        pending = await session.call_tool("cancel-async-job", {"jobId": "p-1"})
        assert "approval pending" in text_of(pending)
        [decision] = await decisions(gw)
        given = await api(
            gw, "POST", f"/api/decisions/{decision.id}/approve", "alice", json={"scope": "same_args", "for": "1h"}
        )
        collected = await asyncio.wait_for(session.call_tool("cancel-async-job", {"jobId": "p-1"}), 10)
        view = (await api(gw, "GET", f"/api/decisions/{decision.id}", "alice")).json()
        await assert_covered(gw, session, "cancel-async-job", {"jobId": "p-1"})  # later: the standing approval
        await gw.state.audit.flush()
        events = await audit_events(gw)

    assert given.json()["decision"]["standing_id"]
    assert "holdgate" not in text_of(collected)
    assert view["released"] is True and view["execution"] is not None, "the decision recorded its own run"
    assert [e.decision_id is not None for e in events if e.verdict == "approved"] == [True, False]
    assert ran(tmp_path).count(("cancel-async-job", {"jobId": "p-1"})) == 2
