"""The client channel's 2026-07-28 rounds need no affinity: with one `HOLDGATE_SECRET_KEY`, a state minted by one
replica is opened by the other, and spent once across both (PostgreSQL)."""

from __future__ import annotations

from tests.client_channel.support import client_policy, modern_call
from tests.replicas.test_replicas import cancelled_jobs, pending_on, two_replicas

SECRET = "a-shared-secret-key-of-the-test-replicas-0123456789"


async def test_a_round_asked_on_one_replica_is_answered_on_the_other_and_spent_for_both(tmp_path, postgres_url):
    policy = client_policy(approver=True)
    async with two_replicas(tmp_path, postgres_url, policy, HOLDGATE_SECRET_KEY=SECRET) as (a, b):
        token = a.tokens["agent"]
        call = ("cancel-async-job", {"jobId": "rr-c"})
        elicitation = {"form": {}, "url": {}}
        asked = (await modern_call(a.mcp_url("jobs"), token, *call, elicitation=elicitation))["result"]
        [decision] = await pending_on(b, 1)
        yes = {"holdgate_approval": {"action": "accept", "content": {"decision": "approve", "reason": "mine"}}}
        state = asked["requestState"]
        answered = await modern_call(
            b.mcp_url("jobs"), token, *call, elicitation=elicitation, requestState=state, inputResponses=yes
        )
        replayed = await modern_call(
            a.mcp_url("jobs"), token, *call, elicitation=elicitation, requestState=state, inputResponses=yes
        )
    assert asked["resultType"] == "input_required" and decision["status"] == "pending"
    assert "Job rr-c not found" in answered["result"]["content"][0]["text"]
    assert replayed["error"]["code"] == -32602
    assert cancelled_jobs(tmp_path) == ["rr-c"]
