"""A held MCP call decided from Slack, end to end: the message, the buttons, the modal, the edits."""

from __future__ import annotations

import asyncio
import time

from bots.slack import blocks
from tests.approvals.support import api, wait_for_decisions
from tests.slack.fake_slack import FakeSlack
from tests.slack.support import (
    ALICE,
    CHANNEL,
    actions_of,
    post_interaction,
    slack_gateway,
    slack_policy,
    text_of_message,
)
from tests.support.harness import Clock, executed_calls, text_of


def cancels(tmp_path) -> list[dict]:
    return [c for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]


async def test_approve_from_slack_releases_the_held_call_and_edits_the_message(tmp_path):
    async with FakeSlack() as fake, slack_gateway(tmp_path, fake) as gw, gw.session("jobs") as session:
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "slack-1", "token": "s3cret"}))
        [decision] = await wait_for_decisions(gw)
        [message] = await fake.wait_for(lambda: fake.posted(decision.id))

        text = text_of_message(message)
        assert message["channel"] == CHANNEL
        assert f"Approval needed: grant agent wants to call jobs/cancel-async-job ({decision.id})" == message["text"]
        assert "`agent`" in text and "`jobs` / `cancel-async-job`" in text
        assert "destructive, high risk: Cancels a running job." in text
        assert '"jobId": "slack-1"' in text and "s3cret" not in text and "[redacted]" in text
        assert "`cancel-async-job`" in text, "the rule that asked"
        assert "any one of alice, bob" in text
        assert "<!date^" in text and decision.expires_at in text, "expiry in Slack date formatting"
        assert actions_of(message) == [blocks.APPROVE, blocks.DENY, blocks.OPEN]
        assert f"https://holdgate.example.com/decisions/{decision.id}" in str(message["blocks"])
        assert cancels(tmp_path) == [], "nothing runs before a person approves"

        started = time.monotonic()
        response = await post_interaction(gw, fake.click(message, blocks.APPROVE, ALICE))
        acked_in = time.monotonic() - started
        result = await asyncio.wait_for(call, 10)
        await fake.wait_for(lambda: "Ran upstream" in text_of_message(message))
        view = (await api(gw, "GET", f"/api/decisions/{decision.id}", "bob")).json()

    assert response.status_code == 200 and response.content == b""
    assert acked_in < 3, "Slack wants the ack within 3 s"
    assert "holdgate" not in text_of(result), "the client gets the upstream's own result"
    assert len(cancels(tmp_path)) == 1
    assert view["status"] == "approved" and view["decided_by"] == "alice" and view["decided_via"] == "slack"
    assert [(v["approver"], v["value"], v["via"]) for v in view["votes"]] == [("alice", "approve", "slack")]
    # The message was edited in place: buttons gone, outcome, who, how long, then the executed outcome.
    final = text_of_message(message)
    assert message.get("edited") and actions_of(message) == []
    assert message["text"].startswith("Approved: jobs/cancel-async-job")
    assert "*Approved* by alice via slack" in final and "after the request" in final
    assert "*Ran upstream:* `ok`" in final or "*Ran upstream:* `tool_error`" in final
    assert len(fake.calls_to("chat.postMessage")) == 1


async def test_deny_from_slack_asks_for_a_reason_in_a_modal(tmp_path):
    async with FakeSlack() as fake, slack_gateway(tmp_path, fake) as gw, gw.session("jobs") as session:
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "slack-2"}))
        [decision] = await wait_for_decisions(gw)
        [message] = await fake.wait_for(lambda: fake.posted(decision.id))

        click = await post_interaction(gw, fake.click(message, blocks.DENY, ALICE))
        [view_id] = await fake.wait_for(lambda: list(fake.views))  # the fake refuses triggers older than 3 s
        assert fake.views[view_id]["callback_id"] == blocks.DENY_MODAL

        empty = await post_interaction(gw, fake.submit(view_id, ALICE, "   "))
        assert (await wait_for_decisions(gw))[0].status == "pending", "no reason, no denial"

        submitted = await post_interaction(gw, fake.submit(view_id, ALICE, "job still needed"))
        result = await asyncio.wait_for(call, 10)
        await fake.wait_for(lambda: not actions_of(message))

    assert click.status_code == 200
    assert "views.update" not in [c.method for c in fake.calls], "an approver keeps the modal"
    assert empty.status_code == 200
    assert empty.json() == {"response_action": "errors", "errors": {blocks.REASON_BLOCK: blocks.REASON_MISSING}}
    assert submitted.status_code == 200 and submitted.content == b"", "an empty ack closes the modal"
    assert result.is_error and "denied by alice" in text_of(result) and "job still needed" in text_of(result)
    assert cancels(tmp_path) == []
    final = text_of_message(message)
    assert "*Denied* by alice via slack" in final and ">job still needed" in final


async def test_the_message_is_edited_after_decisions_made_elsewhere(tmp_path):
    clock = Clock(time.time())
    async with (
        FakeSlack() as fake,
        slack_gateway(tmp_path, fake, clock=clock, approval_sweep_interval_s=0.05) as gw,
        gw.session("jobs") as session,
    ):
        by_api = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "slack-3"}))
        [decision] = await wait_for_decisions(gw)
        [message] = await fake.wait_for(lambda: fake.posted(decision.id))
        await api(gw, "POST", f"/api/decisions/{decision.id}/deny", "bob", json={"reason": "not today"})
        await asyncio.wait_for(by_api, 10)
        await fake.wait_for(lambda: not actions_of(message))
        denied = text_of_message(message)

        timed_out = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "slack-4"}))
        [second] = await wait_for_decisions(gw)
        [expiring] = await fake.wait_for(lambda: fake.posted(second.id))
        clock.now += 15 * 60
        await asyncio.wait_for(timed_out, 10)
        await fake.wait_for(lambda: not actions_of(expiring))
        expired = text_of_message(expiring)

    assert "*Denied* by bob via api" in denied and ">not today" in denied
    assert expiring["text"].startswith("Expired: jobs/cancel-async-job")
    assert "*Expired* by timeout via timeout" in expired and "no decision by" in expired
    assert [c.args["channel"] for c in fake.calls_to("chat.update")] == [CHANNEL, CHANNEL]


async def test_without_a_channel_each_approver_gets_a_dm_and_a_reminder_in_its_thread(tmp_path):
    clock = Clock(time.time())
    policy = slack_policy(slack_channel=None, remind_before="2m")
    async with (
        FakeSlack() as fake,
        slack_gateway(tmp_path, fake, policy=policy, clock=clock, approval_sweep_interval_s=0.05) as gw,
        gw.session("jobs") as session,
    ):
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "slack-5"}))
        [decision] = await wait_for_decisions(gw)
        [message] = await fake.wait_for(lambda: fake.posted(decision.id))
        clock.now += 13 * 60
        [reminder] = await fake.wait_for(
            lambda: [c for c in fake.calls_to("chat.postMessage") if c.args.get("thread_ts")]
        )
        await post_interaction(gw, fake.click(message, blocks.APPROVE, ALICE))
        await asyncio.wait_for(call, 10)

    assert fake.calls_to("chat.postMessage")[0].args["channel"] == ALICE, "alice is the only approver with a Slack ID"
    assert message["channel"] == "D0ALICE"
    assert reminder.args["channel"] == "D0ALICE" and reminder.args["thread_ts"] == message["ts"]
    assert "Reminder" in reminder.args["text"] and "alice, bob" in reminder.args["text"]
    assert len(cancels(tmp_path)) == 1
