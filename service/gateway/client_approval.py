"""The `client` approval channel: a held call asks the person at the calling MCP client itself (elicitation).

It is no `ChannelPlugin`: it has no address outside the held request, so it lives at the hold point
(`ApprovalGate`, which owns the request) and is used only while that request is held. A decision whose rule lists
the channel `client` asks when the client declared elicitation:

- URL mode (preferred): a link to the decision's page on the dashboard (`<HOLDGATE_PUBLIC_URL>/decisions/<id>`),
  the signed-in page, never a pre-authenticated link. The person decides there as an approver, with the usual
  checks (who they are, four eyes, quorum). `accept` only means they agreed to open it: the decision still waits.
- Form mode ("Approve / Deny, reason"): only where the rule lists the approver `client`, meaning the person at the
  client may approve their own agent's call. Approve is one vote, named `client:<grant>`
  (`CallHolding.approve_by_client`); the vote check refuses it for any decision whose rule does not list `client`,
  whatever the client sends. When the rule lists the approver `client`, form mode is used even if the client could
  open URLs: that approver is the person at the client, whom the dashboard cannot recognise.
- Declined or dismissed (`decline`, `cancel`), or Deny in the form: the decision is denied with that reason
  (`CallHolding.deny_by_client`, the one compare-and-set, `via="mcp"`), and the held call's audit record says so.
- No answer (the client went away, an error, the call stopped waiting first): nothing changes; the other channels
  still decide. Whichever decides first wins, exactly once.

The two revisions ask differently:

- 2025-11-25 sessions (a back channel): `elicitation/create` on the held request's own stream
  (`related_request_id`), in a task beside the wait (`LiveAsk`); the wait goes on meanwhile (progress, other
  channels). When a URL-mode decision ends, `notifications/elicitation/complete` tells the client. A URL is asked
  once per session and decision, not on every retry of a pending call.
- 2026-07-28 requests (no back channel): the multi round-trip form. The held `tools/call` is answered with an
  `InputRequiredResult` carrying the elicitation and a sealed `requestState` (`service.gateway.sealed_state`); the
  client's retry brings the answer, which is applied once (`redeem`), and the retry then waits like any held call.
  A forged, stale, replayed or other grant's state is -32602 and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import mcp_types as types
from mcp import MCPError
from mcp_types import INVALID_PARAMS
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from service.approvals import AlreadyDecided, ApprovalError, CallHolding, UnknownDecision, approvers_of, iso
from service.background import cancel_and_wait
from service.gateway.mcp_compat import session_connection
from service.gateway.sealed_state import ClientState, SpentStates, invalid_state
from service.policy.channel_names import CLIENT
from service.policy.redaction import storable_text

if TYPE_CHECKING:
    from mcp.server import ServerRequestContext

    from service.approvals.holding import Binding
    from service.models import Decision

logger = logging.getLogger(__name__)

Mode = Literal["form", "url"]
INPUT_KEY = "holdgate_approval"
"""The key of holdgate's question in an `InputRequiredResult`'s `inputRequests` (and the answer's)."""
CLIENT_CAPABILITIES_META_KEY = "io.modelcontextprotocol/clientCapabilities"
REASON_CHARS = 500
"""The longest reason the form asks for (and keeps: a longer one is cut)."""
ARGUMENTS_SHOWN = 400
"""How much of the (redacted) arguments the form's message shows."""
URL_ASKED_KEEP = 10_000
"""Sessions × decisions remembered as already shown their URL (oldest forgotten first)."""

FORM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "decision": {
            "type": "string",
            "title": "Decision",
            "oneOf": [{"const": "approve", "title": "Approve"}, {"const": "deny", "title": "Deny"}],
        },
        "reason": {"type": "string", "title": "Reason", "maxLength": REASON_CHARS},
    },
    "required": ["decision"],
}


def is_modern(ctx: ServerRequestContext) -> bool:
    """A 2026-07-28 request: stateless, no back channel."""
    return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS


def carries_state(ctx: ServerRequestContext) -> bool:
    """Whether this request echoes a `requestState` (a 2026-07-28 retry; the boundary has opened it already)."""
    return isinstance(ctx.params, Mapping) and ctx.params.get("requestState") is not None


def elicitation_modes(ctx: ServerRequestContext) -> tuple[bool, bool]:
    """(form, url): the elicitation modes this request's client declared, in its revision's place (the request's
    own `_meta` on 2026-07-28, `initialize` on 2025-11-25). `elicitation: {}` is form only."""
    capability: Any
    if is_modern(ctx):
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        meta = params.get("_meta")
        declared = meta.get(CLIENT_CAPABILITIES_META_KEY) if isinstance(meta, Mapping) else None
        capability = declared.get("elicitation") if isinstance(declared, Mapping) else None
        if not isinstance(capability, Mapping):
            return False, False
        form, url = capability.get("form"), capability.get("url")
        if form is None and url is None:
            return True, False
        return isinstance(form, Mapping), isinstance(url, Mapping)
    capabilities = ctx.session.client_capabilities
    capability = capabilities.elicitation if capabilities is not None else None
    if capability is None:
        return False, False
    if capability.form is None and capability.url is None:
        return True, False
    return capability.form is not None, capability.url is not None


def lists_client_approver(decision: Decision) -> bool:
    return any(approver["name"] == CLIENT for approver in approvers_of(decision))


@dataclass(frozen=True, slots=True)
class Answer:
    """What the person at the client answered, as holdgate reads it."""

    kind: Literal["approve", "deny", "opened", "none"]
    reason: str | None = None


def read_answer(mode: Mode, result: types.ElicitResult) -> Answer:
    """The person's answer: decline / cancel deny (with that reason); a URL `accept` only opened the page; a form
    `accept` approves or denies as chosen (a form without a valid choice is no answer)."""
    if result.action == "decline":
        return Answer("deny", "the person at the client declined the approval request")
    if result.action == "cancel":
        return Answer("deny", "the person at the client dismissed the approval request")
    if mode == "url":
        return Answer("opened")
    content = result.content or {}
    choice, reason = content.get("decision"), content.get("reason")
    reason = storable_text(reason.strip()[:REASON_CHARS]) if isinstance(reason, str) and reason.strip() else None
    if choice == "approve":
        return Answer("approve", reason)
    if choice == "deny":
        return Answer("deny", f"denied at the client: {reason}" if reason else "denied at the client (no reason given)")
    return Answer("none")


class ClientApproval:
    """Asks the person at the client about a held call's decision, and applies their answer exactly once."""

    def __init__(self, holding: CallHolding, *, public_url: str | None, spent: SpentStates) -> None:
        self.holding = holding
        self.public_url = public_url.rstrip("/") if public_url else None
        self.spent = spent
        self._url_asked: OrderedDict[tuple[str, str], None] = OrderedDict()

    # -- which mode ------------------------------------------------------------------------------

    def mode_for(self, decision: Decision, ctx: ServerRequestContext) -> Mode | None:
        """How to ask about `decision` on this request, or None (the rule does not list `client`, the client cannot
        elicit as needed, or URL mode has no public URL to point at)."""
        if decision.status != "pending" or CLIENT not in decision.channels.split(","):
            return None
        form, url = elicitation_modes(ctx)
        if lists_client_approver(decision) and form:
            return "form"
        if url and self.public_url is not None:
            return "url"
        return None

    def page_of(self, decision: Decision) -> str:
        assert self.public_url is not None
        return f"{self.public_url}/decisions/{decision.id}"

    def message(self, decision: Decision, mode: Mode) -> str:
        call = f"{decision.server}/{decision.tool}"
        expires = iso(decision.expires_at)
        if mode == "url":
            return (
                f"holdgate: your agent (grant {decision.grant}) asks to run {call}, which needs a person's approval "
                f"(decision {decision.id}, expires {expires}). Open the decision page and sign in to approve or deny "
                "it, if you are one of its approvers."
            )
        arguments = decision.arguments
        if len(arguments) > ARGUMENTS_SHOWN:
            arguments = arguments[:ARGUMENTS_SHOWN] + "…"
        reason = f" ({decision.reason})" if decision.reason else ""
        return (
            f"holdgate: your agent (grant {decision.grant}) asks to run {call} with {arguments}; rule "
            f"{decision.rule}{reason} needs approval (decision {decision.id}, expires {expires}). Approve or deny it."
        )

    def request_params(
        self, decision: Decision, mode: Mode, elicitation_id: str | None = None
    ) -> types.ElicitRequestFormParams | types.ElicitRequestURLParams:
        if mode == "url":
            return types.ElicitRequestURLParams(
                message=self.message(decision, mode), url=self.page_of(decision), elicitation_id=elicitation_id
            )
        return types.ElicitRequestFormParams(message=self.message(decision, mode), requested_schema=FORM_SCHEMA)

    # -- applying an answer ------------------------------------------------------------------------

    async def apply(self, decision: Decision, grant: str, mode: Mode, result: types.ElicitResult) -> None:
        """Act on the person's answer, once, through the approvals' public API (another channel may have won)."""
        answer = read_answer(mode, result)
        if answer.kind == "deny":
            assert answer.reason is not None
            ended = await self.holding.deny_by_client(decision.id, grant=grant, reason=answer.reason)
            logger.info(
                "decision %s: the client %s (%s)",
                decision.id,
                "denied it" if ended is not None else "denied it after it had ended",
                result.action,
            )
        elif answer.kind == "approve":
            try:
                outcome = await self.holding.approve_by_client(decision.id, grant=grant, reason=answer.reason)
            except AlreadyDecided:
                logger.info("decision %s: the client's approval came after it had ended", decision.id)
            except ApprovalError as exc:  # NotAllowed: the rule does not let the client approve
                logger.warning("decision %s: the client's approval was refused: %s", decision.id, exc)
            else:
                logger.info("decision %s: %s", decision.id, outcome.message)
        elif answer.kind == "opened":
            logger.info("decision %s: the person at the client opened the decision page", decision.id)
        else:
            logger.info("decision %s: the client answered the form without a decision", decision.id)

    # -- 2025-11-25: asking live on the held request's stream ---------------------------------------

    def start(self, decision: Decision, grant: str, ctx: ServerRequestContext) -> LiveAsk | None:
        """Ask now, beside the wait, on a session that has a back channel; None when there is nothing to ask."""
        if is_modern(ctx) or not ctx.session.can_send_request:
            return None
        mode = self.mode_for(decision, ctx)
        if mode is None:
            return None
        elicitation_id: str | None = None
        if mode == "url":
            key = (_session_key(ctx), decision.id)
            if key in self._url_asked:
                return None  # this session was shown the page already (a retry of the pending call)
            self._url_asked[key] = None
            while len(self._url_asked) > URL_ASKED_KEEP:
                self._url_asked.popitem(last=False)
            elicitation_id = f"holdgate-{decision.id}-{secrets.token_urlsafe(8)}"
        task = asyncio.get_running_loop().create_task(
            self._ask(decision, grant, mode, elicitation_id, ctx), name=f"client-approval:{decision.id}"
        )
        return LiveAsk(task, mode, elicitation_id, ctx)

    async def _ask(
        self, decision: Decision, grant: str, mode: Mode, elicitation_id: str | None, ctx: ServerRequestContext
    ) -> None:
        params = self.request_params(decision, mode, elicitation_id)
        try:
            if isinstance(params, types.ElicitRequestURLParams):
                assert elicitation_id is not None
                result = await ctx.session.elicit_url(
                    params.message, params.url, elicitation_id, related_request_id=ctx.request_id
                )
            else:
                result = await ctx.session.elicit_form(params.message, FORM_SCHEMA, related_request_id=ctx.request_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # an error answer, a client that went away, a malformed result: no answer
            logger.info("decision %s: the client gave no answer to the %s elicitation (%s)", decision.id, mode, exc)
            return
        await self.apply(decision, grant, mode, result)

    # -- 2026-07-28: the multi round-trip form -------------------------------------------------------

    def input_required(self, decision: Decision, grant: str, ctx: ServerRequestContext) -> dict[str, Any] | None:
        """The `InputRequiredResult` asking the person, with the state the boundary seals; None: nothing to ask."""
        mode = self.mode_for(decision, ctx)
        if mode is None:
            return None
        params = self.request_params(decision, mode)
        return {
            "resultType": "input_required",
            "inputRequests": {
                INPUT_KEY: {
                    "method": "elicitation/create",
                    "params": params.model_dump(by_alias=True, mode="json", exclude_none=True),
                }
            },
            "requestState": ClientState.new(decision.id, grant, mode).plaintext(),
        }

    async def redeem(self, ctx: ServerRequestContext, grant: str, binding: Binding) -> bool:
        """A 2026-07-28 retry's `requestState` (opened by the boundary) and answer: checked, spent once, applied.
        False: the request carries no state (a first round). Raises -32602, changing nothing, for a state that is
        not this grant's, not this call's decision, already spent, or an answer that is no elicitation result."""
        if not carries_state(ctx):
            return False
        params = ctx.params if isinstance(ctx.params, Mapping) else {}
        state = ClientState.parse(params["requestState"])
        if state.grant != grant:
            raise invalid_state()
        try:
            decision = await self.holding.load(state.decision_id)
        except UnknownDecision:
            raise invalid_state() from None
        same_call = (decision.grant, decision.server, decision.tool, decision.args_sha256) == (
            binding.grant,
            binding.server,
            binding.tool,
            binding.args_sha256,
        )
        if not same_call:
            raise invalid_state()
        responses = params.get("inputResponses")
        answer = responses.get(INPUT_KEY) if isinstance(responses, Mapping) else None
        result: types.ElicitResult | None = None
        if answer is not None:
            try:
                result = types.ElicitResult.model_validate(answer)
            except ValidationError:
                raise invalid_answer() from None
        if not await self.spent.spend(state.id):
            raise invalid_state()  # replayed
        if result is not None:
            mode: Mode = "form" if state.mode == "form" else "url"
            await self.apply(decision, grant, mode, result)
        return True


class TaskQuestions:
    """The client channel for a held task of the 2026-07-28 tasks extension: while its decision is pending, `tasks/get`
    shows the task `input_required` with holdgate's question in `inputRequests`, and `tasks/update` brings the answer,
    applied once per task (its key is then answered: the task shows `working` again, as the extension says keys are
    unique over a task's lifetime). "Once" holds across replicas: the answer spends `task:<task id>` in
    `spent_request_states`, as a round's state is spent."""

    def __init__(self, client: ClientApproval) -> None:
        self.client = client

    async def asking(self, task_id: str, decision: Decision, ctx: ServerRequestContext) -> dict[str, Any] | None:
        """The `inputRequests` a `tasks/get` shows for this task now, or None (nothing to ask, or already answered)."""
        mode = self.client.mode_for(decision, ctx)
        if mode is None or await self.client.spent.spent(_task_key(task_id)):
            return None
        params = self.client.request_params(decision, mode)
        return {
            INPUT_KEY: {
                "method": "elicitation/create",
                "params": params.model_dump(by_alias=True, mode="json", exclude_none=True),
            }
        }

    async def answer(
        self, task_id: str, grant: str, decision: Decision, ctx: ServerRequestContext, responses: object
    ) -> None:
        """A `tasks/update`'s `inputResponses`: holdgate's key answered once, in the mode `tasks/get` showed; other
        keys, a repeated answer, or an answer for a decision that has ended are ignored (the extension's SHOULD)."""
        answer = responses.get(INPUT_KEY) if isinstance(responses, Mapping) else None
        if answer is None:
            return
        try:
            result = types.ElicitResult.model_validate(answer)
        except ValidationError:
            raise invalid_answer() from None
        mode = self.client.mode_for(decision, ctx)
        if mode is None or not await self.client.spent.spend(_task_key(task_id)):
            return
        await self.client.apply(decision, grant, mode, result)


def _task_key(task_id: str) -> str:
    return f"task:{task_id}"[:64]


def invalid_answer() -> MCPError:
    """-32602: the retry's answer to holdgate's question is no elicitation result."""
    return MCPError(code=INVALID_PARAMS, message=f"inputResponses.{INPUT_KEY} is not an elicitation result")


def _session_key(ctx: ServerRequestContext) -> str:
    connection = session_connection(ctx.session)
    session_id = getattr(connection, "session_id", None)
    return str(session_id) if session_id is not None else f"connection-{id(connection)}"


class LiveAsk:
    """An elicitation sent on a held 2025-11-25 request, beside its wait."""

    def __init__(self, task: asyncio.Task[None], mode: Mode, elicitation_id: str | None, ctx: ServerRequestContext):
        self.task = task
        self.mode = mode
        self.elicitation_id = elicitation_id
        self.ctx = ctx

    async def finish(self, decision_id: str, ended: bool) -> None:
        """The hold is over: an unanswered question is withdrawn (no answer: nothing changes); a URL one whose
        decision ended is completed (`notifications/elicitation/complete`), so the client stops showing it."""
        with contextlib.suppress(Exception):  # `_ask` logs what the client answered, or did not
            await cancel_and_wait(self.task)
        if ended and self.mode == "url" and self.elicitation_id is not None:
            try:
                await self.ctx.session.send_elicit_complete(self.elicitation_id, related_request_id=self.ctx.request_id)
            except Exception as exc:  # the stream may be gone: the notification is a courtesy
                logger.info("decision %s: elicitation/complete not sent (%s)", decision_id, exc)
