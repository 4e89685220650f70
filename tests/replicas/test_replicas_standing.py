"""Standing approvals across two real holdgate processes on one PostgreSQL database: given on one replica, they
cover calls on the other; revoked on one, the next call on the other is held."""

from __future__ import annotations

import asyncio

from tests.approvals.support import api, approval_policy
from tests.replicas.test_replicas import cancelled_jobs, pending_on, two_replicas
from tests.support.harness import text_of


async def test_a_standing_approval_given_and_revoked_on_one_replica_holds_on_the_other(tmp_path, postgres_url):
    policy = approval_policy(scopes={"tool": "30m"})
    async with (
        two_replicas(tmp_path, postgres_url, policy) as (a, b),
        a.session("jobs") as on_a,
        b.session("jobs") as on_b,
    ):
        call = asyncio.create_task(on_a.call_tool("cancel-async-job", {"jobId": "rep-1"}))
        [decision] = await pending_on(b, 1)
        given = await api(
            b, "POST", f"/api/decisions/{decision['id']}/approve", "alice", json={"scope": "tool", "for": "30m"}
        )
        await asyncio.wait_for(call, 10)
        standing_id = given.json()["decision"]["standing_id"]

        covered = await asyncio.wait_for(on_b.call_tool("cancel-async-job", {"jobId": "rep-2"}), 10)
        revoked = await api(a, "POST", f"/api/standing/{standing_id}/revoke", "bob")
        held = asyncio.create_task(on_b.call_tool("cancel-async-job", {"jobId": "rep-3"}))
        [again] = await pending_on(a, 1)
        await api(a, "POST", f"/api/decisions/{again['id']}/deny", "bob", json={"reason": "revoked"})
        refused = await asyncio.wait_for(held, 10)

    assert given.status_code == 200 and standing_id
    assert "holdgate" not in text_of(covered)
    assert revoked.status_code == 200
    assert again["arguments"] == {"jobId": "rep-3"}
    assert refused.is_error and "revoked" in text_of(refused)
    assert cancelled_jobs(tmp_path) == ["rep-1", "rep-2"]
