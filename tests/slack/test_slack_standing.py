"""A standing approval given from Slack: "Approve once" and "Approve for 30 min" buttons where the rule allows
them, the click that gives one, the edited message that says so, and the next call running unasked."""

from __future__ import annotations

import asyncio

from bots.slack import blocks
from tests.approvals.support import api, decisions, wait_for_decisions
from tests.slack.fake_slack import FakeSlack
from tests.slack.support import ALICE, actions_of, post_interaction, slack_gateway, slack_policy, text_of_message
from tests.support.harness import executed_calls, text_of


def cancels(tmp_path) -> list[str]:
    return [c["arguments"]["jobId"] for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


async def test_approve_for_30_min_from_slack_covers_the_tool_for_that_grant(tmp_path, database):
    policy = slack_policy(scopes={"tool": "30m", "same_args": "1h"})
    async with (
        FakeSlack() as fake,
        slack_gateway(tmp_path, fake, policy=policy, **database) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "s-1"}))
        [decision] = await wait_for_decisions(gw)
        [message] = await fake.wait_for(lambda: fake.posted(decision.id))
        buttons = {
            e["action_id"]: e["text"]["text"]
            for b in message["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
        }
        assert actions_of(message) == [
            blocks.APPROVE,
            f"{blocks.APPROVE_FOR}tool",
            f"{blocks.APPROVE_FOR}same_args",
            blocks.DENY,
            blocks.OPEN,
        ]
        assert buttons[blocks.APPROVE] == "Approve once"
        assert buttons[f"{blocks.APPROVE_FOR}tool"] == "Approve for 30 min (this tool)"
        assert buttons[f"{blocks.APPROVE_FOR}same_args"] == "Approve for 1 h (same call)"

        response = await post_interaction(gw, fake.click(message, f"{blocks.APPROVE_FOR}tool", ALICE))
        await asyncio.wait_for(call, 10)
        await fake.wait_for(lambda: "Standing approval" in text_of_message(message))
        view = (await api(gw, "GET", f"/api/decisions/{decision.id}", "bob")).json()

        before = len(await decisions(gw))
        covered = await asyncio.wait_for(session.call_tool("cancel-async-job", {"jobId": "s-2"}), 10)
        after = len(await decisions(gw))

    assert response.status_code == 200
    assert view["standing_id"] and view["standing_id"] in text_of_message(message)
    assert [(v["approver"], v["via"], v["scope"], v["scope_seconds"]) for v in view["votes"]] == [
        ("alice", "slack", "tool", 1800.0)
    ]
    assert "holdgate" not in text_of(covered) and after == before
    assert cancels(tmp_path) == ["s-1", "s-2"]


async def test_a_rule_without_scopes_keeps_the_single_approve_button(tmp_path):
    async with FakeSlack() as fake, slack_gateway(tmp_path, fake) as gw, gw.session("jobs") as session:
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "s-3"}))
        [decision] = await wait_for_decisions(gw)
        [message] = await fake.wait_for(lambda: fake.posted(decision.id))
        forged = fake.click(message, blocks.APPROVE, ALICE)
        forged["actions"][0] |= {"action_id": f"{blocks.APPROVE_FOR}tool", "value": f"{decision.id}|1800"}
        await post_interaction(gw, forged)
        await fake.wait_for(lambda: fake.calls_to("chat.postEphemeral"))
        still = (await api(gw, "GET", f"/api/decisions/{decision.id}", "bob")).json()
        await post_interaction(gw, fake.click(message, blocks.APPROVE, ALICE))
        await asyncio.wait_for(call, 10)

    assert actions_of(message) == [] and "Approve once" not in str(message)
    [ephemeral] = fake.calls_to("chat.postEphemeral")
    assert "allows one-off approvals only" in str(ephemeral.args)
    assert still["status"] == "pending" and still["votes"] == [], "a forged standing click changes nothing"
