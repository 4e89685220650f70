"""The client approval channel on 2026-07-28 requests (stateless, no back channel): the multi round-trip form, an
`InputRequiredResult` whose sealed `requestState` names the decision, answered on the client's retry. With the SDK
client (`Client(..., mode="2026-07-28")`, which drives the rounds) and spoken by hand, to attack the state."""

from __future__ import annotations

import asyncio
import json
import time

import mcp_types as types
import pytest
from mcp.server.request_state import _principal_claim, _request_identity, compact_json
from pydantic import SecretStr

from service.gateway.sealed_state import ClientState, state_security
from tests.approvals.support import api, wait_for_decisions
from tests.client_channel.support import (
    PUBLIC_URL,
    Person,
    approve,
    client_gateway,
    client_policy,
    modern_call,
    runs,
    still_pending,
)
from tests.support.harness import audit_events, run_gateway, servers, text_of


async def test_form_mode_round_trip_approves_and_runs_the_call_once(tmp_path, database):
    person = Person(approve())
    async with client_gateway(tmp_path, person, approver=True, modern=True, **database) as (gw, client):
        result = await client.call_tool("cancel-async-job", {"jobId": "job-1"})
        [decision] = await wait_for_decisions(gw, status="approved")
    assert "Job job-1 not found" in text_of(result) and len(runs(tmp_path)) == 1
    [form] = person.forms
    assert decision.id in form.message
    assert decision.decided_by == "client:agent" and decision.decided_via == "mcp"


async def test_a_declined_round_is_a_denial_with_its_reason_audited(tmp_path):
    person = Person(types.ElicitResult(action="decline"))
    async with client_gateway(tmp_path, person, approver=True, modern=True) as (gw, client):
        result = await client.call_tool("cancel-async-job", {"jobId": "job-1"})
        [decision] = await wait_for_decisions(gw, status="denied")
        await gw.state.audit.flush()
        audit = [e for e in await audit_events(gw) if e.tool == "cancel-async-job"]
    assert result.is_error is True and "denied by client:agent" in text_of(result)
    assert decision.reason == "the person at the client declined the approval request"
    # The first round is audited as pending (the client was asked), the retry as denied with the reason.
    assert [e.verdict for e in audit] == ["pending", "denied"]
    assert "declined the approval request" in (audit[1].reason or "")
    assert runs(tmp_path) == []


async def test_url_mode_round_accept_only_opens_the_page_and_the_dashboard_decides(tmp_path):
    person = Person(types.ElicitResult(action="accept"))
    async with client_gateway(tmp_path, person, approver=False, modern=True, public_url=PUBLIC_URL) as (gw, client):
        call = asyncio.create_task(client.call_tool("cancel-async-job", {"jobId": "job-1"}))
        decision = await still_pending(gw, person)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        result = await call
    [asked] = person.urls
    assert asked.url == f"{PUBLIC_URL}/decisions/{decision.id}"
    assert decision.status == "pending"
    assert "Job job-1 not found" in text_of(result) and len(runs(tmp_path)) == 1


async def first_round(gw, *, elicitation=None, arguments=None):
    answer = await modern_call(
        gw.mcp_url("jobs"),
        gw.tokens["agent"],
        "cancel-async-job",
        arguments or {"jobId": "job-1"},
        elicitation=elicitation if elicitation is not None else {"form": {}, "url": {}},
    )
    return answer["result"]


async def test_forged_stale_replayed_and_other_grant_states_are_refused_with_no_change(tmp_path, database):
    async with run_gateway(
        tmp_path,
        policy=client_policy(approver=True),
        servers=servers(tmp_path),
        grants=["agent", "other"],
        **database,
    ) as gw:
        asked = await first_round(gw)
        assert asked["resultType"] == "input_required"
        [(key, request)] = asked["inputRequests"].items()
        assert request["method"] == "elicitation/create" and request["params"]["mode"] == "form"
        state = asked["requestState"]
        assert state.startswith("v1.") and "d_" not in state  # sealed: the decision id is not readable
        [decision] = await wait_for_decisions(gw)
        yes = {key: {"action": "accept", "content": {"decision": "approve"}}}
        url, call = gw.mcp_url("jobs"), ("cancel-async-job", {"jobId": "job-1"})
        flipped = state[:-3] + ("A" if state[-3] != "A" else "B") + state[-2:]
        refusals = [
            await modern_call(url, gw.tokens["agent"], *call, requestState=flipped, inputResponses=yes),
            await modern_call(url, gw.tokens["agent"], *call, requestState="v1.AAAA", inputResponses=yes),
            await modern_call(url, gw.tokens["agent"], *call, requestState="", inputResponses=yes),
            await modern_call(url, gw.tokens["agent"], *call, requestState="x" * 100_000, inputResponses=yes),
            # Another grant, the same call, the genuine state: bound to the grant it was made for.
            await modern_call(url, gw.tokens["other"], *call, requestState=state, inputResponses=yes),
            # The genuine state on another call (other arguments): bound to the call it was made for.
            await modern_call(
                url, gw.tokens["agent"], "cancel-async-job", {"jobId": "job-2"}, requestState=state, inputResponses=yes
            ),
        ]
        untouched = await gw.state.approvals.holding.load(decision.id)
        _, votes_before = await gw.state.approvals.service.get(decision.id)

        declined = {key: {"action": "decline"}}
        spent = await modern_call(url, gw.tokens["agent"], *call, requestState=state, inputResponses=declined)
        replayed = await modern_call(url, gw.tokens["agent"], *call, requestState=state, inputResponses=yes)
        after = await gw.state.approvals.holding.load(decision.id)
        _, votes_after = await gw.state.approvals.service.get(decision.id)
    for refused in refusals:
        assert refused["error"]["code"] == -32602, refused
        assert refused["error"]["message"] == "Invalid or expired requestState"
    assert untouched.status == "pending" and votes_before == []
    assert spent["result"]["isError"] is True and "denied by client:agent" in spent["result"]["content"][0]["text"]
    assert replayed["error"]["code"] == -32602  # single use: the second retry with the same state
    assert after.status == "denied"
    assert after.decision_reason == "the person at the client declined the approval request"
    assert votes_after == []  # the replayed "approve" counted nothing
    assert runs(tmp_path) == []


async def test_a_url_state_cannot_be_answered_as_a_form_and_the_client_only_asks_what_the_rule_allows(tmp_path):
    async with run_gateway(
        tmp_path, policy=client_policy(approver=False), servers=servers(tmp_path), public_url=PUBLIC_URL
    ) as gw:
        # A form-only client, and the rule does not list the approver client: nothing is asked (no form for it);
        # the call is held like any other (answered below, once its decision is denied).
        form_only_call = asyncio.create_task(
            modern_call(gw.mcp_url("jobs"), gw.tokens["agent"], "cancel-async-job", {"jobId": "job-1"}, elicitation={})
        )
        asked = await first_round(gw, arguments={"jobId": "job-2"})
        assert asked["inputRequests"]["holdgate_approval"]["params"]["mode"] == "url"
        [pending, _] = sorted(await wait_for_decisions(gw, count=2), key=lambda d: d.arguments["jobId"])
        target = next(d for d in await wait_for_decisions(gw, count=2) if d.arguments["jobId"] == "job-2")
        approve_as_form = {"holdgate_approval": {"action": "accept", "content": {"decision": "approve"}}}
        retry = asyncio.create_task(
            modern_call(
                gw.mcp_url("jobs"),
                gw.tokens["agent"],
                "cancel-async-job",
                {"jobId": "job-2"},
                elicitation={"form": {}, "url": {}},
                requestState=asked["requestState"],
                inputResponses=approve_as_form,
            )
        )
        await asyncio.sleep(0.5)
        still = await gw.state.approvals.holding.load(target.id)
        _, votes = await gw.state.approvals.service.get(target.id)
        await api(gw, "POST", f"/api/decisions/{target.id}/deny", "bob", json={"reason": "no"})
        answered = await retry
        await api(gw, "POST", f"/api/decisions/{pending.id}/deny", "bob", json={"reason": "not asked"})
        form_only = await form_only_call
    assert form_only["result"].get("resultType") != "input_required"
    assert "denied by bob" in form_only["result"]["content"][0]["text"]
    assert pending.arguments == {"jobId": "job-1"}
    assert still.status == "pending" and votes == []  # a URL accept is consent to open, whatever content it carries
    assert "denied by bob" in answered["result"]["content"][0]["text"]


@pytest.mark.parametrize("answer", [{"action": "maybe"}, "accept", {"action": "accept", "content": [1]}])
async def test_an_answer_that_is_no_elicitation_result_is_refused_and_the_state_stays_unspent(tmp_path, answer):
    async with run_gateway(tmp_path, policy=client_policy(approver=True), servers=servers(tmp_path)) as gw:
        asked = await first_round(gw)
        url, call = gw.mcp_url("jobs"), ("cancel-async-job", {"jobId": "job-1"})
        state = asked["requestState"]
        bad = await modern_call(
            url, gw.tokens["agent"], *call, requestState=state, inputResponses={"holdgate_approval": answer}
        )
        [decision] = await wait_for_decisions(gw)
        good = await modern_call(
            url,
            gw.tokens["agent"],
            *call,
            requestState=state,
            inputResponses={"holdgate_approval": {"action": "accept", "content": {"decision": "approve"}}},
        )
    assert bad["error"]["code"] == -32602  # the SDK checks inputResponses first; holdgate again (`invalid_answer`)
    assert decision.status == "pending"
    assert "Job job-1 not found" in good["result"]["content"][0]["text"]


async def test_a_stale_state_sealed_with_the_right_key_is_refused(tmp_path):
    """A state that is right in every way but its expiry (sealed here with the service's key, as the boundary seals,
    through the SDK's own claim helpers) is refused, and the decision it names is untouched."""
    key = "the-test-service-secret-key-0123456789abcdef"
    async with run_gateway(
        tmp_path, policy=client_policy(approver=True), servers=servers(tmp_path), secret_key=key
    ) as gw:
        await first_round(gw)
        [decision] = await wait_for_decisions(gw)
        call = {"name": "cancel-async-job", "arguments": {"jobId": "job-1"}}
        target, digest = _request_identity("tools/call", call)
        inner = ClientState.new(decision.id, "agent", "form").plaintext()

        def sealed(age: float) -> str:
            now = time.time() - age
            claims = {"v": 1, "iat": now, "exp": now + 600, "m": "tools/call", "t": target, "a": digest, "s": inner}
            claims |= {"aud": "holdgate/jobs", "p": _principal_claim(json.dumps(["agent", None]))}
            codec = state_security(SecretStr(key), lambda ctx: None).codec
            return codec.seal(compact_json(claims).encode())

        yes = {"holdgate_approval": {"action": "accept", "content": {"decision": "approve"}}}
        url, token = gw.mcp_url("jobs"), gw.tokens["agent"]
        stale = await modern_call(url, token, *call.values(), requestState=sealed(601), inputResponses=yes)
        untouched = await gw.state.approvals.holding.load(decision.id)
        fresh = await modern_call(url, token, *call.values(), requestState=sealed(0), inputResponses=yes)
    assert stale["error"]["code"] == -32602 and stale["error"]["message"] == "Invalid or expired requestState"
    assert untouched.status == "pending"
    # The same construction, fresh, is accepted: the refusal above was the expiry, not the construction.
    assert "Job job-1 not found" in fresh["result"]["content"][0]["text"]


async def test_no_answer_from_the_sdk_client_leaves_the_decision_pending_for_the_other_channels(tmp_path):
    person = Person(error=RuntimeError("nobody at the client"))
    async with client_gateway(tmp_path, person, approver=True, modern=True) as (gw, client):
        try:
            outcome: object = await client.call_tool("cancel-async-job", {"jobId": "job-1"})
        except Exception as exc:  # the SDK client gives up on the round; holdgate is told nothing
            outcome = exc
        [decision] = await wait_for_decisions(gw)
        await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "alice")
        [approved] = await wait_for_decisions(gw, status="approved")
    assert person.forms, outcome
    assert decision.status == "pending" and approved.decided_by == "alice"
