"""The client approval channel on 2025-11-25 sessions: the held call asks the person at the client over its own
stream (the SDK client's `elicitation_callback`), over real Streamable HTTP, beside the other channels."""

from __future__ import annotations

import asyncio

import mcp_types as types
from sqlalchemy import select

from service.approvals import NotAllowed
from service.models import OutboxMessage
from tests.approvals.support import api, approval_policy, wait_for_decisions
from tests.client_channel.support import (
    PUBLIC_URL,
    Person,
    approve,
    client_gateway,
    client_policy,
    deny,
    runs,
    still_pending,
)
from tests.support.harness import audit_events, run_gateway, servers, text_of


async def test_form_mode_approve_at_the_client_runs_the_call_once_as_one_vote_named_after_the_grant(tmp_path, database):
    person = Person(approve("my own job"))
    async with client_gateway(tmp_path, person, approver=True, **database) as (gw, session):
        result = await session.call_tool("cancel-async-job", {"jobId": "job-1"})
        [decision] = await wait_for_decisions(gw, status="approved")
        _, votes = await gw.state.approvals.service.get(decision.id)
        async with gw.state.sessions() as db_session:
            outbox = set((await db_session.execute(select(OutboxMessage.channel))).scalars())
    assert outbox == {"console"}  # the client is asked inside the request: nothing for it in the outbox
    assert "Job job-1 not found" in text_of(result)  # the upstream's own answer: the call ran
    assert len(runs(tmp_path)) == 1
    [form] = person.forms
    assert person.urls == []  # the rule lists the approver client: form mode, though the SDK client declares url too
    assert decision.id in form.message and "cancel-async-job" in form.message
    assert form.requested_schema["required"] == ["decision"]
    assert decision.decided_by == "client:agent" and decision.decided_via == "mcp"
    assert [(v.approver, v.value, v.via, v.reason) for v in votes] == [("client:agent", "approve", "mcp", "my own job")]


async def test_form_mode_deny_and_decline_and_cancel_are_denials_with_the_reason_audited(tmp_path):
    answers = {
        "job-deny": deny("wrong job"),
        "job-decline": types.ElicitResult(action="decline"),
        "job-cancel": types.ElicitResult(action="cancel"),
    }
    texts = {}
    async with run_gateway(tmp_path, policy=client_policy(approver=True), servers=servers(tmp_path)) as gw:
        for job, answer in answers.items():
            async with gw.session("jobs", elicitation_callback=Person(answer)) as session:
                texts[job] = text_of(await session.call_tool("cancel-async-job", {"jobId": job}))
        denied = await wait_for_decisions(gw, count=3, status="denied")
        await gw.state.audit.flush()
        audit = [e for e in await audit_events(gw) if e.tool == "cancel-async-job"]
    reasons = {d.arguments["jobId"]: d.reason for d in denied}
    assert reasons == {
        "job-deny": "denied at the client: wrong job",
        "job-decline": "the person at the client declined the approval request",
        "job-cancel": "the person at the client dismissed the approval request",
    }
    assert {d.decided_by for d in denied} == {"client:agent"} and {d.decided_via for d in denied} == {"mcp"}
    for job, text in texts.items():
        assert "denied by client:agent" in text and reasons[job] in text
    assert sorted(e.verdict for e in audit) == ["denied"] * 3
    assert all("denied by client:agent" in (e.reason or "") for e in audit)
    assert runs(tmp_path) == []


async def test_url_mode_points_at_the_signed_in_decision_page_and_accept_does_not_approve(tmp_path, database):
    person = Person(types.ElicitResult(action="accept"))  # consents to open the page: not a vote
    async with client_gateway(tmp_path, person, approver=False, public_url=PUBLIC_URL, **database) as (gw, session):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-1"}))
        decision = await still_pending(gw, person)  # the accept came back; it must not have decided anything
        [asked] = person.urls
        page = await api(gw, "GET", asked.url.removeprefix(PUBLIC_URL), follow_redirects=False)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        result = await call
    assert len(person.urls) == 1
    assert asked.url == f"{PUBLIC_URL}/decisions/{decision.id}"
    assert "?" not in asked.url and "#" not in asked.url  # no token, nothing pre-authenticated
    assert decision.status == "pending"
    # Opening the link without signing in asks for sign-in first, then comes back to the decision.
    assert page.status_code == 303
    assert page.headers["location"] == f"/login?next=%2Fdecisions%2F{decision.id}"
    assert decision.id not in page.text
    assert "Job job-1 not found" in text_of(result) and len(runs(tmp_path)) == 1


async def test_no_answer_leaves_the_decision_to_the_other_channels(tmp_path):
    person = Person(error=RuntimeError("the client's window was closed"))
    async with client_gateway(tmp_path, person, approver=True) as (gw, session):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-1"}))
        decision = await still_pending(gw, person)
        await api(gw, "POST", f"/api/decisions/{decision.id}/deny", "bob", json={"reason": "not today"})
        result = await call
    assert person.forms and decision.status == "pending"
    assert result.is_error is True and "denied by bob" in text_of(result)
    assert runs(tmp_path) == []


async def test_a_rule_without_the_channel_asks_nothing_and_without_the_approver_the_client_cannot_approve(tmp_path):
    person = Person(approve())
    async with (
        run_gateway(tmp_path, policy=approval_policy(), servers=servers(tmp_path)) as gw,
        gw.session("jobs", elicitation_callback=person) as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-1"}))
        [decision] = await wait_for_decisions(gw)
        await asyncio.sleep(0.3)
        holding = gw.state.approvals.holding
        try:
            await holding.approve_by_client(decision.id, grant="agent", reason=None)
        except NotAllowed as exc:
            refusal = str(exc)
        still = await holding.load(decision.id)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        await call
    assert person.asked == []
    assert "does not list the approver 'client'" in refusal
    assert still.status == "pending"


async def test_without_the_approver_client_no_form_is_shown_even_to_a_client_that_would_approve(tmp_path):
    person = Person(approve("let me"))  # would approve anything it is shown
    async with (
        # The channel is listed, the approver is not, and there is no public URL for URL mode: nothing to ask.
        run_gateway(tmp_path, policy=client_policy(approver=False), servers=servers(tmp_path)) as gw,
        gw.session("jobs", elicitation_callback=person) as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-1"}))
        [decision] = await wait_for_decisions(gw)
        await asyncio.sleep(0.5)
        still = await gw.state.approvals.holding.load(decision.id)
        await api(gw, "POST", f"/api/decisions/{decision.id}/deny", "bob", json={"reason": "no"})
        result = await call
    assert person.asked == []
    assert still.status == "pending"
    assert "denied by bob" in text_of(result)


async def test_an_odd_reason_is_kept_bounded_and_storable(tmp_path, database):
    person = Person(approve("\x00" + "x" * 100_000))
    async with (
        run_gateway(tmp_path, policy=client_policy(approver=True), servers=servers(tmp_path), **database) as gw,
        gw.session("jobs", elicitation_callback=person) as session,
    ):
        await session.call_tool("cancel-async-job", {"jobId": "job-1"})
        [decision] = await wait_for_decisions(gw, status="approved")
        _, [vote] = await gw.state.approvals.service.get(decision.id)
    assert vote.reason is not None and "\x00" not in vote.reason and len(vote.reason) <= 510
    assert vote.reason.startswith("\\u0000xxx")


async def test_another_channel_deciding_first_wins_and_the_late_client_answer_counts_nothing(tmp_path, database):
    denied = asyncio.Event()

    async def late_person(context, params):
        await denied.wait()  # the person at the client answers only after bob denied on the REST API
        return approve("too late")

    async with (
        run_gateway(tmp_path, policy=client_policy(approver=True), servers=servers(tmp_path), **database) as gw,
        gw.session("jobs", elicitation_callback=late_person) as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-1"}))
        [decision] = await wait_for_decisions(gw)
        await api(gw, "POST", f"/api/decisions/{decision.id}/deny", "bob", json={"reason": "first"})
        denied.set()
        result = await call
        await asyncio.sleep(0.3)
        _, votes = await gw.state.approvals.service.get(decision.id)
        final = await gw.state.approvals.holding.load(decision.id)
    assert "denied by bob" in text_of(result)
    assert final.status == "denied" and final.decided_by == "bob"
    assert [(v.approver, v.value) for v in votes] == [("bob", "deny")]
    assert runs(tmp_path) == []
