"""The MCP face of each upstream server: low-level `Server` handlers that enforce policy and forward.

One `ServerProxy` per entry of servers.json. Downstream sessions (2025-11-25 era, with an
`Mcp-Session-Id`) each get an upstream session of their own for their whole life, opened on
first use and closed with the downstream session; that keeps elicitation, sampling, logging
and list_changed traffic between the two ends that belong together. Stateless requests
(2026-07-28 era) have no session to tie to and share one upstream session per server.

Every `tools/call` goes through `GatewayCore.call_tool`: policy verdict, then the rate limit,
then the upstream; each ending is audited off the call's path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import mcp_types as types
from annotated_types import MaxLen
from mcp import MCPError
from mcp.server import Server, ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions
from mcp.server.models import InitializationOptions
from mcp.server.request_state import RequestStateSecurity
from mcp.shared.message import ServerMessageMetadata
from mcp_types import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import BaseModel
from sqlmodel import SQLModel

from service import logcontext, tracing
from service.audit.service import AuditRecord, AuditWriter
from service.gateway.calls import ToolCall
from service.gateway.client_approval import TaskQuestions
from service.gateway.hold import ApprovalGate, progress_token_of
from service.gateway.mcp_compat import only_seen_sdk_spans, session_connection
from service.gateway.sealed_state import state_boundary
from service.gateway.servers import ServerSpec
from service.gateway.spares import SpareUpstream
from service.gateway.task_notify import TaskWatchers
from service.gateway.task_passthrough import UpstreamTasks, live_2025, live_2026
from service.gateway.task_wire import (
    TaskAugmentation,
    TaskMethods,
    created,
    is_modern,
    server_capabilities,
    task_request_2026,
)
from service.gateway.tasks import ERA_2025, HeldTasks, TaskRequest
from service.gateway.upstream import UpstreamClient, UpstreamInfo, UpstreamUnavailable, call_upstream
from service.models import AuditEvent, Decision
from service.policy import Verdict, with_tool_change
from service.policy import limits as rate_limits
from service.policy.conditions import ConditionFailed
from service.policy.holder import PolicySource
from service.policy.shadow import ShadowPolicy, ShadowVerdict, disagreement
from service.tooldefs import ToolDefinitions

logger = logging.getLogger(__name__)

ResultT = TypeVar("ResultT", bound=BaseModel)

GRANT_SCOPE_KEY = "holdgate.grant"
ACTING_FOR_SCOPE_KEY = "holdgate.acting_for"
"""Whom the request's credentials say the agent acts for (an OAuth token's acting-for claim), set by the edge."""
MAX_TOOL_PAGES = 100
"""Pages of tools/list the start-up probe follows (a server paging forever is cut off, and logged)."""
_LINK_STATE_KEY = "holdgate.link"
TASKED = ("optional", "required")
"""The `taskSupport` values of a tool that may be called as a task."""


def _max_length(model: type[SQLModel], field: str) -> int:
    """The `max_length` a model gives a text field: its column's length."""
    return next(item.max_length for item in model.model_fields[field].metadata if isinstance(item, MaxLen))


TOOL_NAME_MAX = min(_max_length(AuditEvent, "tool"), _max_length(Decision, "tool"))
"""The longest tool name the audit and the decisions can hold (their columns; 200)."""
_UNSTORABLE = frozenset({"Cc", "Cs"})
"""Unicode categories refused in a tool name: control characters (NUL, line breaks, escapes) and lone
surrogates, which no database text column stores and no log or page shows as written."""


def tool_name_problem(name: str) -> str | None:
    """Why holdgate refuses `name` at the edge, or None when it is a name it can hold, show and audit."""
    if not name:
        return "the tool name is empty"
    if len(name) > TOOL_NAME_MAX:
        return f"the tool name is {len(name)} characters long (at most {TOOL_NAME_MAX})"
    if name.isascii() and name.isprintable():  # the common case, without a lookup per character (ASCII's
        return None  # unprintable characters are exactly its control characters; it has no surrogates)
    bad = next((c for c in name if unicodedata.category(c) in _UNSTORABLE), None)
    if bad is not None:
        kind = "a control character" if unicodedata.category(bad) == "Cc" else "an unpaired surrogate"
        return f"the tool name contains U+{ord(bad):04X}, {kind}"
    return None


def storable_tool_name(name: str) -> str:
    """`name` as the audit records a refused call: control characters escaped, cut to the column's length."""
    shown = "".join(f"\\u{ord(c):04x}" if unicodedata.category(c) in _UNSTORABLE else c for c in name)
    return shown if len(shown) <= TOOL_NAME_MAX else shown[: TOOL_NAME_MAX - 1] + "…"


@dataclass
class GatewayCore:
    """What every proxy shares: the policy, the rate limiter's store, the audit writer, the clock."""

    policy: PolicySource
    audit: AuditWriter
    sessions: Any  # async_sessionmaker for rate counters
    config_dir: Path
    upstream_connections: int
    """Each upstream HTTP session's pool for tools/call (`HOLDGATE_UPSTREAM_CONNECTIONS`)."""
    clock: Callable[[], float] = time.time
    approvals: ApprovalGate | None = None
    """The hold point of `require_approval` calls (`service.gateway.hold`); None: no approval flow here."""
    filter_tools: bool = True
    connect_timeout: float = 30.0
    shadow: ShadowPolicy | None = None
    """The shadow policy evaluated beside the enforced one (`service.policy.shadow`); None: no shadowing here."""
    tool_definitions: ToolDefinitions | None = None
    """The pinned tool definitions (`service.tooldefs`); None: definitions are not checked (tests of other parts)."""
    tasks: HeldTasks | None = None
    """Held calls as MCP tasks (`service.gateway.tasks`); None: tasks are neither declared nor served."""
    request_state: RequestStateSecurity | None = None
    """How the `client` channel's 2026-07-28 `requestState` is sealed and opened (`service.gateway.sealed_state`);
    None: the channel's 2026-07-28 rounds are not served here (tests of other parts)."""
    task_watchers: TaskWatchers | None = None
    """Who hears of a 2025-11-25 task's status changes (`service.gateway.task_notify`); None: nobody."""


def acting_for_of(ctx: ServerRequestContext) -> str | None:
    """Whom the request's OAuth token says the agent acts for, if it says (set on the ASGI scope by the edge)."""
    request = ctx.request
    value = request.scope.get(ACTING_FOR_SCOPE_KEY) if request is not None else None
    return value if isinstance(value, str) and value else None


def state_principal(ctx: ServerRequestContext) -> str | None:
    """Whom a sealed `requestState` is bound to: the grant the edge authenticated, and the person its credentials say
    it acts for (`service.gateway.sealed_state`)."""
    request = ctx.request
    grant = request.scope.get(GRANT_SCOPE_KEY) if request is not None else None
    if not grant:
        return None
    return json.dumps([grant, acting_for_of(ctx)])


def grant_of(ctx: ServerRequestContext) -> str:
    """The grant the HTTP edge authenticated for this request (set on the ASGI scope)."""
    request = ctx.request
    grant = request.scope.get(GRANT_SCOPE_KEY) if request is not None else None
    if not grant:  # the edge never lets an unauthenticated request through; fail closed anyway
        raise MCPError(code=INVALID_PARAMS, message="no grant on this request")
    return grant


def claim_lost_message(decision_id: str, tool: str) -> str:
    return (
        f"holdgate: the release of decision {decision_id} lapsed on this gateway replica before the call was sent "
        f"(it could not renew its claim); the call was not run. Call {tool} again with the same arguments: the "
        "approval stays and runs it once."
    )


RELEASE_REFUSALS = ("policy_denied", "policy_changed", "rate_limited")
"""Endings of an approved call that the release check did not let run (`service.approvals.recheck`)."""


def tool_error(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


class ServerProxy:
    """The downstream MCP server for one upstream: builds the `Server` and the upstream links."""

    def __init__(self, spec: ServerSpec, core: GatewayCore) -> None:
        self.spec = spec
        self.core = core
        self.name = spec.name
        self.info: UpstreamInfo | None = None
        self._shared: UpstreamClient | None = None
        self._shared_lock = asyncio.Lock()
        self.spare: SpareUpstream | None = None
        """A started upstream for the next new session (stdio servers; set by the app, `spares.py`)."""
        self.origins: set[str] = set()
        """Every shared upstream connection this process opened (`UpstreamClient.connection_id`): where the tasks
        the upstream makes live (`task_passthrough`)."""
        self._task_support: dict[str, str] = {}
        """The upstream's `taskSupport` by tool, as it last listed them (its tools that do tasks)."""
        self._task_support_listed = False
        self.upstream_tasks: UpstreamTasks | None = (
            UpstreamTasks(
                core.tasks.store,
                upstream=self.shared_upstream,
                origins=self.origins,
                max_ttl_s=core.tasks.max_ttl_s,
                poll_interval_ms=core.tasks.poll_interval_ms,
            )
            if core.tasks is not None
            else None
        )
        self.server: Server[Any] = self._build_server()

    # -- life cycle ---------------------------------------------------------------------------

    async def probe(self) -> None:
        """Connect once at start-up to learn the upstream's capabilities; keep it as the shared session."""
        try:
            upstream = await self.shared_upstream()
        except UpstreamUnavailable as exc:
            logger.warning("%s (will retry on first use)", exc.error.message)
        else:
            await self.record_tools(upstream)
        self.server = self._build_server()

    async def record_tools(self, upstream: UpstreamClient) -> None:
        """List every page of the upstream's tools and record their definitions (the first sight of a server, or
        what changed while holdgate was down). A failure is logged: the next tools/list records them."""
        if self.core.tool_definitions is None or self.info is None or self.info.capabilities.tools is None:
            return
        tools: list[types.Tool] = []
        cursor: str | None = None
        try:
            for _ in range(MAX_TOOL_PAGES):
                page = await asyncio.wait_for(_list_tools_page(upstream, cursor), self.core.connect_timeout)
                tools += page.tools
                cursor = page.next_cursor
                if cursor is None:
                    break
            else:
                logger.warning(
                    "upstream %s: more than %d pages of tools; recorded as listed", self.name, MAX_TOOL_PAGES
                )
        except (MCPError, TimeoutError) as exc:
            logger.warning("upstream %s: could not list its tools at start-up: %s", self.name, exc)
            return
        await self.observe_tools(tools, complete=cursor is None)

    async def observe_tools(self, tools: list[types.Tool], *, complete: bool) -> None:
        """Tell the pinned definitions what this upstream lists (names holdgate refuses at the edge left out)."""
        definitions = self.core.tool_definitions
        if definitions is None:
            return
        listed = [
            tool.model_dump(by_alias=True, mode="json", exclude_none=True)
            for tool in tools
            if tool_name_problem(tool.name) is None
        ]
        await definitions.observe(self.name, listed, complete=complete)

    @property
    def modern_only(self) -> bool:
        """The upstream refused `initialize` when it was probed: it speaks the stateless revision only, and every
        session with it is opened with `server/discover`."""
        return self.info is not None and self.info.protocol_version in MODERN_PROTOCOL_VERSIONS

    @property
    def upstream_connected(self) -> bool:
        """Whether the shared upstream session (opened at start-up, reopened on use) is connected now."""
        return self.info is not None and self._shared is not None and self._shared.alive

    async def aclose(self) -> None:
        if self._shared is not None:
            await self._shared.aclose()

    async def shared_upstream(self) -> UpstreamClient:
        """The session used by stateless requests; restarted when it died."""
        async with self._shared_lock:
            if self._shared is None or not self._shared.alive:
                if self._shared is not None:
                    await self._shared.aclose()
                client = UpstreamClient(
                    self.spec,
                    listener=None,
                    config_dir=self.core.config_dir,
                    connect_timeout=self.core.connect_timeout,
                    connections=self.core.upstream_connections,
                    modern_only=self.modern_only,
                )
                self.info = await client.start()
                self._shared = client
                self.origins.add(client.connection_id)
            return self._shared

    async def upstream_for(self, ctx: ServerRequestContext | None) -> tuple[UpstreamClient, DownstreamLink | None]:
        """The upstream session that belongs to this request's downstream session (none: the shared one)."""
        connection = session_connection(ctx.session) if ctx is not None else None
        if connection is None or connection.session_id is None:
            return await self.shared_upstream(), None
        link = connection.state.get(_LINK_STATE_KEY)
        if link is None:
            link = DownstreamLink(self, connection)
            connection.state[_LINK_STATE_KEY] = link
            connection.exit_stack.push_async_callback(link.aclose)
        return await link.upstream(), link

    # -- the Server ---------------------------------------------------------------------------

    def _build_server(self) -> Server[Any]:
        caps = self.info.capabilities if self.info else None
        handlers: dict[str, Any] = {"on_list_tools": self.list_tools, "on_call_tool": self.call_tool}
        if caps is None or caps.resources is not None:
            handlers |= {
                "on_list_resources": self.list_resources,
                "on_list_resource_templates": self.list_resource_templates,
                "on_read_resource": self.read_resource,
            }
            if caps is None or (caps.resources is not None and caps.resources.subscribe):
                handlers |= {
                    "on_subscribe_resource": self.subscribe,
                    "on_unsubscribe_resource": self.unsubscribe,
                }
        if caps is None or caps.prompts is not None:
            handlers |= {"on_list_prompts": self.list_prompts, "on_get_prompt": self.get_prompt}
        if caps is None or caps.completions is not None:
            handlers["on_completion"] = self.complete
        info = self.info.server_info if self.info else None
        server = _MirroringServer(
            f"holdgate/{self.name}",
            tasks=self.core.tasks is not None,
            version=info.version if info else "",
            title=info.title if info else None,
            instructions=self.info.instructions if self.info else None,
            **handlers,
        )
        only_seen_sdk_spans(server)  # the SDK's span per request, when anything can see it
        server.notification_options = NotificationOptions(
            prompts_changed=bool(caps and caps.prompts and caps.prompts.list_changed),
            resources_changed=bool(caps and caps.resources and caps.resources.list_changed),
            tools_changed=True,  # policy reloads change what a grant sees
        )
        if caps is None or caps.logging is not None:
            server.add_request_handler("logging/setLevel", types.SetLevelRequestParams, self.set_logging_level)
        if self.core.request_state is not None:
            # First: a client-channel retry's `requestState` is opened (or refused, -32602) before anything reads it.
            server.middleware.insert(0, state_boundary(self.core.request_state, f"holdgate/{self.name}"))
        if self.core.tasks is not None:
            server.middleware.append(TaskAugmentation(self.call_tool_as_task))
            client = self.core.approvals.client if self.core.approvals is not None else None
            questions = TaskQuestions(client) if client is not None else None
            TaskMethods(
                self.core.tasks, grant_of, questions, server=self.name, upstream_tasks=self.upstream_tasks
            ).register(server)
        return server

    # -- handlers -----------------------------------------------------------------------------

    async def list_tools(
        self, ctx: ServerRequestContext, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        grant = grant_of(ctx)
        upstream, _ = await self.upstream_for(ctx)
        result = await call_upstream(upstream, lambda s: s.list_tools(params=upstream.params_for(params)))
        await self.observe_tools(
            result.tools, complete=(params is None or params.cursor is None) and not result.next_cursor
        )
        policy = self.core.policy.current
        upstream_tasks = self.core.tasks is not None and self.upstream_does_tasks
        if upstream_tasks:
            self._note_task_support(result.tools)
        tools = []
        for tool in result.tools:
            if self.core.filter_tools and not policy.visible(grant, self.name, tool.name):
                continue
            support = tool.execution.task_support if upstream_tasks and tool.execution is not None else None
            execution: types.ToolExecution | None = None
            if self.core.tasks is not None and policy.may_hold(grant, self.name, tool.name):
                # A call that waits for a person may be a task (2025-11-25; 2026-07-28 drops `execution`). Optional
                # even where the upstream requires a task: holdgate calls such a tool as a task itself once approved.
                execution = types.ToolExecution(task_support="optional")
            elif support in TASKED:
                execution = types.ToolExecution(task_support=support)  # the upstream's own tasks, passed through
            if tool.execution != execution:
                tool = tool.model_copy(update={"execution": execution})
            tools.append(tool)
        return types.ListToolsResult(tools=tools, next_cursor=result.next_cursor)

    # -- the upstream's own tasks -------------------------------------------------------------------

    @property
    def upstream_does_tasks(self) -> bool:
        """Whether the upstream declared task support for `tools/call` (2025-11-25; see `UpstreamClient.does_tasks`)."""
        return self._shared is not None and self.info is not None and self._shared.does_tasks

    def _note_task_support(self, tools: list[types.Tool]) -> None:
        for tool in tools:
            support = tool.execution.task_support if tool.execution is not None else None
            if support in TASKED:
                self._task_support[tool.name] = support
            else:
                self._task_support.pop(tool.name, None)

    async def upstream_task_support(self, tool: str) -> str | None:
        """The upstream's `taskSupport` for `tool` when it does tasks (`optional`, `required`), else None. Known from
        its `tools/list`; a tool not seen yet has the upstream's tools listed once."""
        if self.core.tasks is None or not self.upstream_does_tasks:
            return None
        if tool not in self._task_support and not self._task_support_listed:
            upstream = await self.shared_upstream()
            cursor: str | None = None
            for _ in range(MAX_TOOL_PAGES):
                page = await _list_tools_page(upstream, cursor)
                self._note_task_support(page.tools)
                cursor = page.next_cursor
                if cursor is None:
                    break
            self._task_support_listed = True
        return self._task_support.get(tool)

    # -- tools/call ---------------------------------------------------------------------------------

    async def call_tool(
        self, ctx: ServerRequestContext, params: types.CallToolRequestParams
    ) -> types.CallToolResult | dict[str, Any]:
        as_task = task_request_2026(ctx) if self.core.tasks is not None else None
        return await self._call(ctx, params, as_task)

    async def call_tool_as_task(
        self, ctx: ServerRequestContext, params: types.CallToolRequestParams, as_task: TaskRequest
    ) -> dict[str, Any]:
        """A 2025-11-25 task-augmented `tools/call` (`TaskAugmentation`): answered with a task, always."""
        grant = grant_of(ctx)
        holds = self.core.policy.current.may_hold(grant, self.name, params.name)
        if not holds and await self.upstream_task_support(params.name) is None:
            # Not listed with taskSupport for this grant: the specification's answer (-32601).
            raise MCPError(
                code=METHOD_NOT_FOUND,
                message=f"holdgate: '{params.name}' does not support tasks here (it never waits for an approval); "
                "call it without `task`",
            )
        answer = await self._call(ctx, params, as_task)
        if isinstance(answer, types.CallToolResult):
            answer = answer.model_dump(by_alias=True, mode="json", exclude_none=True)
        if "task" in answer:
            return answer
        # The policy answered this call at once (allowed, denied, rate-limited): a task that has already ended.
        tasks = self.core.tasks
        assert tasks is not None
        call = ToolCall(grant=grant, server=self.name, tool=params.name, arguments=dict(params.arguments or {}))
        message = "the call was answered at once; its result is ready"
        task = await tasks.finished(call, as_task, result=answer, message=message)
        return created(task, None)

    async def run_released(self, call: ToolCall, record: AuditRecord) -> dict[str, Any]:
        """Run an approved task's call whose release this process claimed (`ReleasedCallRunner`), through the
        shared upstream session: the task outlives the request that asked for it."""
        return await self._forward_call(None, call, record, time.perf_counter(), verdict_label="approved")

    async def _call(
        self, ctx: ServerRequestContext, params: types.CallToolRequestParams, as_task: TaskRequest | None
    ) -> types.CallToolResult | dict[str, Any]:
        """One tools/call, in the log context and the trace span of the call (both free while unused)."""
        call = ToolCall(
            grant=grant_of(ctx),
            server=self.name,
            tool=params.name,
            arguments=dict(params.arguments or {}),
            acting_for=acting_for_of(ctx),
            arguments_absent=params.arguments is None,
        )
        request = ctx.request
        problem = tool_name_problem(call.tool)
        shown_tool = call.tool if problem is None else storable_tool_name(call.tool)
        with (
            logcontext.bound(
                request_id=request.scope.get(logcontext.REQUEST_ID_SCOPE_KEY) if request is not None else None,
                grant=call.grant,
                server=call.server,
                tool=shown_tool,
            ),
            tracing.span(
                "holdgate tools/call",
                {"holdgate.grant": call.grant, "holdgate.server": call.server, "holdgate.tool": shown_tool},
            ),
        ):
            return await self._call_tool(ctx, call, problem, as_task)

    async def _call_tool(
        self, ctx: ServerRequestContext, call: ToolCall, problem: str | None, as_task: TaskRequest | None
    ) -> types.CallToolResult | dict[str, Any]:
        started = time.perf_counter()
        now = self.core.clock()
        policy = self.core.policy.current
        with tracing.span("holdgate policy"):
            verdict = policy.evaluate(call.grant, call.server, call.tool, call.arguments, now=now)
            definitions = self.core.tool_definitions
            if definitions is not None and (change := definitions.change_of(call.server, call.tool)) is not None:
                # Not as a person accepted it: the stricter of the rule and on_tool_change (memory only, no I/O).
                verdict = with_tool_change(verdict, policy.on_tool_change(call.server), change, call.server, call.tool)
        tracing.annotate(verdict=verdict.action, rule=verdict.rule)
        record = AuditRecord.begin(call, verdict, ts=now)

        if problem is not None:
            # Refused before the policy acts (no rate counter, no decision, no upstream), and audited as
            # refused under a name the audit can hold; the arguments keep the redaction the policy gives.
            refused = replace(record, tool=storable_tool_name(call.tool))
            self.core.audit.record(refused.finish("denied", reason=f"refused at the edge: {problem}", started=started))
            raise MCPError(code=INVALID_PARAMS, message=f"holdgate refused the call: {problem}")

        shadow = self.core.shadow
        shadowed = (
            shadow.decide(call.grant, call.server, call.tool, call.arguments, now=now) if shadow is not None else None
        )

        if verdict.action == "deny":
            reason = verdict.reason or "not allowed by policy"
            record = _with_shadow(record, shadowed, "deny")
            self.core.audit.record(record.finish("denied", reason=reason, started=started))
            return tool_error(f"holdgate denied '{call.tool}' on '{call.server}': {reason} (rule {verdict.rule})")

        if verdict.limits:
            amounts = rate_limits.charges(
                verdict.limits, call.arguments, grant=call.grant, server=call.server, tool=call.tool, now=now
            )
            if isinstance(amounts, ConditionFailed):  # an amount that cannot be counted: fail closed
                record = _with_shadow(record, shadowed, "deny")
                self.core.audit.record(record.finish("denied", reason=amounts.reason, started=started))
                return tool_error(
                    f"holdgate denied '{call.tool}' on '{call.server}': {amounts.reason} (rule {verdict.rule})"
                )
            with tracing.span("holdgate rate_limit"):
                limited = await rate_limits.consume(
                    self.core.sessions, verdict.limits, grant=call.grant, now=self.core.clock(), amounts=amounts
                )
                tracing.annotate(allowed=limited.allowed, counter=limited.counter)
            if not limited.allowed:
                retry = limited.retry_after or 0
                record = _with_shadow(record, shadowed, "rate_limited")
                self.core.audit.record(
                    record.finish("rate_limited", reason=f"counter {limited.counter}", started=started)
                )
                return tool_error(
                    f"holdgate rate limit: counter '{limited.counter}' has had its most calls for the window "
                    f"(rule {verdict.rule}); retry_after={retry:g} seconds"
                )

        record = _with_shadow(record, shadowed, verdict.action)
        if verdict.action == "require_approval":
            if as_task is not None and self.core.tasks is not None and self.core.approvals is not None:
                return await self._held_task(ctx, call, verdict, as_task)
            return await self._held_call(ctx, call, verdict, record, started)
        if as_task is not None and self.upstream_tasks is not None and await self.upstream_task_support(call.tool):
            return await self._forward_task(ctx, call, record, started, as_task)
        return await self._forward_call(ctx, call, record, started)

    async def _forward_task(
        self, ctx: ServerRequestContext, call: ToolCall, record: AuditRecord, started: float, as_task: TaskRequest
    ) -> dict[str, Any]:
        """An allowed call to a tool the upstream runs as a task, asked for as a task: sent upstream with `task`
        through the shared upstream session, and the upstream's task answered under a holdgate id (its row)."""
        passed = self.upstream_tasks
        assert passed is not None
        try:
            upstream = await self.shared_upstream()
            with tracing.span("holdgate upstream"):
                row, answer = await passed.create(upstream, call, as_task)
        except UpstreamUnavailable as exc:
            await self._finish(record, "allowed", "upstream_failure", str(exc), started)
            raise
        except MCPError as exc:
            await self._finish(record, "allowed", "protocol_error", str(exc), started)
            raise
        if row is None:  # the upstream answered the call at once
            outcome = "tool_error" if answer.get("isError") is True else "ok"
            await self._finish(record, "allowed", outcome, None, started)
            return {**answer, "resultType": "complete"}
        await self._finish(record, "allowed", "task", f"the upstream's task, passed through as {row.id}", started)
        self._watch(ctx, row.id, as_task)
        if as_task.era == ERA_2025:
            return {"task": live_2025(row, answer)}
        return {"resultType": "task", **live_2026(row, answer)}

    async def _held_task(
        self, ctx: ServerRequestContext, call: ToolCall, verdict: Verdict, as_task: TaskRequest
    ) -> dict[str, Any]:
        """A held call asked for as a task: its decision (opened or joined), and a task backed by it, at once."""
        approvals, tasks = self.core.approvals, self.core.tasks
        assert approvals is not None and tasks is not None
        decision = await approvals.holding.open(call, verdict)
        task = await tasks.start(call, decision, as_task)
        self._watch(ctx, task.id, as_task)
        return created(task, decision)

    def _watch(self, ctx: ServerRequestContext, task_id: str, as_task: TaskRequest) -> None:
        """A 2025-11-25 session that made a task hears of its status changes while connected (best-effort)."""
        if as_task.era == ERA_2025 and self.core.task_watchers is not None:
            self.core.task_watchers.watch(task_id, session_connection(ctx.session))

    async def _held_call(
        self, ctx: ServerRequestContext, call: ToolCall, verdict: Verdict, record: AuditRecord, started: float
    ) -> types.CallToolResult | dict[str, Any]:
        approvals = self.core.approvals
        if approvals is None:
            self.core.audit.record(record.finish("denied", reason="approvals unavailable", started=started))
            return tool_error(
                f"holdgate: '{call.tool}' requires a person's approval (rule {verdict.rule}), and no "
                "approval flow is configured on this gateway, so the call was not run."
            )
        standing = await approvals.covering(call, verdict)
        if standing is not None:
            # A standing approval covers it: run without asking, audited with the standing approval's id.
            covered = replace(
                record,
                standing_id=standing.id,
                reason=f"standing approval {standing.id} ({standing.scope}, by {standing.approved_by}, "
                f"from decision {standing.decision_id})",
            )
            return await self._forward_call(ctx, call, covered, started, verdict_label="approved")
        try:
            with tracing.span("holdgate hold"):
                held = await approvals.hold(call, verdict, ctx)
                tracing.annotate(ending=held.ending)
        except asyncio.CancelledError:
            self.core.audit.record(record.finish("cancelled", outcome="cancelled", started=started))
            raise
        tracing.annotate(decision_id=held.decision_id, ending=held.ending)
        logcontext.bind(decision_id=held.decision_id)
        if held.ending == "input_required" and held.result is not None:
            # 2026-07-28: the client channel's question goes back as the answer; the retry brings the person's reply.
            self.core.audit.record(
                record.finish("pending", reason=held.message, decision_id=held.decision_id, started=started)
            )
            return held.result
        if held.ending == "replayed" and held.result is not None:
            self.core.audit.record(
                record.finish("approved", outcome="replayed", decision_id=held.decision_id, started=started)
            )
            return held.result
        if held.ending in RELEASE_REFUSALS:
            # The release check: the policy now in force does not let the approved call run (or, for an edit, its
            # limits have no room). Audited under that policy's rule, with the reason the agent is given.
            verdict_label = "rate_limited" if held.ending == "rate_limited" else "denied"
            refused = replace(record, rule=held.rule or record.rule)
            self.core.audit.record(
                refused.finish(
                    verdict_label,
                    reason=held.message,
                    outcome=held.ending,
                    decision_id=held.decision_id,
                    started=started,
                )
            )
            return tool_error(held.message)
        if held.ending != "approved":
            self.core.audit.record(
                record.finish(held.ending, reason=held.message, decision_id=held.decision_id, started=started)
            )
            return tool_error(held.message)
        approved = replace(record, decision_id=held.decision_id)
        if held.arguments is not None:
            # Approved with edits: the audit keeps the call as the agent sent it (outcome `edited`, the changes in its
            # detail), then the call as it runs; both redacted by the rule's paths.
            self.core.audit.record(
                approved.finish("approved", outcome="edited", detail=held.edit_note, started=started)
            )
            call = replace(call, arguments=held.arguments, arguments_absent=False)
            redact = tuple(dict.fromkeys((*approved.redact, *held.redact)))
            approved = replace(approved, arguments=held.arguments, redact=redact, detail=held.edit_note)
        return await self._forward_call(ctx, call, approved, started, verdict_label="approved", note=held.edit_note)

    async def _forward_call(
        self,
        ctx: ServerRequestContext | None,
        call: ToolCall,
        record: AuditRecord,
        started: float,
        verdict_label: str = "allowed",
        note: str | None = None,
    ) -> dict[str, Any]:
        """Send the call upstream and answer with its result; `note` (an approval's edit) is said first in it."""

        async def forward_progress(progress: float, total: float | None, message: str | None) -> None:
            if ctx is not None:
                await ctx.session.report_progress(progress, total, message)

        # Progress is asked of the upstream only when the client asked for it: there is nobody else to tell.
        progress = forward_progress if ctx is not None and progress_token_of(ctx) is not None else None
        sent = record.decision_id is None  # a released decision's call is "sent" once marked so, just below
        try:
            upstream, link = await self.upstream_for(ctx)  # opens a session's upstream: before the "sending" mark
            if not sent and self.core.approvals is not None and record.decision_id is not None:
                if not await asyncio.shield(self.core.approvals.sending(record.decision_id)):
                    self.core.audit.record(record.finish(verdict_label, outcome="claim_lost", started=started))
                    return tool_error(claim_lost_message(record.decision_id, call.tool)).model_dump(
                        by_alias=True, mode="json", exclude_none=True
                    )
                sent = True
            with _active(link, ctx), tracing.span("holdgate upstream"):
                if await self._follows_task(ctx, call):
                    result = await upstream.call_tool_following_task(call.tool, call.forwarded_arguments)
                else:
                    result = await upstream.call_tool(call.tool, call.forwarded_arguments, progress)
        except UpstreamUnavailable as exc:
            await self._finish(record, verdict_label, "upstream_failure", str(exc), started, sent=sent)
            raise
        except MCPError as exc:
            await self._finish(record, verdict_label, "protocol_error", str(exc), started, sent=sent)
            raise
        except asyncio.CancelledError:
            await self._finish(record, verdict_label, "cancelled", None, started, sent=sent)
            raise
        outcome = "tool_error" if result.get("isError") is True else "ok"
        if note is not None:
            result = {**result, "content": [{"type": "text", "text": note}, *(result.get("content") or [])]}
        await self._finish(record, verdict_label, outcome, None, started, result=result)
        return result  # JSON: the runner validates it for the client's protocol version as it writes it

    async def _follows_task(self, ctx: ServerRequestContext | None, call: ToolCall) -> bool:
        """Whether holdgate makes this call upstream as a task and waits for its result: the upstream runs the tool
        only as a task (`required`), and its caller was not told so (an approved call, a 2026-era request, a tool
        holdgate lists as `optional` because it may hold it). A 2025-era client told `required` that calls it
        without a task gets the upstream's answer (-32601), as the page says."""
        if await self.upstream_task_support(call.tool) != "required":
            return False
        return ctx is None or is_modern(ctx) or self.core.policy.current.may_hold(call.grant, self.name, call.tool)

    async def _finish(
        self,
        record: AuditRecord,
        verdict: str,
        outcome: str,
        detail: str | None,
        started: float,
        *,
        sent: bool = True,
        result: dict[str, Any] | None = None,
    ) -> None:
        """Audit a forwarded call; a released decision also learns how its execution went (and its result), or,
        when its call never left, gets its claim back for the next identical call."""
        if not sent:
            detail = f"{detail or outcome}; not sent: the approval stays for the same call again"
        if record.detail:  # said of the call before it was sent (an approval's edit)
            detail = f"{record.detail}; {detail}" if detail else record.detail
        finished = record.finish(verdict, outcome=outcome, detail=detail, started=started)
        tracing.annotate(outcome=outcome)
        self.core.audit.record(finished)
        if record.decision_id is not None and self.core.approvals is not None:
            if not sent:
                await asyncio.shield(self.core.approvals.unsent(record.decision_id))
                return
            await asyncio.shield(
                self.core.approvals.executed(
                    record.decision_id,
                    outcome=outcome,
                    detail=detail,
                    duration_ms=finished.duration_ms or 0,
                    result=result,
                )
            )

    async def list_resources(self, ctx, params):
        upstream, _ = await self.upstream_for(ctx)
        return await call_upstream(upstream, lambda s: s.list_resources(params=upstream.params_for(params)))

    async def list_resource_templates(self, ctx, params):
        upstream, _ = await self.upstream_for(ctx)
        return await call_upstream(upstream, lambda s: s.list_resource_templates(params=upstream.params_for(params)))

    async def read_resource(self, ctx, params: types.ReadResourceRequestParams):
        upstream, link = await self.upstream_for(ctx)
        with _active(link, ctx):
            return await call_upstream(upstream, lambda s: s.read_resource(params.uri))

    async def subscribe(self, ctx, params: types.SubscribeRequestParams):
        upstream, _ = await self.upstream_for(ctx)
        return await call_upstream(upstream, lambda s: s.subscribe_resource(params.uri))

    async def unsubscribe(self, ctx, params: types.UnsubscribeRequestParams):
        upstream, _ = await self.upstream_for(ctx)
        return await call_upstream(upstream, lambda s: s.unsubscribe_resource(params.uri))

    async def list_prompts(self, ctx, params):
        upstream, _ = await self.upstream_for(ctx)
        return await call_upstream(upstream, lambda s: s.list_prompts(params=upstream.params_for(params)))

    async def get_prompt(self, ctx, params: types.GetPromptRequestParams):
        upstream, link = await self.upstream_for(ctx)
        with _active(link, ctx):
            return await call_upstream(upstream, lambda s: s.get_prompt(params.name, params.arguments))

    async def complete(self, ctx, params: types.CompleteRequestParams):
        upstream, _ = await self.upstream_for(ctx)
        request = types.CompleteRequest(params=upstream.params_for(params))
        return await call_upstream(upstream, lambda s: s.send_request(request, types.CompleteResult))

    async def set_logging_level(self, ctx, params: types.SetLevelRequestParams):
        upstream, _ = await self.upstream_for(ctx)
        return await call_upstream(upstream, lambda s: s.set_logging_level(params.level))


def _with_shadow(record: AuditRecord, shadowed: ShadowVerdict | None, enforced: str) -> AuditRecord:
    """The record carrying the shadow policy's verdict and rule where its action differs from `enforced`."""
    differs = disagreement(shadowed, enforced)
    if differs is None:
        return record
    return replace(record, shadow_verdict=differs.action, shadow_rule=differs.rule)


async def _list_tools_page(upstream: UpstreamClient, cursor: str | None) -> types.ListToolsResult:
    params = types.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
    return await call_upstream(upstream, lambda session: session.list_tools(params=params))


class _MirroringServer(Server[Any]):
    """A `Server` whose advertised list_changed flags mirror the upstream's, and that declares tasks (in the
    client's revision's way) when the gateway serves them."""

    notification_options: NotificationOptions | None = None

    def __init__(self, name: str, *, tasks: bool = False, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.tasks = tasks

    def get_capabilities(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
        *,
        protocol_version: str | None = None,
    ) -> types.ServerCapabilities:
        capabilities = super().get_capabilities(
            notification_options, experimental_capabilities, extensions, protocol_version=protocol_version
        )
        return server_capabilities(capabilities, protocol_version) if self.tasks else capabilities

    def create_initialization_options(
        self,
        notification_options: NotificationOptions | None = None,
        experimental_capabilities: dict[str, dict[str, Any]] | None = None,
        extensions: dict[str, dict[str, Any]] | None = None,
    ) -> InitializationOptions:
        return super().create_initialization_options(
            notification_options or self.notification_options, experimental_capabilities, extensions
        )


class _active:
    """Marks a downstream request as in flight on a link, so upstream callbacks can ride its stream."""

    def __init__(self, link: DownstreamLink | None, ctx: ServerRequestContext | None) -> None:
        self._link, self._ctx = link, ctx

    def __enter__(self) -> None:
        if self._link is not None and self._ctx is not None:
            self._link.in_flight.append(self._ctx)

    def __exit__(self, *exc: object) -> None:
        if self._link is not None and self._ctx is not None:
            self._link.in_flight.remove(self._ctx)


@dataclass(eq=False)
class DownstreamLink:
    """One downstream session and the upstream session that belongs to it."""

    proxy: ServerProxy
    connection: Any
    in_flight: list[ServerRequestContext] = field(default_factory=list)
    _client: UpstreamClient | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def upstream(self) -> UpstreamClient:
        """This session's upstream; (re)started on use when absent or dead."""
        client = self._client
        if client is not None and client.alive:
            return client
        async with self._lock:
            if self._client is None or not self._client.alive:
                if self._client is not None:
                    await self._client.aclose()
                    logger.info("upstream %s: restarting after it went away", self.proxy.name)
                self._client = None
                spare = self.proxy.spare
                client = await spare.take(self) if spare is not None else None
                if client is None:
                    client = UpstreamClient(
                        self.proxy.spec,
                        listener=self,
                        config_dir=self.proxy.core.config_dir,
                        connect_timeout=self.proxy.core.connect_timeout,
                        connections=self.proxy.core.upstream_connections,
                        modern_only=self.proxy.modern_only,
                    )
                    await client.start()
                self._client = client
            return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    # -- UpstreamListener: route what the upstream sends to this downstream session ---------

    def _route(self) -> ServerRequestContext | None:
        return self.in_flight[-1] if self.in_flight else None

    async def _ask_client(self, request: types.ServerRequest, result_type: type[ResultT]) -> ResultT | types.ErrorData:
        ctx = self._route()
        try:
            if ctx is not None:
                metadata = ServerMessageMetadata(related_request_id=ctx.request_id)
                return await ctx.session.send_request(request, result_type, metadata=metadata)
            data = request.model_dump(by_alias=True, mode="json", exclude_none=True)
            raw = await self.connection.send_raw_request(data["method"], data.get("params"))
            return result_type.model_validate(raw, by_name=False)
        except MCPError as exc:
            return exc.error
        except Exception as exc:  # no back-channel, client went away
            return types.ErrorData(code=INTERNAL_ERROR, message=f"downstream client unavailable: {exc}")

    async def on_elicit(self, params: types.ElicitRequestParams) -> types.ElicitResult | types.ErrorData:
        return await self._ask_client(types.ElicitRequest(params=params), types.ElicitResult)

    async def on_sampling(
        self, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.ErrorData:
        return await self._ask_client(types.CreateMessageRequest(params=params), types.CreateMessageResult)

    async def on_list_roots(self) -> types.ListRootsResult | types.ErrorData:
        return await self._ask_client(types.ListRootsRequest(), types.ListRootsResult)

    async def on_notification(self, notification: types.ServerNotification) -> None:
        if isinstance(notification, types.ProgressNotification):
            return  # delivered through the per-call progress callback
        ctx = self._route()
        if ctx is not None:
            await ctx.session.send_notification(notification, related_request_id=ctx.request_id)
            return
        data = notification.model_dump(by_alias=True, mode="json", exclude_none=True)
        await self.connection.notify(data["method"], data.get("params"))
