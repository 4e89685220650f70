"""The console channel: the decision and the commands that decide it, in the service's log.

The default when no Slack or email is configured, so `make run` shows the whole approval flow with
nothing else set up: the operator reads the request in the terminal and answers with the CLI.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from service.approvals import DecisionView
from service.approvals.channels import Channel, MessageKind

if TYPE_CHECKING:
    from fastapi import APIRouter

    from service.settings import Settings

logger = logging.getLogger("holdgate.console")


class ConsoleChannel:
    name = "console"

    async def deliver(self, kind: MessageKind, decision: DecisionView, ref: str | None) -> str | None:
        logger.warning(self.render(kind, decision))
        return None

    @staticmethod
    def render(kind: MessageKind, decision: DecisionView) -> str:
        call = f"{decision.server}/{decision.tool} {json.dumps(decision.arguments, ensure_ascii=False)}"
        if kind in ("request", "reminder"):
            head = "APPROVAL NEEDED" if kind == "request" else "REMINDER: still waiting"
            who = ", ".join(decision.approvers) or "the local operator"
            text = (
                f"{head} {decision.id}: grant '{decision.grant}' wants to call {call} "
                f"(rule {decision.rule}; approvers {who}; expires {decision.expires_at}).\n"
                f"    approve: holdgate approve {decision.id}\n"
                f"    deny:    holdgate deny {decision.id} --reason '...'"
            )
            change = decision.tool_change
            if change is not None and kind == "request":
                text += (
                    f"\n    TOOL DEFINITION {'NEW' if change.kind == 'new' else 'CHANGED'}: {change.summary}\n"
                    f"    review:  holdgate tools diff {decision.server} {decision.tool}\n"
                    f"    accept:  holdgate tools accept {decision.server} {decision.tool} "
                    f"--sha256 {change.current_sha256}\n"
                    + "\n".join("    | " + line for line in change.diff.splitlines())
                )
            return text
        if decision.status == "pending" or decision.lapsed:  # the agent stopped waiting; an approval lapsed
            return f"decision {decision.id}: {decision.state}"
        if decision.execution is not None:
            return f"decision {decision.id}: released call {call} ended {decision.execution.outcome}"
        reason = f": {decision.reason}" if decision.reason else ""
        return f"decision {decision.id} {decision.status} by {decision.decided_by}{reason}"


class ConsolePlugin:
    """The console as a plug-in: always configured, no inbound HTTP (the CLI decides), no contacts."""

    def __init__(self) -> None:
        self.name = ConsoleChannel.name
        self.router: APIRouter | None = None
        self.check_contact: Callable[[str], str | None] | None = None

    def build(self, settings: Settings) -> Channel | None:
        return ConsoleChannel()


plugin = ConsolePlugin()
