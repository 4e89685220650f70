"""The Block Kit builders alone: what a person reads, within Slack's limits."""

from __future__ import annotations

import json

from bots.slack import blocks
from service.approvals.schemas import DecisionView, ExecutionView, VoteView
from service.catalog import ToolRisk
from tests.slack.support import decision_view as view
from tests.slack.support import text_of_message


def message_of(decision: DecisionView, **kwargs) -> dict:
    message = blocks.decision_message(decision, **kwargs)
    return {"text": message.text, "blocks": message.blocks}


def test_pending_request_has_everything_an_approver_needs():
    risk = ToolRisk("destructive", "high", "Cancels a running job.", "jobs.json")
    message = message_of(view(), risk=risk, link="https://hg.example/decisions/d_abc")
    text = text_of_message(message)
    assert "`ci-bot`" in text and "`jobs` / `cancel-async-job`" in text
    assert "destructive, high risk: Cancels a running job." in text
    assert "`jobs/cancel-*`: cancelling loses work" in text
    assert "any one of alice, bob" in text
    assert "<!date^1795522500^{date_short_pretty} at {time}|2026-11-24T12:15:00Z>, then it is refused" in text
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    assert [(e["action_id"], e.get("value")) for e in actions["elements"]] == [
        (blocks.APPROVE, "d_abc"),
        (blocks.DENY, "d_abc"),
        (blocks.OPEN, None),
    ]
    assert actions["elements"][2]["url"] == "https://hg.example/decisions/d_abc"


def test_without_a_catalog_entry_or_public_url():
    message = message_of(view(quorum=2, on_timeout="approve"))
    text = text_of_message(message)
    assert "not in a risk catalog" in text and "2 of alice, bob" in text and "then it is approved" in text
    [actions] = [b for b in message["blocks"] if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == [blocks.APPROVE, blocks.DENY]


def arguments_text(arguments: dict) -> str:
    message = message_of(view(arguments=arguments))
    [text] = [
        b["text"]["text"] for b in message["blocks"] if b.get("text", {}).get("text", "").startswith("*Arguments*")
    ]
    return text


def test_arguments_are_pretty_sorted_and_escaped():
    text = arguments_text({"prompt": "hi", "html": "<b>&</b>", "code": "```"})
    assert text.splitlines()[1:4] == ["```{", '  "code": "`\u200b``",', '  "html": "&lt;b&gt;&amp;&lt;/b&gt;",']


def test_long_arguments_are_cut_within_slacks_limits_and_never_inside_an_entity():
    for arguments in ({"prompt": "x" * 10_000}, {"amps": "&" * 5_000}, {"a": "x" * 1_991, "b": "&" * 10}):
        text = arguments_text(arguments)
        assert len(text) < 3000, "a section's text is limited to 3,000 characters"
        body = text.removesuffix("```").rsplit("\n… (cut: ", 1)[0]
        assert body.count("&") == body.count("&amp;"), "no entity cut in half"
        assert f"(cut: {len(json.dumps(arguments, indent=2)):,} characters in all)" in text


def test_an_ended_decision_has_no_buttons_and_says_who_why_and_how_long():
    denied = view(
        status="denied",
        decided_at="2026-11-24T12:02:05Z",
        decided_by="alice",
        decided_via="slack",
        reason="not now\nmaybe tomorrow",
    )
    message = message_of(denied, link="https://hg.example/decisions/d_abc")
    text = text_of_message(message)
    assert message["text"] == "Denied: jobs/cancel-async-job for grant ci-bot (d_abc)"
    assert not [b for b in message["blocks"] if b["type"] == "actions"]
    assert "*Denied* by alice via slack" in text and "2m 05s after the request" in text
    assert ">not now\n>maybe tomorrow" in text
    assert "<https://hg.example/decisions/d_abc|open in holdgate>" in text


def test_executed_outcome_and_votes_so_far():
    executed = view(
        status="approved",
        decided_at="2026-11-24T12:00:30Z",
        decided_by="alice, bob",
        decided_via="slack",
        execution=ExecutionView(outcome="tool_error", detail="job not found", duration_ms=12.4),
    )
    text = text_of_message(message_of(executed))
    assert "*Ran upstream:* `tool_error` in 12 ms" in text and "job not found" in text
    voting = view(quorum=2, votes=[VoteView(approver="alice", value="approve", via="slack", at="2026-11-24T12:01:00Z")])
    assert "Approved so far by alice (1 of 2 needed)" in text_of_message(message_of(voting))


def test_reminder_and_modals():
    assert "still needs approval by alice, bob" in blocks.reminder_text(view())
    modal = blocks.deny_modal("d_abc", channel="C1", ts="1.2")
    assert modal["callback_id"] == blocks.DENY_MODAL and modal["submit"]["text"] == "Deny"
    assert json.loads(modal["private_metadata"]) == {"decision": "d_abc", "channel": "C1", "ts": "1.2"}
    [reason] = [b for b in modal["blocks"] if b["type"] == "input"]
    assert (reason["block_id"], reason["element"]["action_id"]) == (blocks.REASON_BLOCK, blocks.REASON_ACTION)
    notice = blocks.notice_modal("Cannot deny this decision now", "You are not an approver for this.")
    assert len(notice["title"]["text"]) <= 24 and "submit" not in notice
    assert [blocks.duration(s) for s in (5, 125, 3_780)] == ["5s", "2m 05s", "1h 03m"]
