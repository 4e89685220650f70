"""Standing approvals in the dashboard: the decision page offers "for …" where the rule allows it, the approval
gives one, the Standing page lists it and revokes it, and the next call is held again."""

from __future__ import annotations

import asyncio
import html

from service.approvals import StandingQuery
from tests.approvals.support import approval_policy, decisions, wait_for_decisions
from tests.dashboard.support import browser, sign_in
from tests.support.harness import executed_calls, run_gateway, servers


async def test_approve_for_30_min_on_the_decision_page_then_revoke_it_on_the_standing_page(tmp_path):
    policy = approval_policy(scopes={"tool": "30m"})
    async with (
        run_gateway(tmp_path, policy=policy, servers=servers(tmp_path), approval_hold_s=30) as gw,
        gw.session("jobs") as session,
        browser(gw) as client,
    ):
        csrf = await sign_in(client, "alice")
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "dash-1"}))
        [decision] = await wait_for_decisions(gw)
        page = html.unescape((await client.get(f"/decisions/{decision.id}")).text)
        assert 'name="standing"' in page and "this call only" in page
        assert "every cancel-async-job call on jobs of agent for 30m 00s" in page

        too_long = await client.post(
            f"/decisions/{decision.id}/approve",
            data={"csrf": csrf, "standing": "tool|3600"},
            headers={"accept": "application/json"},
        )
        approved = await client.post(
            f"/decisions/{decision.id}/approve", data={"csrf": csrf, "standing": "tool|1800.0", "next": "/"}
        )
        await asyncio.wait_for(call, 10)
        story = (await client.get(f"/decisions/{decision.id}")).text
        listing = (await client.get("/standing")).text

        before = len(await decisions(gw))
        await asyncio.wait_for(session.call_tool("cancel-async-job", {"jobId": "dash-2"}), 10)
        covered_without_a_decision = len(await decisions(gw)) == before

        [standing] = await gw.state.approvals.service.standing_list(StandingQuery())
        forged = await client.post(f"/standing/{standing.id}/revoke", data={"csrf": "guess"})
        revoked = await client.post(f"/standing/{standing.id}/revoke", data={"csrf": csrf, "reason": "enough"})
        after = (await client.get(revoked.headers["location"])).text
        held = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "dash-3"}))
        [again] = [d for d in await wait_for_decisions(gw) if d.arguments == {"jobId": "dash-3"}]
        await client.post(f"/decisions/{again.id}/deny", data={"csrf": csrf, "reason": "held again"})
        await asyncio.wait_for(held, 10)

    assert too_long.status_code == 422 and "may last at most 30m" in too_long.json()["message"]
    assert approved.status_code == 303
    assert 'data-testid="standing"' in story and standing.id in story
    assert "asking for a standing approval (tool, 30m 00s)" in html.unescape(story)
    assert f'data-standing="{standing.id}"' in listing and "Revoke" in listing and "any arguments" in listing
    assert covered_without_a_decision
    assert forged.status_code == 403
    assert revoked.status_code == 303 and "revoked" in html.unescape(after)
    assert f'data-standing="{standing.id}"' not in after, "the page lists active ones"
    assert [c["arguments"]["jobId"] for c in executed_calls(tmp_path)] == ["dash-1", "dash-2"]
