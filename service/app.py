"""The composition root: `build_state(settings)` builds every part of the service, `create_app` serves them.

Everything is built before the server listens: configuration files are loaded (a malformed policy.json
or servers.json refuses to start with the file, the place and the problem), channels and the approvals
domain are built and connected, the gateway core gets its hold point. The lifespan only *starts* what
was built (migrations, the audit writer, channels, timers, upstreams) and stops it, so a route never
meets a part that is not there yet.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import __version__, db, logcontext
from service.api import audit as audit_api
from service.api import decisions as decisions_api
from service.api import health as health_api
from service.api import problems
from service.api import resource_metadata as resource_metadata_api
from service.api import standing as standing_api
from service.api import tools as tools_api
from service.approvals.channels import Channel, load_plugins
from service.approvals.wiring import Approvals, build_approvals, build_channels
from service.audit.keys import ArgsDigester
from service.audit.service import AuditWriter
from service.catalog import Catalogs
from service.configfile import ConfigError
from service.dashboard import router as dashboard_router
from service.dashboard.state import DashboardState
from service.gateway.client_approval import ClientApproval
from service.gateway.hold import ApprovalGate
from service.gateway.proxy import GatewayCore, ServerProxy, state_principal
from service.gateway.sealed_state import SpentStates, state_security
from service.gateway.servers import ServerSpec, StdioServerSpec, load_servers
from service.gateway.spares import SpareUpstream
from service.gateway.task_store import TaskStore
from service.gateway.task_wire import watch_tasks
from service.gateway.tasks import HeldTasks
from service.gateway.transports import McpEndpoint, build_manager
from service.grants.service import GrantResolver
from service.identity import AccessTokenVerifier
from service.locations import OPERATOR_SOCKET_FILE, database_fingerprint
from service.metrics import PendingDecisions
from service.operator.requests import perform as perform_operator_request
from service.operator.socket_server import OperatorSocket
from service.policy.holder import PolicyHolder
from service.policy.shadow import ShadowPolicy
from service.settings import Settings
from service.tooldefs import ToolDefinitions

logger = logging.getLogger(__name__)

API_DESCRIPTION = """The REST API of holdgate, the human-in-the-loop approval gateway for MCP tool calls: list and
decide held calls (`/api/decisions`), read the audit history (`/api/audit`).

Every `/api` route needs a person's token (`Authorization: Bearer …`, the `personToken` scheme). Errors are
RFC 9457 problem details (`application/problem+json`: `type`, `title`, `status`, `detail`, `instance`).
The MCP endpoint, `/mcp/{server}`, is not described here: MCP clients speak JSON-RPC to it."""

GC_THRESHOLDS = (50_000, 20, 20)
"""Python's defaults are (700, 10, 10); see `prepare_serving_process`."""


@dataclass
class AppState:
    """Every part of the running service, built by `build_state`; lives on `app.state.holdgate`.

    Routes reach it through the typed dependencies in `service.api.deps` (and `DashboardDep`)."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    policy: PolicyHolder
    servers: dict[str, ServerSpec]
    catalogs: Catalogs
    audit: AuditWriter
    core: GatewayCore
    endpoint: McpEndpoint
    channels: dict[str, Channel]
    """Approval channels by name: built from settings, or given to `build_state` (tests)."""
    approvals: Approvals
    dashboard: DashboardState
    pending_decisions: PendingDecisions
    """`holdgate_pending_decisions`, counted in the database when /metrics is scraped."""
    shadow: ShadowPolicy
    """The shadow policy beside the enforced one (none loaded while its file is absent or refused)."""
    tool_definitions: ToolDefinitions
    proxies: dict[str, ServerProxy] = field(default_factory=dict)
    """One per upstream server, made when the lifespan starts them (probing is I/O)."""
    serving: bool = False
    """True from the end of start-up to the start of shutdown (`/readyz`)."""
    database_failing: bool = False
    """The database did not answer `/readyz` last time (it logs the failure once, not on every probe)."""


def build_state(
    settings: Settings, *, clock: Callable[[], float] = time.time, channels: dict[str, Channel] | None = None
) -> AppState:
    """Load and check configuration and build every part; raises ConfigError (or ValueError, a channel's
    settings) before anything starts. `clock` and `channels` replace the real ones (tests)."""
    load_plugins(settings.channels)  # first: the policy checks people's contacts with the channels' checks
    policy = PolicyHolder(settings.policy_path, clock=clock)
    shadow = ShadowPolicy(settings.shadow_policy_path)  # never refuses to start: a broken file pauses shadowing
    servers = load_servers(settings.servers_path)
    engine = db.create_engine(settings.effective_database_url)
    sessions = db.session_factory(engine)
    audit = AuditWriter(
        sessions,
        flush_interval=settings.audit.flush_interval_s,
        retention_days=settings.audit.retention_days,
        args_digest=ArgsDigester(sessions, settings.secret_key),
    )
    tool_definitions = ToolDefinitions(
        sessions, audit=audit, clock=clock, refresh_s=settings.tool_definitions.refresh_s
    )
    core = GatewayCore(
        tool_definitions=tool_definitions,
        policy=policy,
        audit=audit,
        sessions=sessions,
        config_dir=settings.config_dir,
        filter_tools=settings.gateway.tools_list_filter,
        connect_timeout=settings.gateway.upstream_connect_timeout_s,
        upstream_connections=settings.gateway.upstream_connections,
        clock=clock,
        shadow=shadow,
    )
    verifier = (
        AccessTokenVerifier(settings.oauth, settings.public_url, clock=clock)
        if settings.oauth.enabled and settings.public_url
        else None
    )
    endpoint = McpEndpoint(GrantResolver(sessions), settings, verifier)
    endpoint.known = set(servers)
    catalogs = Catalogs.load(settings.catalog_dir)
    channels = build_channels(settings) if channels is None else channels
    approvals = build_approvals(
        settings,
        sessions=sessions,
        audit=audit,
        policy=policy,
        channels=channels,
        clock=clock,
        listen_url=settings.effective_database_url if engine.dialect.name == "postgresql" else None,
    )
    core.request_state = state_security(settings.secret_key, state_principal)
    core.approvals = ApprovalGate(
        approvals.holding,
        progress_interval=settings.approvals.progress_interval_s,
        hold_bound=settings.approvals.hold_s,
        client=ClientApproval(approvals.holding, public_url=settings.public_url, spent=SpentStates(sessions, clock)),
    )
    if settings.tasks.enabled:
        core.tasks = HeldTasks(
            TaskStore(sessions, clock),
            approvals.holding,
            policy=policy,
            audit=audit,
            keep_s=settings.tasks.keep_s,
            max_ttl_s=settings.tasks.max_ttl_s,
            poll_interval_ms=settings.tasks.poll_interval_ms,
        )
        core.task_watchers = watch_tasks(core.tasks.store)
    return AppState(
        settings=settings,
        engine=engine,
        sessions=sessions,
        policy=policy,
        servers=servers,
        catalogs=catalogs,
        audit=audit,
        core=core,
        endpoint=endpoint,
        channels=channels,
        approvals=approvals,
        dashboard=DashboardState.build(settings, approvals.service, clock=clock),
        pending_decisions=PendingDecisions(approvals.service.pending_count),
        shadow=shadow,
        tool_definitions=tool_definitions,
    )


def create_app(settings: Settings, *, state: AppState | None = None) -> EdgeRouter:
    """The service; `state` may be prebuilt (`build_state`, with a test's clock or channels)."""
    state = state or build_state(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _quiet_library_logs()
        async with AsyncExitStack() as stack:
            if settings.run_migrations:
                await db.upgrade(state.engine)
            stack.push_async_callback(state.engine.dispose)
            state.audit.start()
            stack.push_async_callback(state.audit.aclose)
            await state.approvals.start(stack)
            await state.tool_definitions.start(stack)  # before the probe, which records what upstreams list
            await _start_gateway(state, stack)
            # Runs first on the way out: calls cut off by the shutdown keep their decisions pending.
            stack.callback(state.approvals.holding.begin_shutdown)
            _answer_held_calls_on_stop_signal(state, stack)
            _watch_policy(state, stack)
            _watch_servers(state, stack)
            _warn_about_replica_settings(settings)
            if settings.operator_socket:
                await _serve_operator_socket(state, stack)
            state.serving = True
            stack.callback(setattr, state, "serving", False)  # runs first on the way out: not ready any more
            logger.info(
                "holdgate %s ready: servers %s, policy %s",
                __version__,
                ", ".join(state.servers) or "(none)",
                state.policy.current.version,
            )
            yield

    # /docs serves Swagger UI from fastapi-offline's pinned copy (no CDN: it works on an air-gapped host).
    app = FastAPIOffline(
        title="holdgate",
        version=__version__,
        description=API_DESCRIPTION,
        lifespan=lifespan,
        redoc_url=None,
        static_url="/docs/static",
    )
    problems.install(app)
    app.state.holdgate = state
    app.include_router(health_api.router)
    app.include_router(audit_api.router)
    app.include_router(decisions_api.router)
    app.include_router(resource_metadata_api.router)
    app.include_router(tools_api.router)
    app.include_router(standing_api.router)
    for plugin in load_plugins(settings.channels):  # each channel's inbound HTTP (Slack's clicks, email's pages)
        if plugin.router is not None:
            app.include_router(plugin.router)
    app.include_router(dashboard_router)
    return EdgeRouter(api=app, mcp=state.endpoint)


class EdgeRouter:
    """The ASGI entry point: `/mcp/...` goes straight to the MCP endpoint, everything else to FastAPI.

    MCP requests are the gateway's hot path. FastAPI's middleware stack (error, telemetry, body
    limit, exception and exit-stack middlewares) and its route matching over every API route give
    them nothing (the MCP endpoint answers its own errors) and cost about a tenth of the gateway's
    CPU per proxied call.
    """

    def __init__(self, *, api: FastAPI, mcp: ASGIApp) -> None:
        self.api = api
        self.mcp = mcp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.api(scope, receive, send)
            return
        request_id = logcontext.request_id_from(_header(scope, b"x-request-id"))
        with logcontext.bound(request_id=request_id):
            send = _answering_request_id(send, request_id)
            root = scope.get("root_path", "")
            path = scope["path"][len(root) :] if root and scope["path"].startswith(root) else scope["path"]
            if path == "/mcp" or path.startswith("/mcp/"):
                scope = {**scope, "root_path": root + "/mcp", logcontext.REQUEST_ID_SCOPE_KEY: request_id}
                await self.mcp(scope, receive, send)
                return
            await self.api(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


def _answering_request_id(send: Send, request_id: str) -> Send:
    """`send` that puts `X-Request-ID` on the response, so a client can quote the id the log lines carry."""
    header = (b"x-request-id", request_id.encode("latin-1"))

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message = {**message, "headers": [*message.get("headers", ()), header]}
        await send(message)

    return sending


async def _start_gateway(state: AppState, stack: AsyncExitStack) -> None:
    """Probe every upstream at once, then serve each through its own session manager."""
    proxies = {name: ServerProxy(spec, state.core) for name, spec in state.servers.items()}
    await asyncio.gather(*(proxy.probe() for proxy in proxies.values()))
    for name, proxy in proxies.items():
        manager = build_manager(proxy, state.settings, state.endpoint.budget)
        await stack.enter_async_context(manager.run())
        stack.push_async_callback(proxy.aclose)
        if state.settings.gateway.stdio_spares and isinstance(proxy.spec, StdioServerSpec):
            timeout = state.core.connect_timeout
            proxy.spare = SpareUpstream(proxy.spec, config_dir=state.core.config_dir, connect_timeout=timeout)
            proxy.spare.start()
            stack.push_async_callback(proxy.spare.aclose)
        state.endpoint.managers[name] = manager
    state.proxies = proxies
    tasks = state.core.tasks
    if tasks is not None:
        tasks.runners.update(proxies)
        stack.push_async_callback(tasks.aclose)
        resumed = await tasks.resume()
        if resumed:
            logger.info("tasks: %d live task(s) resumed from the database", resumed)
        tasks.start_purging(state.settings.tasks.purge_interval_s)


async def _serve_operator_socket(state: AppState, stack: AsyncExitStack) -> None:
    """The local operator's commands, carried out here for the CLI on this host (service/operator/)."""
    settings = state.settings
    operator = OperatorSocket(
        (settings.data_dir / OPERATOR_SOCKET_FILE).resolve(),
        database=database_fingerprint(settings.effective_database_url),
        perform=functools.partial(perform_operator_request, state.approvals.service),
    )
    if await operator.start():
        stack.push_async_callback(operator.aclose)


def prepare_serving_process() -> None:
    """Keep the garbage collector from stalling the event loop; call once, before serving.

    With thousands of held calls alive (each a few hundred objects: tasks, streams, models), the
    default thresholds ran a full collection every few seconds, each stopping the loop for 0.2-1 s:
    10.8 s of 5,000 held calls' 30 s of opening and releasing went to the collector
    (bench_approvals). Freezing what start-up built (the imported libraries, ~170,000 objects) takes
    it out of every collection, and the higher thresholds make collections rarer; cyclic garbage
    still goes, a little later.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _warn_about_replica_settings(settings: Settings) -> None:
    """A shared database means replicas may run; what they sign must verify on every one of them."""
    if settings.secret_key is None and make_url(settings.effective_database_url).get_backend_name() != "sqlite":
        logger.warning(
            "HOLDGATE_SECRET_KEY is not set: dashboard sign-ins are signed with a key of this process only, so "
            "behind a load balancer with several replicas a person is signed out whenever another replica answers "
            "(and email approval links stay off); set the same HOLDGATE_SECRET_KEY on every replica"
        )


def _answer_held_calls_on_stop_signal(state: AppState, stack: AsyncExitStack) -> None:
    """SIGTERM / SIGINT: answer every held call at once ("holdgate is restarting; call again to join d_…"),
    then pass the signal on to the server (uvicorn), which stops listening and waits for open requests.

    The lifespan's own shutdown comes only after that wait, so held calls (which may wait for hours) would
    keep the process up until the server's graceful timeout, then be cut off with "SSE stream ended".
    Their decisions stay pending; the same call after the restart joins its decision.
    """
    loop = asyncio.get_running_loop()

    def stop(sig: signal.Signals, previous: Any) -> None:
        state.approvals.holding.begin_shutdown()
        if callable(previous):
            previous(sig, None)
        else:  # nobody else handles it: the default action, once our part is done
            loop.remove_signal_handler(sig)
            signal.signal(sig, previous)
            signal.raise_signal(sig)

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, stop, sig, previous)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests) or no signals
            continue
        stack.callback(_restore_signal, loop, sig, previous)


def _restore_signal(loop: asyncio.AbstractEventLoop, sig: signal.Signals, previous: Any) -> None:
    loop.remove_signal_handler(sig)
    if previous is not None:
        signal.signal(sig, previous)


def _watch_policy(state: AppState, stack: AsyncExitStack) -> None:
    """Reload the policy and the shadow policy on SIGHUP and on file change; the policy keeps its last good
    version on error, the shadow pauses."""
    loop = asyncio.get_running_loop()

    def reload_both() -> None:
        state.policy.reload()
        state.shadow.reload()

    try:
        loop.add_signal_handler(signal.SIGHUP, reload_both)
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)
    except (NotImplementedError, RuntimeError):  # not the main thread (tests) or no signals
        pass
    if state.settings.watch_policy:
        task = asyncio.create_task(state.policy.watch(), name="policy-watch")
        stack.callback(task.cancel)
        shadow_task = asyncio.create_task(state.shadow.watch(), name="shadow-policy-watch")
        stack.callback(shadow_task.cancel)


def _watch_servers(state: AppState, stack: AsyncExitStack) -> None:
    """servers.json is read at start-up only; watched alongside the policy (`HOLDGATE_WATCH_POLICY`)."""
    if state.settings.watch_policy:
        task = asyncio.create_task(_notice_servers_changes(state), name="servers-watch")
        stack.callback(task.cancel)


async def _notice_servers_changes(state: AppState) -> None:
    """Say at WARNING, naming the file and the servers, that an edit of servers.json needs a restart.

    Upstreams cannot be swapped under live sessions (each downstream session owns its upstream session,
    a stdio one its child process), so holdgate keeps serving what it started with until restarted; an
    edit that would not even load is reported with its place and problem, so it is fixed before the restart.
    """
    from watchfiles import awatch

    path = state.settings.servers_path
    last_notice: str | None = None

    def is_servers_file(_change: object, changed: str) -> bool:
        return Path(changed).name == path.name

    async for _changes in awatch(path.parent, recursive=False, debounce=200, watch_filter=is_servers_file):
        notice: str | None = None
        try:
            edited = load_servers(path)
        except ConfigError as exc:
            notice = f"{exc}; holdgate keeps serving the servers it started with"
        else:
            difference = _servers_difference(state.servers, edited)
            if difference is not None:
                notice = (
                    f"{path} changed ({difference}): restart holdgate to apply; "
                    "until then it serves the servers it started with"
                )
        if notice is not None and notice != last_notice:
            logger.warning("%s", notice)
        elif notice is None and last_notice is not None:
            logger.info("%s matches the running servers again", path)
        last_notice = notice


def _servers_difference(running: dict[str, ServerSpec], edited: dict[str, ServerSpec]) -> str | None:
    """Which servers an edit adds, removes or changes (names only: specs hold secrets), or None."""
    parts = [
        f"{label}: {', '.join(names)}"
        for label, names in (
            ("added", sorted(edited.keys() - running.keys())),
            ("removed", sorted(running.keys() - edited.keys())),
            ("changed", sorted(name for name in running.keys() & edited.keys() if running[name] != edited[name])),
        )
        if names
    ]
    return "; ".join(parts) or None


QUIETED_LOGGERS = ("apscheduler", "watchfiles")
"""Libraries whose INFO lines are noise to an operator: APScheduler logs two per job run (the approval
sweep runs every 5 s), burying "APPROVAL NEEDED"; watchfiles logs "1 change detected" once per watcher."""


def _quiet_library_logs() -> None:
    """`QUIETED_LOGGERS` go to WARNING, unless the user gave one a level of their own (a logging config)."""
    for name in QUIETED_LOGGERS:
        library_logger = logging.getLogger(name)
        if library_logger.level == logging.NOTSET:
            library_logger.setLevel(logging.WARNING)
