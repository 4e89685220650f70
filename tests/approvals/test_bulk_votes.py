"""Bulk votes: many held calls approved or denied at once, by id or by filter, under the single vote's rules."""

from __future__ import annotations

import asyncio
from collections import Counter

from service.approvals.schemas import MAX_BULK
from tests.approvals.support import api, approval_policy, decisions, wait_for_decisions
from tests.support.harness import executed_calls, run_gateway, servers, text_of


def cancelled_jobs(tmp_path) -> list[str]:
    return [c["arguments"]["jobId"] for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


def hold(session, jobs: list[str]) -> dict[str, asyncio.Task]:
    """Start one held cancel-async-job call per job id."""
    return {job: asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": job})) for job in jobs}


async def votes_of(gw, decision_id: str) -> list[tuple[str, str, str]]:
    """(approver, value, via) of each vote on the decision, oldest first."""
    _, votes = await gw.state.approvals.service.get(decision_id)
    return [(v.approver, v.value, v.via) for v in votes]


def by_id(response) -> dict[str, dict]:
    return {item["id"]: item for item in response.json()["results"]}


async def test_bulk_approve_releases_each_held_call_exactly_once(tmp_path, database):
    jobs = [f"bulk-{i}" for i in range(12)]
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=30, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        calls = hold(session, jobs)
        held = await wait_for_decisions(gw, len(jobs))
        ids = [d.id for d in held]
        approved = await api(gw, "POST", "/api/decisions/approve", "alice", json={"ids": ids, "reason": "batch"})
        results = {job: await asyncio.wait_for(call, 20) for job, call in calls.items()}
        again = await api(gw, "POST", "/api/decisions/approve", "bob", json={"ids": ids})
        views = {d.id: d for d in await decisions(gw)}
        votes = [await votes_of(gw, decision_id) for decision_id in ids]

    assert approved.status_code == 200, approved.text
    body = approved.json()
    assert (body["matched"], body["decided"], body["recorded"], body["refused"]) == (len(ids), len(ids), 0, 0)
    assert [item["id"] for item in body["results"]] == ids, "one result per id, in the order asked"
    assert {(item["result"], item["status"]) for item in body["results"]} == {("decided", "approved")}
    assert all("holdgate" not in text_of(result) for result in results.values()), "each client gets the upstream's"
    assert Counter(cancelled_jobs(tmp_path)) == Counter(jobs), "each approved call ran upstream exactly once"
    assert again.json()["refused"] == len(ids)
    assert {(i["code"], i["message"]) for i in again.json()["results"]} == {(409, "already decided: approved by alice")}
    for view in views.values():
        assert (view.status, view.decided_by, view.reason, view.released) == ("approved", "alice", "batch", True)
    assert votes == [[("alice", "approve", "api")]] * len(ids)


async def test_bulk_deny_returns_the_reason_to_every_agent(tmp_path):
    jobs = [f"deny-{i}" for i in range(5)]
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
    ):
        calls = hold(session, jobs)
        ids = [d.id for d in await wait_for_decisions(gw, len(jobs))]
        no_reason = await api(gw, "POST", "/api/decisions/deny", "bob", json={"ids": ids})
        blank = await api(gw, "POST", "/api/decisions/deny", "bob", json={"ids": ids, "reason": "  "})
        still = {d.status for d in await decisions(gw)}
        denied = await api(gw, "POST", "/api/decisions/deny", "bob", json={"ids": ids, "reason": "maintenance window"})
        results = [await asyncio.wait_for(call, 20) for call in calls.values()]

    assert no_reason.status_code == 422 and blank.status_code == 422
    assert still == {"pending"}, "a refused deny changes nothing"
    assert denied.status_code == 200 and denied.json()["decided"] == len(ids)
    for result in results:
        assert result.is_error
        assert "denied by bob" in text_of(result) and "maintenance window" in text_of(result)
    assert cancelled_jobs(tmp_path) == []


async def test_a_mixed_batch_answers_each_decision_as_a_single_vote_would_and_changes_nothing_else(tmp_path, database):
    policy = approval_policy()
    policy["tools"]["get-async-job-result"] = {
        "action": "require_approval",
        "approval": {"approvers": ["carol"], "channels": ["console"], "timeout": "15m"},
    }
    async with (
        run_gateway(
            tmp_path,
            policy=policy,
            servers=servers(tmp_path),
            grants=["agent", "bob"],
            approval_hold_s=30,
            **database,
        ) as gw,
        gw.session("jobs") as session,
        gw.session("jobs", grant="bob") as bobs_session,
    ):
        calls = hold(session, ["open", "done"])
        calls["own"] = asyncio.create_task(bobs_session.call_tool("cancel-async-job", {"jobId": "own"}))
        calls["other"] = asyncio.create_task(session.call_tool("get-async-job-result", {"jobId": "other"}))
        held = {d.arguments["jobId"]: d.id for d in await wait_for_decisions(gw, 4)}
        denied = await api(gw, "POST", f"/api/decisions/{held['done']}/deny", "alice", json={"reason": "earlier"})
        asked = [held["open"], held["done"], held["own"], held["other"], "d_nope", held["open"]]
        bulk = await api(gw, "POST", "/api/decisions/approve", "bob", json={"ids": asked})
        await asyncio.wait_for(asyncio.gather(calls["open"], calls["done"]), 20)
        after = {d.id: d for d in await decisions(gw)}
        votes = {job: await votes_of(gw, held[job]) for job in ("own", "other", "done")}
        for job in ("own", "other"):
            calls[job].cancel()

    assert denied.status_code == 200
    assert bulk.status_code == 200, bulk.text
    body = bulk.json()
    assert (body["matched"], body["decided"], body["refused"]) == (5, 1, 4), "a repeated id counts once"
    results = by_id(bulk)
    assert results[held["open"]]["result"] == "decided"
    assert results[held["done"]] == {
        "id": held["done"],
        "result": "refused",
        "status": "denied",
        "code": 409,
        "message": "already decided: denied by alice",
    }
    assert results[held["own"]]["code"] == 403 and "cannot approve" in results[held["own"]]["message"]
    assert results[held["other"]]["code"] == 403 and "not an approver" in results[held["other"]]["message"]
    assert results["d_nope"] == {
        "id": "d_nope",
        "result": "refused",
        "status": None,
        "code": 404,
        "message": "no decision d_nope",
    }
    assert (after[held["own"]].status, after[held["other"]].status) == ("pending", "pending")
    assert votes == {"own": [], "other": [], "done": [("alice", "deny", "api")]}, "refused votes are not recorded"
    assert cancelled_jobs(tmp_path) == ["open"]


async def test_quorum_of_two_by_two_peoples_bulk_votes(tmp_path, database):
    jobs = [f"q-{i}" for i in range(4)]
    async with (
        run_gateway(
            tmp_path, policy=approval_policy(quorum=2), servers=servers(tmp_path), approval_hold_s=30, **database
        ) as gw,
        gw.session("jobs") as session,
    ):
        calls = hold(session, jobs)
        ids = [d.id for d in await wait_for_decisions(gw, len(jobs))]
        first = await api(gw, "POST", "/api/decisions/approve", "alice", json={"ids": ids})
        twice = await api(gw, "POST", "/api/decisions/approve", "alice", json={"ids": ids[:2]})
        await asyncio.sleep(0.1)
        assert not any(call.done() for call in calls.values()) and cancelled_jobs(tmp_path) == [], (
            "one approval of two releases nothing"
        )
        second = await api(gw, "POST", "/api/decisions/approve", "bob", json={"ids": ids})
        await asyncio.wait_for(asyncio.gather(*calls.values()), 20)

    assert first.json()["recorded"] == len(ids) and first.json()["decided"] == 0
    assert {(i["result"], i["status"], i["message"]) for i in first.json()["results"]} == {
        ("recorded", "pending", "approval by alice recorded; 1 more needed")
    }
    assert {(i["code"], i["message"].split(" on ")[0]) for i in twice.json()["results"]} == {
        (409, "alice has already voted")
    }
    assert second.json()["decided"] == len(ids)
    assert {i["message"].split(" approved by ")[1] for i in second.json()["results"]} == {"alice, bob"}
    assert Counter(cancelled_jobs(tmp_path)) == Counter(jobs)


async def test_a_filter_votes_only_on_matching_pending_decisions(tmp_path):
    async with (
        run_gateway(
            tmp_path,
            policy=approval_policy(),
            servers=servers(tmp_path),
            grants=["agent", "other"],
            approval_hold_s=30,
        ) as gw,
        gw.session("jobs") as session,
        gw.session("jobs", grant="other") as others,
    ):
        mine = hold(session, ["mine-1", "mine-2"])
        theirs = {job: asyncio.create_task(others.call_tool("cancel-async-job", {"jobId": job})) for job in ["t-1"]}
        held = {d.arguments["jobId"]: d.id for d in await wait_for_decisions(gw, 3)}
        nothing = await api(gw, "POST", "/api/decisions/approve", "alice", json={"tool": "no-such-tool"})
        wrong_server = await api(
            gw, "POST", "/api/decisions/approve", "alice", json={"server": "time", "grant": "other"}
        )
        filtered = await api(
            gw,
            "POST",
            "/api/decisions/approve",
            "alice",
            json={"status": "pending", "grant": "other", "tool": "cancel-async-job"},
        )
        await asyncio.wait_for(theirs["t-1"], 20)
        again = await api(gw, "POST", "/api/decisions/approve", "alice", json={"grant": "other"})
        statuses = {d.arguments["jobId"]: d.status for d in await decisions(gw)}
        for call in mine.values():
            call.cancel()

    assert nothing.status_code == 200 and nothing.json()["matched"] == 0
    assert wrong_server.json()["matched"] == 0
    assert filtered.status_code == 200, filtered.text
    assert [(i["id"], i["result"]) for i in filtered.json()["results"]] == [(held["t-1"], "decided")]
    assert again.json()["matched"] == 0, "a filter matches pending decisions only"
    assert statuses == {"mine-1": "pending", "mine-2": "pending", "t-1": "approved"}
    assert cancelled_jobs(tmp_path) == ["t-1"]


async def test_a_bulk_vote_must_name_its_decisions(tmp_path):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "keep"}))
        [decision] = await wait_for_decisions(gw)
        path = "/api/decisions/approve"
        refused = {
            "empty": await api(gw, "POST", path, "alice", json={}),
            "no body": await api(gw, "POST", path, "alice"),
            "no ids": await api(gw, "POST", path, "alice", json={"ids": []}),
            "status only": await api(gw, "POST", path, "alice", json={"status": "pending"}),
            "other status": await api(gw, "POST", path, "alice", json={"status": "approved", "tool": "x"}),
            "ids and filter": await api(gw, "POST", path, "alice", json={"ids": [decision.id], "tool": "x"}),
            "unknown key": await api(gw, "POST", path, "alice", json={"id": decision.id}),
            "too many": await api(gw, "POST", path, "alice", json={"ids": [decision.id] * (MAX_BULK + 1)}),
        }
        anonymous = await api(gw, "POST", path, json={"ids": [decision.id]})
        grant_token = await api(gw, "POST", path, gw.tokens["agent"], json={"ids": [decision.id]})
        [still] = await decisions(gw)
        still_votes = await votes_of(gw, still.id)
        schema = (await api(gw, "GET", "/openapi.json")).json()
        everything = await api(gw, "POST", path, "alice", json={"all_pending": True})
        await asyncio.wait_for(call, 20)

    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(refused, 422)
    assert anonymous.status_code == 401 and grant_token.status_code == 401
    assert still.status == "pending" and still_votes == []
    assert "/api/decisions/approve" in schema["paths"] and "/api/decisions/deny" in schema["paths"]
    assert everything.json()["decided"] == 1, "everything pending only when written out"
    assert cancelled_jobs(tmp_path) == ["keep"]


async def test_the_cli_approves_several_ids_and_denies_all_pending_by_filter(tmp_path, holdgate):
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path), approval_poll_interval_s=0.05) as gw,
        gw.session("jobs") as session,
    ):
        calls = hold(session, ["yes-1", "yes-2", "no-1", "no-2"])
        held = {d.arguments["jobId"]: d.id for d in await wait_for_decisions(gw, 4)}
        neither = await holdgate("approve")
        both = await holdgate("approve", held["yes-1"], "--all-pending")
        filter_alone = await holdgate("approve", held["yes-1"], "--tool", "cancel-async-job")
        approved = await holdgate("approve", held["yes-1"], held["yes-2"])
        no_reason = await holdgate("deny", "--all-pending")
        denied = await holdgate("deny", "--all-pending", "--tool", "cancel-async-job", "--reason", "frozen")
        mixed = await holdgate("approve", held["yes-1"], "d_unknown")
        results = {job: await asyncio.wait_for(call, 10) for job, call in calls.items()}

    assert neither.exit_code == 2 and both.exit_code == 2 and filter_alone.exit_code == 2
    assert approved.exit_code == 0, approved.output
    assert "2 decision(s): 2 approved" in approved.stdout
    assert no_reason.exit_code == 2
    assert denied.exit_code == 0 and "2 decision(s): 2 denied" in denied.stdout
    assert mixed.exit_code == 1
    assert "2 refused" in mixed.stdout
    assert "already decided: approved by local-operator" in mixed.stderr and "no decision d_unknown" in mixed.stderr
    assert "holdgate" not in text_of(results["yes-1"]) and "holdgate" not in text_of(results["yes-2"])
    assert all("frozen" in text_of(results[job]) for job in ("no-1", "no-2"))
    assert sorted(cancelled_jobs(tmp_path)) == ["yes-1", "yes-2"]
