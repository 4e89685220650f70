"""Pure builders: a decision (as `DecisionView`) and its links in, an `EmailMessage` out.

Every message is multipart/alternative — plain text first, then HTML — rendered from the Jinja2
templates beside this module (HTML autoescaped). Nothing here sends, signs or reads the database.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from service.approvals import DecisionView

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)

MAX_ARGUMENTS_CHARS = 4000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True, slots=True)
class Links:
    approve: str
    deny: str
    page: str | None = None
    """The decision's page in the dashboard (which asks for sign-in first: a token, or the identity provider)."""


def subject(decision: DecisionView) -> str:
    """The thread's subject; follow-ups answer it with "Re: " so every mail client threads them."""
    return _header(f"[holdgate] Approval needed: {decision.server}/{decision.tool} by {decision.grant} ({decision.id})")


def arguments_text(decision: DecisionView) -> str:
    """The redacted arguments as indented JSON, cut short when huge."""
    text = json.dumps(decision.arguments, indent=2, ensure_ascii=False, sort_keys=True)
    if len(text) > MAX_ARGUMENTS_CHARS:
        text = text[:MAX_ARGUMENTS_CHARS] + "\n… (cut short; the decision's API record has all of them)"
    return text


def ending(decision: DecisionView) -> str:
    """How a decision ended, in one sentence (mail follow-ups and confirmation pages)."""
    via = f" via {decision.decided_via}" if decision.decided_via else ""
    match decision.status:
        case "approved" if decision.decided_by == "timeout":
            text = f"Approved automatically: nobody decided by {decision.expires_at} and the rule approves on timeout."
        case "approved":
            text = f"Approved by {decision.decided_by}{via}."
        case "denied":
            text = f"Denied by {decision.decided_by}{via}."
        case "expired":
            text = f"Expired: nobody decided by {decision.expires_at}, so the call was not run."
        case "cancelled":
            text = "Cancelled: the agent stopped waiting before anyone decided, so the call was not run."
        case _:
            text = f"Still waiting for a decision (expires {decision.expires_at})."
    if decision.reason and decision.status in ("approved", "denied") and decision.decided_by != "timeout":
        text += f" Reason: {decision.reason}"
    if decision.execution is not None:
        text += f" The released call finished: {decision.execution.outcome}."
    return text


def request_message(
    decision: DecisionView,
    *,
    sender: str,
    recipient: str,
    approver: str,
    links: Links,
    message_id: str,
    reminder: bool = False,
    thread: str | None = None,
) -> EmailMessage:
    """The approval request (or its reminder) for one approver, with that approver's own links."""
    context = {
        "d": decision,
        "recipient": recipient,
        "approver": approver,
        "links": links,
        "arguments": arguments_text(decision),
        "reminder": reminder,
        "waiting_for": _waiting_for(decision),
    }
    return _message(
        "request", context, decision, sender=sender, recipient=recipient, message_id=message_id, thread=thread
    )


def followup_message(
    decision: DecisionView, *, sender: str, recipient: str, message_id: str, thread: str
) -> EmailMessage:
    """The short "how it ended" note, threaded under the request."""
    context = {"d": decision, "ending": ending(decision), "arguments": arguments_text(decision)}
    return _message(
        "followup", context, decision, sender=sender, recipient=recipient, message_id=message_id, thread=thread
    )


def _message(
    template: str,
    context: dict,
    decision: DecisionView,
    *,
    sender: str,
    recipient: str,
    message_id: str,
    thread: str | None,
) -> EmailMessage:
    """One mail about `decision` from `template` (.txt and .html); a reply in `thread` when given."""
    message = EmailMessage()
    message["Subject"] = ("Re: " if thread else "") + subject(decision)
    message["From"] = sender
    message["To"] = recipient
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = message_id
    if thread:
        message["In-Reply-To"] = thread
        message["References"] = thread
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation auto-replies to us
    message["X-Auto-Response-Suppress"] = "All"  # the same, for Exchange
    message["X-Holdgate-Decision"] = decision.id
    message.set_content(TEMPLATES.get_template(f"{template}.txt").render(context))
    message.add_alternative(TEMPLATES.get_template(f"{template}.html").render(context), subtype="html")
    return message


def _waiting_for(decision: DecisionView) -> str:
    people = ", ".join(decision.approvers)
    if decision.quorum > 1:
        return f"{decision.quorum} approvals from {people}"
    return f"one approval from {people}"


def _header(value: str) -> str:
    """Names come from upstream servers and grants: no line breaks may reach a header."""
    return _CONTROL.sub(" ", value)
