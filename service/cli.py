"""The `holdgate` command line: a thin layer over the service functions.

Commands that touch the database act on the configured database directly, as the local
operator. Every command builds its settings from the environment (`HOLDGATE_*`). `approve`, `deny` and
`decisions list --url` act through a running holdgate's REST API as a person instead
(`service/commands/rest_client.py`).

Lazy imports, the rule for this module and every command module it mounts (`service/commands/*`,
`service/audit/cli.py`): at module level, import only the standard library, typer and other command modules.
Everything else (settings, the database, approvals, rich, fastapi, sqlalchemy, mcp, the app) is imported
inside the command function that uses it, so a command pays only for what it needs: `holdgate approve`, `deny`
and `decisions list` never import the web stack, and with `--url` no database code either. A channel's own
commands are loaded with its plug-in, only when their name is asked for. `tests/test_cli_imports.py` checks the
import graph; `bench/bench_cli.py` measures the start-up (`python -X importtime -m service ...` shows where time
goes). A command group is one module with a `typer.Typer()` named `app`, mounted with one `app.add_typer(...)`
line below.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, NoReturn, TypeVar

import typer
from typer.core import TyperGroup

import service
from service.audit import cli as audit_cli
from service.commands import policy as policy_cli
from service.commands import standing as standing_cli
from service.commands import tools as tools_cli

if TYPE_CHECKING:
    # The context class TyperGroup.invoke takes: the installed typer ships its own copy of click (typer._click), whose
    # Context is not click.Context; imported for the type only, so an older typer on plain click still runs.
    from rich.console import Console
    from typer._click import Command
    from typer._click import Context as ClickContext

    from service.commands.rest_client import RestClient
    from service.settings import Settings

DecisionStatus = Literal["pending", "approved", "denied", "expired", "cancelled"]
"""`decisions list --status`: service.approvals.states.STATUSES, spelt out so that parsing the option imports no
database code (tests/test_cli_imports.py keeps the two equal)."""

LogLevel = Literal["critical", "error", "warning", "info", "debug", "trace"]
"""uvicorn's log levels (`holdgate serve --log-level`)."""


class _HoldgateGroup(TyperGroup):
    """The top-level command group.

    A missing database or invalid settings end any command with one line saying what to fix, not a traceback.
    The commands of the channel plug-ins (`holdgate slack check`) are looked up only when asked for: loading
    the plug-ins imports their SDKs, which the other commands never need.
    """

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except Exception as exc:
            message = _known_error(exc)
            if message is None:
                raise
            err_console().print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    def get_command(self, ctx: ClickContext, cmd_name: str) -> Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None:
            command = _channel_commands().get(cmd_name)
        return command

    def list_commands(self, ctx: ClickContext) -> list[str]:
        names = super().list_commands(ctx)
        return names + [name for name in _channel_commands() if name not in names]


def _known_error(exc: Exception) -> str | None:
    """The one-line explanation of an error the user fixes outside holdgate (settings, database path), else None.

    Only modules already imported are consulted: an exception of a module never imported cannot be raised.
    """
    db = sys.modules.get("service.db")
    if db is not None and isinstance(exc, db.DatabaseMissing):
        return str(exc)
    if "service.settings" in sys.modules:
        from service.settings import settings_error

        problem = settings_error(exc)
        return None if problem is None else f"invalid settings: {problem}"
    return None


app = typer.Typer(
    cls=_HoldgateGroup,
    no_args_is_help=True,
    help="holdgate: human-in-the-loop approval gateway for MCP tool calls.",
)
grant_app = typer.Typer(no_args_is_help=True, help="Agent grants (bearer tokens).")
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
decisions_app = typer.Typer(no_args_is_help=True, help="Held calls and their decisions.")
app.add_typer(policy_cli.app, name="policy")
app.add_typer(grant_app, name="grant")
app.add_typer(db_app, name="db")
app.add_typer(decisions_app, name="decisions")
app.add_typer(audit_cli.app, name="audit")
app.add_typer(tools_cli.app, name="tools")
app.add_typer(standing_cli.app, name="standing")

T = TypeVar("T")
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


def _version(value: bool) -> None:
    if value:
        print(f"holdgate {service.__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """holdgate: human-in-the-loop approval gateway for MCP tool calls."""


@cache
def console() -> Console:
    from rich.console import Console

    return Console()


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


@cache
def _channel_commands() -> dict[str, Command]:
    """Each loaded channel's own commands (`holdgate slack check`), by the channel's name.

    The channel modules are those of `HOLDGATE_CHANNELS` (the defaults when the settings do not load: the
    command that needs them reports why). A module that does not load adds no commands here; `serve`
    refuses to start with the reason.
    """
    from pydantic import ValidationError

    from service.approvals.channels import ChannelCommands, load_plugins
    from service.settings import DEFAULT_CHANNELS, Settings

    try:
        modules = Settings().channels
    except (ValidationError, ValueError):
        modules = list(DEFAULT_CHANNELS)
    mounted = typer.Typer()
    for module in modules:
        try:
            [plugin] = load_plugins([module])
        except ValueError:
            continue
        if isinstance(plugin, ChannelCommands):
            mounted.add_typer(plugin.cli, name=plugin.name)
    if not mounted.registered_groups:
        return {}
    group = typer.main.get_group(mounted)
    assert isinstance(group, TyperGroup)
    return dict(group.commands)


def _settings(config: Path | None = None, **overrides: Any) -> Settings:
    from service.settings import Settings, get_settings

    base = get_settings()
    changes = {k: v for k, v in overrides.items() if v is not None}
    if config is not None:
        changes["config_dir"] = config
    if not changes:
        return base
    # Validated like the environment form (model_copy would skip the validators: --host 0.0.0.0 with the
    # anonymous dev grant must be refused either way).
    return Settings.model_validate(base.model_dump() | changes)


def _with_session(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(session)` in one committed unit of work on the configured database (which must exist)."""
    from service import db

    return db.run_in_session(settings.effective_database_url, work, migrate=settings.run_migrations)


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option(help="Configuration directory (policy.json, servers.json).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    log_level: Annotated[LogLevel, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run the gateway service."""

    import uvicorn
    from pydantic import ValidationError

    from service import logs, tracing
    from service.app import build_state, create_app, prepare_serving_process
    from service.configfile import ConfigError
    from service.settings import settings_error

    log_config = logs.configure("text", log_level)  # until the settings say which format
    try:
        settings = _settings(config, host=host, port=port)
        if settings.logs.format != "text":
            log_config = logs.configure(settings.logs.format, log_level)
        tracing.configure_from_environment()  # on only when OTEL_* variables ask for traces
        state = build_state(settings)
    except ConfigError as exc:
        err_console().print(f"[red]holdgate refuses to start:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    except ValidationError as exc:  # settings validation, with --host/--port/--config applied
        err_console().print(f"[red]holdgate refuses to start:[/red] {settings_error(exc)}", highlight=False)
        raise typer.Exit(1) from exc
    except ValueError as exc:
        err_console().print(f"[red]holdgate refuses to start:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    app = create_app(settings, state=state)
    prepare_serving_process()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        log_config=log_config,  # the service's one handler and format (`service.logs`), for uvicorn's lines too
        timeout_graceful_shutdown=10,
    )


@app.command()
def bridge(
    url: Annotated[str, typer.Option(help="The gateway's MCP URL, e.g. http://127.0.0.1:8000/mcp/jobs")],
    token: Annotated[str | None, typer.Option(envvar="HOLDGATE_TOKEN", help="Grant token.")] = None,
) -> None:
    """Relay MCP between stdio and the gateway, for stdio-only clients (Claude Desktop)."""
    import asyncio
    import logging

    from service.gateway.bridge import run_bridge

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(run_bridge(url, token))


@grant_app.command("create")
def grant_create(name: str) -> None:
    """Create a grant; prints its token once, alone on the last line (only its hash is stored)."""
    from service.grants.service import GrantError, create_grant

    try:
        grant, token = _with_session(_settings(), lambda s: create_grant(s, name=name))
    except GrantError as exc:
        err_console().print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    err_console().print(f"grant {grant.name!r} created; store this token now, it is not shown again:")
    print(token)


@grant_app.command("list")
def grant_list(as_json: JsonOption = False) -> None:
    """List grants (names and state; tokens are never shown)."""
    from rich.table import Table

    from service.grants.service import list_grants

    grants = _with_session(_settings(), list_grants)
    if as_json:
        items = [{"name": g.name, "created_at": g.created_at, "revoked_at": g.revoked_at} for g in grants]
        _json_dump({"items": items, "total": len(items)})
        return
    table = Table("name", "created", "revoked")
    for grant in grants:
        table.add_row(grant.name, str(grant.created_at), str(grant.revoked_at or ""))
    console().print(table)


@grant_app.command("revoke")
def grant_revoke(name: str) -> None:
    """Revoke a grant: its token stops working within seconds."""
    from service.grants.service import revoke_grant

    if not _with_session(_settings(), lambda s: revoke_grant(s, name=name)):
        err_console().print(f"[red]error:[/red] no active grant named {name!r}")
        raise typer.Exit(1)
    console().print(f"grant {name!r} revoked")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply schema migrations to the configured database."""
    import asyncio

    from service import db

    async def run() -> None:
        engine = db.create_engine(_settings().effective_database_url)
        try:
            await db.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    console().print("database schema is up to date")


def _with_approvals(settings: Settings, work: Callable[[Any], Awaitable[T]], *, changes: bool = True) -> T:
    """Run `work(approval_service)` against the configured database, as the local operator.

    With the `OTEL_*` variables set, as for `holdgate serve`, the decisions a command that `changes` them changes
    are traced (each change joins the trace of the call that opened the decision) and exported before the command
    exits; a read (`changes=False`) does not load the tracing SDK.
    """
    import time

    from service import db
    from service.approvals import ApprovalService

    provider = _traced() if changes else None
    try:
        return db.run_offline(
            settings.effective_database_url,
            lambda sessions: work(ApprovalService(sessions, clock=time.time)),
            migrate=settings.run_migrations,
        )
    finally:
        if provider is not None:
            provider.shutdown()  # exports what the command traced (bounded by the exporter's own timeout)


def _traced() -> Any:
    """Tracing on for this command when the environment asks for it (None otherwise, at the cost of reading a few
    variables). Unlike `serve`, a tracing set-up holdgate cannot follow is a warning: the vote matters more than
    its trace."""
    from service import tracing

    try:
        return tracing.configure_from_environment()
    except ValueError as exc:
        typer.secho(f"warning: not tracing: {exc}", fg="yellow", err=True)
        return None


UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        envvar="HOLDGATE_URL",
        help="A running holdgate (https://holdgate.example.com): act through its REST API as the person whose "
        "token is in HOLDGATE_PERSON_TOKEN, instead of on the local database as the operator.",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="HOLDGATE_PERSON_TOKEN",
        help="With --url: a person's API token (prefer the variable: a command line is visible to other users).",
        show_default=False,
    ),
]


def _rest(url: str, token: str | None) -> RestClient:
    from service.commands.rest_client import RestClient, RestError

    try:
        return RestClient(url, token or "")
    except RestError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        raise typer.Exit(2) from None


def _refused(exc: Exception) -> NoReturn:
    """End a decision command that holdgate or the database refused: its message, exit 1."""
    typer.secho(str(getattr(exc, "message", exc)), fg="red", err=True)
    raise typer.Exit(1) from None


@decisions_app.command("list")
def decisions_list(
    status: Annotated[DecisionStatus | None, typer.Option(help="Only decisions in this status.")] = None,
    server: str | None = None,
    tool: str | None = None,
    grant: str | None = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first (500 with --url).")] = 50,
    as_json: JsonOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Decisions, newest first."""
    if url is not None:
        from service.commands.rest_client import RestError

        try:
            page = _rest(url, token).list_decisions(status=status, server=server, tool=tool, grant=grant, limit=limit)
        except RestError as exc:
            _refused(exc)
        items, total = page.get("items", []), page.get("total", 0)
    else:
        answer = _operate(
            {"op": "list", "status": status, "server": server, "tool": tool, "grant": grant, "limit": limit}
        )
        items, total = answer["items"], answer["total"]
    if as_json:
        _json_dump({"items": items, "total": total})
        return
    _print_decisions(items, total)


def _print_decisions(items: list[dict[str, Any]], total: int) -> None:
    """The decisions table, from DecisionView's JSON form (the REST API's and the local database's alike).

    A plain-text table (`service.commands.table`), not rich's: this command's start-up matters, and rich's
    console and styles were a sixth of it. The id and the outcome are never shortened (an id is copied into
    `holdgate approve`; "UNKNOWN" must stay readable); the call is shortened first to fit the terminal.
    """
    import shutil

    from service.commands.table import Column, render

    columns = [
        Column("id"),
        Column("status"),  # "approved, lapsed": never shortened
        Column("grant", shrink=1, floor=12),
        Column("call", shrink=0, floor=24),
        Column("created"),
        Column("expires"),
        Column("decided by", shrink=2, floor=12),
        Column("outcome"),
    ]
    rows, caption = [], None
    for v in items:
        call = f"{v['server']}/{v['tool']} {json.dumps(v['arguments'], ensure_ascii=False)}"
        shown = v["status"] + (
            ", lapsed" if v.get("lapsed") else ", agent stopped waiting" if v.get("agent_stopped_waiting_at") else ""
        )
        execution = v.get("execution") or {}
        outcome = execution.get("outcome") or ""  # "lapsed" too: never cut, like the id
        if outcome == "unknown":
            outcome = "UNKNOWN"
            caption = "UNKNOWN: sent upstream by a gateway process that stopped before the answer; it may have run"
        rows.append(
            [v["id"], shown, v["grant"], call[:80], str(v["created_at"]), str(v["expires_at"]),
             v.get("decided_by") or "", outcome]
        )  # fmt: skip
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    print(render(columns, rows, title=f"{total} decision(s)", caption=caption, width=width))


@decisions_app.command("show")
def decisions_show(
    decision_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
) -> None:
    """One decision, with its votes and how its released call went (exit 1 for an unknown id)."""
    from service.approvals import ApprovalError, DecisionView

    try:
        decision, votes = _with_approvals(_settings(), lambda service: service.get(decision_id), changes=False)
    except ApprovalError as exc:
        err_console().print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    view = DecisionView.of(decision, votes)
    if as_json:
        _json_dump(view.model_dump())
        return
    print(f"{view.id}: {view.status} — {view.server}/{view.tool} {json.dumps(view.arguments, ensure_ascii=False)}")
    print(f"  grant {view.grant}, rule {view.rule}, created {view.created_at}, expires {view.expires_at}")
    if view.decided_at:
        print(f"  {view.status} by {view.decided_by} via {view.decided_via} at {view.decided_at}: {view.reason or ''}")
    if view.previous_attempt:
        print(f"  previous attempt {view.previous_attempt} may have run (outcome unknown)")
    if view.standing_id:
        print(f"  standing approval {view.standing_id} given (holdgate standing list --all)")
    if view.edit is not None:
        print(f"  approved with edits by {view.edit.by}: {json.dumps(view.edit.arguments, ensure_ascii=False)}")
    if view.lapsed or (view.execution is not None and view.execution.outcome in ("policy_denied", "policy_changed")):
        print(f"  not run: {view.state}")
    elif view.execution is None:
        print("  released, no outcome yet" if view.released else f"  not run ({view.state})")
    elif view.execution.outcome == "unknown":
        print(f"  outcome UNKNOWN: it may have run — {view.execution.detail}")
    else:
        print(f"  ran: {view.execution.outcome}" + (f" — {view.execution.detail}" if view.execution.detail else ""))


ServerOption = Annotated[str | None, typer.Option(help="With --all-pending: only calls to this server.")]
ToolOption = Annotated[str | None, typer.Option(help="With --all-pending: only calls of this tool.")]
GrantOption = Annotated[str | None, typer.Option(help="With --all-pending: only calls made by this grant.")]
AllPendingOption = Annotated[
    bool, typer.Option("--all-pending", help="Every pending decision (narrow with --server, --tool, --grant).")
]


@app.command("approve")
def approve(
    decision_ids: Annotated[list[str] | None, typer.Argument(metavar="ID...", show_default=False)] = None,
    reason: Annotated[str | None, typer.Option(help="Why (kept with the vote).")] = None,
    all_pending: AllPendingOption = False,
    server: ServerOption = None,
    tool: ToolOption = None,
    grant: GrantOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
    scope: Annotated[
        str | None,
        typer.Option(
            help="Give a standing approval instead of a one-off one, where the rule allows it: same_args (later "
            "identical calls of the same grant) or tool (every call of the tool by that grant). Needs --for."
        ),
    ] = None,
    for_: Annotated[
        str | None, typer.Option("--for", help="With --scope: for how long (30m, 1h), within the rule's limit.")
    ] = None,
    arguments: Annotated[
        str | None,
        typer.Option(help="One ID, an editable rule: run the call with these arguments instead (a JSON object)."),
    ] = None,
) -> None:
    """Approve held calls as the local operator (or with --url, as a person): one ID, several, or --all-pending."""
    if arguments is not None:
        if len(decision_ids or []) != 1 or all_pending:
            err_console().print("[red]--arguments edits one decision: give exactly one ID[/red]")
            raise typer.Exit(2)
        if scope is not None or for_ is not None:
            err_console().print("[red]an approval with --arguments is one-off: not with --scope/--for[/red]")
            raise typer.Exit(2)
        if url is not None:
            err_console().print(
                "[red]--arguments acts on the database as the local operator; with --url, POST the arguments to "
                "/api/decisions/{id}/approve[/red]"
            )
            raise typer.Exit(2)
        from service.commands.approve_edit import approve_edited

        approve_edited(
            (decision_ids or [])[0],
            arguments,
            reason,
            settings=_settings(),
            with_approvals=_with_approvals,
            console=console(),
            err_console=err_console(),
        )
        return
    if for_ is not None and scope is None:
        err_console().print("[red]--for goes with --scope (same_args or tool)[/red]")
        raise typer.Exit(2)
    _decide_cli(decision_ids or [], "approve", reason, all_pending, server, tool, grant, url, token, scope, for_)


def _standing_terms(scope: str | None, duration: str | None) -> Any:
    """`--scope` and `--for` as the standing approval asked for (None: approve once), for `--url`; a usage error
    (exit 2) when malformed. Whether the rule allows it is judged per decision, when the vote is cast. (Locally,
    service.operator.requests parses them, where the vote is carried out.)"""
    if scope is None:
        return None
    from service.approvals import ApprovalError, StandingTerms

    try:
        return StandingTerms.parse(scope, duration)
    except ApprovalError as exc:
        err_console().print(f"[red]{exc.message}[/red]")
        raise typer.Exit(2) from None


@app.command("deny")
def deny(
    reason: Annotated[str, typer.Option(help="Why; the agents are told.")],
    decision_ids: Annotated[list[str] | None, typer.Argument(metavar="ID...", show_default=False)] = None,
    all_pending: AllPendingOption = False,
    server: ServerOption = None,
    tool: ToolOption = None,
    grant: GrantOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Deny held calls as the local operator (or with --url, as a person); the reason goes back to each agent."""
    _decide_cli(decision_ids or [], "deny", reason, all_pending, server, tool, grant, url, token)


def _decide_cli(
    ids: list[str],
    value: str,
    reason: str | None,
    all_pending: bool,
    server: str | None,
    tool: str | None,
    grant: str | None,
    url: str | None,
    token: str | None,
    scope: str | None = None,
    for_: str | None = None,
) -> None:
    """One ID keeps the single-decision command's answers; several IDs or --all-pending vote in bulk."""
    filtered = any((server, tool, grant))
    if all_pending == bool(ids) or (filtered and not all_pending):
        err_console().print(
            "[red]give decision IDs, or --all-pending (optionally with --server, --tool, --grant), not both[/red]"
        )
        raise typer.Exit(2)
    if url is not None:
        standing = _standing_terms(scope, for_)
        _decide_remote(_rest(url, token), ids, value, reason, server=server, tool=tool, grant=grant, standing=standing)
        return
    vote = {"op": "vote", "value": value, "ids": ids, "reason": reason, "scope": scope, "for": for_}
    answer = _operate(vote | {"server": server, "tool": tool, "grant": grant})
    if "usage" in answer:
        err_console().print(f"[red]{answer['usage']}[/red]")
        raise typer.Exit(2)
    if "refusal" in answer:
        _refused(Exception(answer["refusal"]))
    if "message" in answer:
        typer.echo(answer["message"])
        return
    _print_bulk_answer(value, answer)


def _operate(request: dict[str, Any]) -> dict[str, Any]:
    """Carry out a local operator's request (service/operator/requests.py) and return its answer: by the holdgate
    running on this host when one answers on its operator socket for this database (then this command imports no
    database code and is done in a fraction of the time), else on the database here, as the local operator."""
    from service.operator.socket_client import SocketRefused, ask

    try:
        answer = ask(request)
    except SocketRefused as exc:
        _refused(exc)
    if answer is not None:
        return answer
    from service.operator.requests import REQUEST, perform

    parsed = REQUEST.validate_python(request)
    return _with_approvals(_settings(), lambda service: perform(service, parsed), changes=parsed.op == "vote")


def _decide_remote(
    client: RestClient,
    ids: list[str],
    value: str,
    reason: str | None,
    *,
    server: str | None,
    tool: str | None,
    grant: str | None,
    standing: Any = None,
) -> None:
    """Vote through the REST API as the token's person: the same answers and exit codes as the local commands."""
    from service.commands.rest_client import RestError

    terms = {"scope": standing.scope, "for": f"{standing.seconds:g}"} if standing is not None else {}
    try:
        if len(ids) == 1:
            typer.echo(client.vote(ids[0], value, reason, **terms).get("message", ""))
            return
        if terms:
            err_console().print("[red]a standing approval (--scope) is given one decision at a time with --url[/red]")
            raise typer.Exit(2)
        body: dict[str, Any] = {"ids": ids} if ids else {"server": server, "tool": tool, "grant": grant}
        if not ids and not any((server, tool, grant)):
            body = {"all_pending": True}
        answer = client.vote_many(value, {k: v for k, v in body.items() if v is not None} | {"reason": reason})
    except RestError as exc:
        _refused(exc)
    _print_bulk_answer(value, answer)


def _print_bulk_answer(value: str, answer: dict[str, Any]) -> None:
    """A bulk vote's summary (a `BulkVoteResponse`, from the REST API or service.operator), and the refused ids
    (exit 1 if any)."""
    if answer.get("more_pending"):
        err_console().print("more decisions are pending than one request takes (10,000): run the command again")
    refused = [(r["id"], r["message"]) for r in answer.get("results", []) if r.get("result") == "refused"]
    matched, decided, recorded = (answer.get(key, 0) for key in ("matched", "decided", "recorded"))
    verb = "approved" if value == "approve" else "denied"
    typer.echo(
        f"{matched} decision(s): {decided} {verb}, {recorded} vote(s) recorded awaiting quorum, {len(refused)} refused"
    )
    if refused:
        from rich.table import Table

        table = Table("id", "refused because", title="refused (nothing changed for these)")
        for decision_id, message in refused:
            table.add_row(decision_id, message)
        err_console().print(table)
        raise typer.Exit(1)


def _json_dump(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
