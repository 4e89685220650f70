"""Socket Mode: the same approvals over slack-sdk's websocket client, for teams without a public URL."""

from __future__ import annotations

import asyncio

from bots.slack import blocks
from tests.approvals.support import decisions, wait_for_decisions
from tests.slack.fake_slack import APP_TOKEN, FakeSlack
from tests.slack.support import ALICE, STRANGER, actions_of, post_interaction, slack_gateway, text_of_message
from tests.support.harness import executed_calls, text_of


async def test_socket_mode_approve_and_deny_end_to_end(tmp_path):
    async with (
        FakeSlack() as fake,
        slack_gateway(tmp_path, fake, socket_mode=True) as gw,
        gw.session("jobs") as first,
        gw.session("jobs") as second,
    ):
        await fake.wait_for(lambda: fake.sockets)
        [opened] = fake.calls_to("apps.connections.open")
        http = await post_interaction(gw, {"type": "block_actions"})

        approve_call = asyncio.create_task(first.call_tool("cancel-async-job", {"jobId": "socket-1"}))
        [approved] = await wait_for_decisions(gw)
        [message] = await fake.wait_for(lambda: fake.posted(approved.id))
        stranger = await fake.ack_of(await fake.send_envelope(fake.click(message, blocks.APPROVE, STRANGER)))
        [ephemeral] = await fake.wait_calls("chat.postEphemeral")
        assert (await decisions(gw, status="pending"))[0].votes == []
        click = await fake.ack_of(await fake.send_envelope(fake.click(message, blocks.APPROVE, ALICE)))
        await asyncio.wait_for(approve_call, 10)
        await fake.wait_for(lambda: not actions_of(message))

        deny_call = asyncio.create_task(second.call_tool("cancel-async-job", {"jobId": "socket-2"}))
        [denied] = await wait_for_decisions(gw)
        [other] = await fake.wait_for(lambda: fake.posted(denied.id))
        await fake.ack_of(await fake.send_envelope(fake.click(other, blocks.DENY, ALICE)))
        [view_id] = await fake.wait_for(lambda: list(fake.views))
        empty = await fake.ack_of(await fake.send_envelope(fake.submit(view_id, ALICE, "")))
        reason = await fake.ack_of(await fake.send_envelope(fake.submit(view_id, ALICE, "wrong job")))
        result = await asyncio.wait_for(deny_call, 10)
        await fake.wait_for(lambda: not actions_of(other))

    assert opened.token == APP_TOKEN, "the websocket URL is asked for with the app-level token"
    assert http.status_code == 404, "no signing secret: interactions arrive over Socket Mode only"
    assert set(stranger) == {"envelope_id"} and set(click) == {"envelope_id"}, "plain acks"
    assert ephemeral.args["user"] == STRANGER and ephemeral.args["text"] == "You are not an approver for this."
    assert [c["arguments"]["jobId"] for c in executed_calls(tmp_path) if c["tool"] == "cancel-async-job"] == [
        "socket-1"
    ]
    assert "*Approved* by alice via slack" in text_of_message(message)
    assert empty["payload"] == {"response_action": "errors", "errors": {blocks.REASON_BLOCK: blocks.REASON_MISSING}}
    assert "payload" not in reason, "an empty ack closes the modal"
    assert result.is_error and "wrong job" in text_of(result)
    assert "*Denied* by alice via slack" in text_of_message(other)
