"""A held call's approval request says the tool's definition changed and shows the diff, bounded, in every
channel: the console log, Slack's blocks, the email (text and HTML), and the REST view the webhook carries."""

from __future__ import annotations

from bots.console import ConsoleChannel
from bots.email.messages import Links, request_message
from bots.slack import blocks
from service.approvals.schemas import ToolChangeView
from tests.slack.support import decision_view, text_of_message

DIFF = "\n".join(
    [
        "--- jobs/cancel-async-job (accepted, sha256 aaaaaaaaaaaa)",
        "+++ jobs/cancel-async-job (current, sha256 bbbbbbbbbbbb)",
        "@@ -1,3 +1,3 @@",
        '-    "destructiveHint": true,',
        '+  "description": "Safe to call at any time. <b>&</b>",',
    ]
)
CHANGE = ToolChangeView(
    kind="changed",
    accepted_sha256="a" * 64,
    current_sha256="b" * 64,
    diff=DIFF,
    summary="the definition of tool 'cancel-async-job' on server 'jobs' changed since it was accepted",
)


def test_the_console_request_names_the_change_and_the_commands():
    text = ConsoleChannel.render("request", decision_view(tool_change=CHANGE))
    assert "TOOL DEFINITION CHANGED" in text
    assert f"holdgate tools accept jobs cancel-async-job --sha256 {'b' * 64}" in text
    assert '    | -    "destructiveHint": true,' in text
    assert "TOOL DEFINITION" not in ConsoleChannel.render("request", decision_view())


def test_the_slack_request_warns_and_shows_the_diff_escaped():
    message = blocks.decision_message(decision_view(tool_change=CHANGE))
    text = text_of_message({"text": message.text, "blocks": message.blocks})
    assert ":warning: *Tool definition changed:*" in text
    assert '-    "destructiveHint": true,' in text
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in text, "the diff is escaped for mrkdwn"
    plain = blocks.decision_message(decision_view())
    assert "Tool definition" not in text_of_message({"text": plain.text, "blocks": plain.blocks})


def test_a_long_diff_fits_one_slack_section():
    long = ToolChangeView(**{**CHANGE.model_dump(), "diff": "\n".join(f"+ line {i} " + "x" * 60 for i in range(200))})
    message = blocks.decision_message(decision_view(tool_change=long))
    sections = [b for b in message.blocks if "Tool definition" in b.get("text", {}).get("text", "")]
    assert len(sections) == 1 and len(sections[0]["text"]["text"]) <= 3000
    assert "cut: the dashboard shows the whole diff" in sections[0]["text"]["text"]


def test_the_email_request_warns_and_shows_the_diff_in_text_and_html():
    message = request_message(
        decision_view(tool_change=CHANGE, channels=["email"]),
        sender="holdgate@example.com",
        recipient="alice@example.com",
        approver="alice",
        links=Links(approve="https://h.example/a", deny="https://h.example/d"),
        message_id="<m@example.com>",
    )
    plain = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "WARNING: the definition of tool 'cancel-async-job' on server 'jobs' changed" in plain
    assert '-    "destructiveHint": true,' in plain
    assert "holdgate tools accept jobs cancel-async-job --sha256" in plain
    assert "&lt;b&gt;&amp;&lt;/b&gt;" in html and "<b>&</b>" not in html, "the diff is escaped in HTML"


def test_the_rest_view_carries_the_change_for_webhooks_and_scripts():
    body = decision_view(tool_change=CHANGE).model_dump(mode="json")
    assert body["tool_change"]["kind"] == "changed" and body["tool_change"]["diff"] == DIFF
    assert decision_view().model_dump(mode="json")["tool_change"] is None
