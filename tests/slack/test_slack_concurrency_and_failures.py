"""Several decisions at once, and Slack failing: each button decides its own; failures decide nothing."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from bots.slack import blocks
from bots.slack.channel import SlackChannel, SlackUnavailable, web_client
from bots.slack.settings import SlackSettings
from service.approvals.schemas import ApproverView
from tests.approvals.support import api, decisions, wait_for_decisions
from tests.slack.fake_slack import BOT_TOKEN, FakeSlack
from tests.slack.support import (
    ALICE,
    SIGNING_SECRET,
    actions_of,
    decision_view,
    post_interaction,
    slack_gateway,
    text_of_message,
)
from tests.support.harness import executed_calls, text_of


async def test_two_concurrent_decisions_each_button_decides_only_its_own(tmp_path):
    async with (
        FakeSlack() as fake,
        slack_gateway(tmp_path, fake) as gw,
        gw.session("jobs") as first,
        gw.session("jobs") as second,
    ):
        call_a = asyncio.create_task(first.call_tool("cancel-async-job", {"jobId": "two-a"}))
        call_b = asyncio.create_task(second.call_tool("cancel-async-job", {"jobId": "two-b"}))
        pending = await wait_for_decisions(gw, 2)
        by_job = {d.arguments["jobId"]: d for d in pending}
        a, b = by_job["two-a"], by_job["two-b"]
        [message_a] = await fake.wait_for(lambda: fake.posted(a.id))
        [message_b] = await fake.wait_for(lambda: fake.posted(b.id))
        assert message_a is not message_b

        # Both clicks at once: approve on A's message, deny (modal) on B's.
        approve_a, deny_b = await asyncio.gather(
            post_interaction(gw, fake.click(message_a, blocks.APPROVE, ALICE)),
            post_interaction(gw, fake.click(message_b, blocks.DENY, ALICE)),
        )
        [view_id] = await fake.wait_for(lambda: list(fake.views))
        assert b.id in fake.views[view_id]["private_metadata"]
        await post_interaction(gw, fake.submit(view_id, ALICE, "only A today"))
        result_a, result_b = await asyncio.wait_for(asyncio.gather(call_a, call_b), 10)
        await fake.wait_for(lambda: not actions_of(message_a) and not actions_of(message_b))
        final = {d.arguments["jobId"]: d for d in await decisions(gw)}

    assert approve_a.status_code == 200 and deny_b.status_code == 200
    assert final["two-a"].status == "approved" and final["two-b"].status == "denied"
    assert final["two-b"].reason == "only A today"
    assert "holdgate" not in text_of(result_a)
    assert result_b.is_error and "only A today" in text_of(result_b)
    assert [c["arguments"]["jobId"] for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"] == ["two-a"]
    assert "*Approved* by alice" in text_of_message(message_a) and b.id not in text_of_message(message_a)
    assert "*Denied* by alice" in text_of_message(message_b) and a.id not in text_of_message(message_b)


async def test_slack_429_and_500_delay_the_request_and_the_decision_stays_open(tmp_path):
    async with FakeSlack() as fake:
        fake.fail("chat.postMessage", 500)
        fake.fail("chat.postMessage", 429, retry_after=1)
        async with slack_gateway(tmp_path, fake) as gw, gw.session("jobs") as session:
            call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "down-1"}))
            [decision] = await wait_for_decisions(gw)
            await fake.wait_calls("chat.postMessage", 2)
            meanwhile = (await api(gw, "GET", f"/api/decisions/{decision.id}", "bob")).json()
            [message] = await fake.wait_for(lambda: fake.posted(decision.id))
            failed, limited, posted = fake.calls_to("chat.postMessage")
            await post_interaction(gw, fake.click(message, blocks.APPROVE, ALICE))
            await asyncio.wait_for(call, 10)

    assert meanwhile["status"] == "pending" and meanwhile["votes"] == [], "a Slack failure decides nothing"
    assert limited.at > failed.at, "a 500 is retried"
    assert posted.at - limited.at >= 0.95, "Slack's Retry-After is respected before calling again"
    assert len(fake.calls_to("chat.postMessage")) == 3, "posted once when Slack came back"
    assert len([c for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"]) == 1


async def test_decided_elsewhere_while_slack_is_down_the_late_message_shows_the_outcome(tmp_path):
    async with FakeSlack() as fake:
        fake.fail("chat.postMessage", 503, times=3)
        async with (
            slack_gateway(tmp_path, fake, outbox_retry_base_s=0.2) as gw,
            gw.session("jobs") as session,
        ):
            call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "down-2"}))
            [decision] = await wait_for_decisions(gw)
            await fake.wait_calls("chat.postMessage")
            response = await api(gw, "POST", f"/api/decisions/{decision.id}/approve", "bob")
            await asyncio.wait_for(call, 10)
            [message] = await fake.wait_for(lambda: fake.posted(decision.id))
            await fake.wait_for(lambda: "Ran upstream" in text_of_message(message))

    assert response.status_code == 200
    assert actions_of(message) == [], "no buttons on a decision that is already over"
    assert "*Approved* by bob via api" in text_of_message(message)
    assert len(fake.calls_to("chat.postMessage")) == 4


async def test_deliver_raises_on_network_errors_and_waits_out_retry_after(tmp_path):
    """The channel alone: every failure raises (the outbox retries); a 429 silences it for Retry-After."""

    now = [100.0]
    async with FakeSlack() as fake:
        settings = SlackSettings(_env_file=None, bot_token=BOT_TOKEN, signing_secret=SIGNING_SECRET, api_url=fake.url)
        channel = SlackChannel(web_client(settings), monotonic=lambda: now[0])
        decision = decision_view(slack_channel="C0APPROVALS")
        fake.fail("chat.postMessage", 429, retry_after=30)
        with pytest.raises(SlackUnavailable, match="Retry-After 30s"):
            await channel.deliver("request", decision, None)
        now[0] += 29
        with pytest.raises(SlackUnavailable, match="rate limited"):
            await channel.deliver("request", decision, None)
        assert len(fake.calls) == 1, "not called again inside the Retry-After window"
        now[0] += 1
        ref = await channel.deliver("request", decision, None)
        with pytest.raises(SlackUnavailable, match="not posted yet"):
            await channel.deliver("update", decision, None)
        assert await channel.deliver("update", decision, "") is None, "delivered nowhere: nothing to edit"
    with pytest.raises(aiohttp.ClientConnectionError):  # the fake is gone
        await channel.deliver("update", decision, ref)
    assert ref.startswith("C0APPROVALS:")


def test_where_requests_go():
    channel = SlackChannel(web_client(SlackSettings(_env_file=None)), default_channel="C0DEFAULT")
    people = [
        ApproverView(name="alice", slack_ids=["U0ALICE"]),
        ApproverView(name="ci-bot", slack_ids=["U0BOT"]),  # the grant that asks: never asked to approve
        ApproverView(name="slack:U0CAROL", slack_ids=["U0CAROL"]),
        ApproverView(name="dave", emails=["dave@example.com"]),
    ]
    assert channel.targets(decision_view(slack_channel="C0RULE:1712345678.000100")) == ["C0RULE:1712345678.000100"]
    assert channel.targets(decision_view(approver_details=people)) == ["U0ALICE", "U0CAROL"]
    assert channel.targets(decision_view(approver_details=people[3:])) == ["C0DEFAULT"]
