"""Who may decide from Slack: only signed requests, only approvers, never the agent's own grant."""

from __future__ import annotations

import asyncio
import logging
import time

from bots.slack import blocks
from tests.approvals.support import decisions, wait_for_decisions
from tests.slack.fake_slack import FakeSlack
from tests.slack.support import (
    ALICE,
    STRANGER,
    actions_of,
    form_body,
    post_interaction,
    sign,
    slack_gateway,
    slack_policy,
)


async def test_forged_stale_and_malformed_signatures_are_refused_and_change_nothing(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="holdgate.slack")
    async with FakeSlack() as fake, slack_gateway(tmp_path, fake) as gw, gw.session("jobs") as session:
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "sig-1"}))
        [decision] = await wait_for_decisions(gw)
        [message] = await fake.wait_for(lambda: fake.posted(decision.id))
        body = form_body(fake.click(message, blocks.APPROVE, ALICE))
        now = int(time.time())
        good = sign(body)
        attempts = {
            "wrong secret": sign(body, secret="not-the-signing-secret"),
            "stale (6 minutes old)": sign(body, timestamp=str(now - 360)),
            "from the future": sign(body, timestamp=str(now + 360)),
            "no headers": {},
            "no signature": {"X-Slack-Request-Timestamp": str(now)},
            "no timestamp": {"X-Slack-Signature": good["X-Slack-Signature"]},
            "timestamp not a number": {**good, "X-Slack-Request-Timestamp": "yesterday"},
            "signature not hex": {**good, "X-Slack-Signature": "v0=zzzz"},
            "other scheme": {**good, "X-Slack-Signature": good["X-Slack-Signature"].replace("v0=", "v1=")},
            "signed another body": sign(form_body({"type": "block_actions"})),
        }
        refused = {name: await post_interaction(gw, body=body, headers=headers) for name, headers in attempts.items()}
        tampered = await post_interaction(gw, body=body.replace("U0ALICE", "U0BOBBY"), headers=good)
        garbage = await post_interaction(gw, body="payload=%FF%FE", headers=sign("payload=%FF%FE"))
        not_json = await post_interaction(gw, body="payload=not-json", headers=sign("payload=not-json"))
        await asyncio.sleep(0.2)  # would any background work have started, it would have by now
        [still] = await decisions(gw)
        buttons = actions_of(message)
        slack_calls = {c.method for c in fake.calls}
        call.cancel()

    assert {name: r.status_code for name, r in refused.items()} == dict.fromkeys(attempts, 401)
    assert tampered.status_code == 401
    assert garbage.status_code == 400 and not_json.status_code == 400, "signed but not a Slack payload"
    assert still.status == "pending" and still.votes == []
    assert buttons == [blocks.APPROVE, blocks.DENY, blocks.OPEN]
    assert slack_calls == {"chat.postMessage"}, "no Slack call was made for a refused request"
    refusals = [r for r in caplog.records if "refused a Slack interaction" in r.getMessage()]
    assert len(refusals) == len(attempts) + 1


async def test_a_non_approver_gets_an_ephemeral_and_nothing_changes(tmp_path):
    async with FakeSlack() as fake, slack_gateway(tmp_path, fake) as gw, gw.session("jobs") as session:
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "who-1"}))
        [decision] = await wait_for_decisions(gw)
        [message] = await fake.wait_for(lambda: fake.posted(decision.id))

        approve = await post_interaction(gw, fake.click(message, blocks.APPROVE, STRANGER))
        [first] = await fake.wait_calls("chat.postEphemeral")
        deny = await post_interaction(gw, fake.click(message, blocks.DENY, STRANGER))
        [_, second] = await fake.wait_calls("chat.postEphemeral", 2)
        [view] = fake.views.values()
        [still] = await decisions(gw)
        buttons = actions_of(message)
        edits = fake.calls_to("chat.update")
        call.cancel()

    assert approve.status_code == 200 and deny.status_code == 200
    for ephemeral in (first, second):
        assert ephemeral.args["user"] == STRANGER and ephemeral.args["channel"] == message["channel"]
        assert ephemeral.args["text"] == "You are not an approver for this."
    # The deny modal opened at once (trigger ids expire), then was replaced by the refusal.
    assert [c.method for c in fake.calls if c.method.startswith("views.")] == ["views.open", "views.update"]
    assert view.get("submit") is None and "not an approver" in str(view["blocks"])
    assert still.status == "pending" and still.votes == []
    assert buttons == [blocks.APPROVE, blocks.DENY, blocks.OPEN] and edits == []


async def test_the_grant_that_asked_cannot_approve_from_slack(tmp_path):
    policy = slack_policy(approvers=["group:ops", "agent"])
    policy["people"]["agent"]["slack"] = "U0AGENT"  # the agent's grant is also a person with a Slack ID
    async with FakeSlack() as fake, slack_gateway(tmp_path, fake, policy=policy) as gw, gw.session("jobs") as session:
        call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "who-2"}))
        [decision] = await wait_for_decisions(gw)
        [message] = await fake.wait_for(lambda: fake.posted(decision.id))
        await post_interaction(gw, fake.click(message, blocks.APPROVE, "U0AGENT"))
        [ephemeral] = await fake.wait_calls("chat.postEphemeral")
        [still] = await decisions(gw)
        call.cancel()

    assert ephemeral.args["text"].startswith("You are not an approver for this.")
    assert "agent is the grant that made this call and cannot approve it" in ephemeral.args["text"]
    assert still.status == "pending" and still.votes == []


async def test_a_second_click_after_the_decision_says_who_decided(tmp_path):
    async with FakeSlack() as fake, slack_gateway(tmp_path, fake, policy=slack_policy(quorum=2)) as gw:
        async with gw.session("jobs") as session:
            call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "who-3"}))
            [decision] = await wait_for_decisions(gw)
            [message] = await fake.wait_for(lambda: fake.posted(decision.id))
            stale_click = fake.click(message, blocks.APPROVE, ALICE)
            await post_interaction(gw, stale_click)
            [counted] = await fake.wait_calls("chat.postEphemeral")
            await fake.wait_calls("chat.update")
            votes_shown = "Approved so far by alice (1 of 2 needed)" in str(message["blocks"])
            buttons = actions_of(message)
            await post_interaction(gw, stale_click)
            [_, twice] = await fake.wait_calls("chat.postEphemeral", 2)
            call.cancel()

    assert counted.args["text"] == "approval by alice recorded; 1 more needed"
    assert votes_shown and buttons == [blocks.APPROVE, blocks.DENY, blocks.OPEN], "still open, votes shown"
    assert twice.args["text"] == f"alice has already voted on {decision.id}"
