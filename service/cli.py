"""The `holdgate` command line: a thin layer over the service functions.

Commands that touch the database act on the configured database directly, as the local
operator. Every command builds its settings from the environment (`HOLDGATE_*`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table
from typer.core import TyperGroup

from service import db
from service.approvals.channels import ChannelCommands, load_plugins
from service.audit import cli as audit_cli
from service.commands import policy as policy_cli
from service.configfile import ConfigError
from service.settings import DEFAULT_CHANNELS, Settings, get_settings

if TYPE_CHECKING:
    # The context class TyperGroup.invoke takes: the installed typer ships its own copy of click (typer._click), whose
    # Context is not click.Context; imported for the type only, so an older typer on plain click still runs.
    from typer._click import Context as ClickContext


class _HoldgateGroup(TyperGroup):
    """The top-level command group: a missing database ends any command with its path, not a traceback."""

    def invoke(self, ctx: ClickContext) -> Any:
        try:
            return super().invoke(ctx)
        except db.DatabaseMissing as exc:
            err_console.print(f"[red]error:[/red] {exc}", highlight=False)
            raise typer.Exit(1) from None


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

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")


def _add_channel_commands() -> None:
    """Each loaded channel's own commands (`holdgate slack check`), under the channel's name.

    The channel modules are those of `HOLDGATE_CHANNELS` (the defaults when the settings do not load: the
    command that needs them reports why). A module that does not load adds no commands here; `serve`
    refuses to start with the reason.
    """
    try:
        modules = Settings().channels
    except (ValidationError, ValueError):
        modules = list(DEFAULT_CHANNELS)
    for module in modules:
        try:
            [plugin] = load_plugins([module])
        except ValueError:
            continue
        if isinstance(plugin, ChannelCommands):
            app.add_typer(plugin.cli, name=plugin.name)


_add_channel_commands()


def _settings(config: Path | None = None, **overrides: Any) -> Settings:
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
    return db.run_in_session(settings.effective_database_url, work, migrate=settings.run_migrations)


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option(help="Configuration directory (policy.json, servers.json).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface to bind.")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on.")] = None,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "info",
) -> None:
    """Run the gateway service."""
    import uvicorn

    from service.app import build_state, create_app, prepare_serving_process

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = _settings(config, host=host, port=port)
        state = build_state(settings)
    except ConfigError as exc:
        err_console.print(f"[red]holdgate refuses to start:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    except ValidationError as exc:  # settings validation, with --host/--port/--config applied
        problems = "; ".join(str(error["msg"]).removeprefix("Value error, ") for error in exc.errors())
        err_console.print(f"[red]holdgate refuses to start:[/red] {problems}", highlight=False)
        raise typer.Exit(1) from exc
    except ValueError as exc:
        err_console.print(f"[red]holdgate refuses to start:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    app = create_app(settings, state=state)
    prepare_serving_process()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=10,
    )


@app.command()
def bridge(
    url: Annotated[str, typer.Option(help="The gateway's MCP URL, e.g. http://127.0.0.1:8000/mcp/jobs")],
    token: Annotated[str | None, typer.Option(envvar="HOLDGATE_TOKEN", help="Grant token.")] = None,
) -> None:
    """Relay MCP between stdio and the gateway, for stdio-only clients (Claude Desktop)."""
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
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    err_console.print(f"grant {grant.name!r} created; store this token now, it is not shown again:")
    print(token)


@grant_app.command("list")
def grant_list() -> None:
    """List grants (names and state; tokens are never shown)."""
    from service.grants.service import list_grants

    grants = _with_session(_settings(), list_grants)
    table = Table("name", "created", "revoked")
    for grant in grants:
        table.add_row(grant.name, str(grant.created_at), str(grant.revoked_at or ""))
    console.print(table)


@grant_app.command("revoke")
def grant_revoke(name: str) -> None:
    """Revoke a grant: its token stops working within seconds."""
    from service.grants.service import revoke_grant

    if not _with_session(_settings(), lambda s: revoke_grant(s, name=name)):
        err_console.print(f"[red]error:[/red] no active grant named {name!r}")
        raise typer.Exit(1)
    console.print(f"grant {name!r} revoked")


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply schema migrations to the configured database."""

    async def run() -> None:
        engine = db.create_engine(_settings().effective_database_url)
        try:
            await db.upgrade(engine)
        finally:
            await engine.dispose()

    asyncio.run(run())
    console.print("database schema is up to date")


def _with_approvals(settings: Settings, work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(approval_service)` against the configured database, as the local operator."""
    import time

    from service.approvals import ApprovalService

    return db.run_offline(
        settings.effective_database_url,
        lambda sessions: work(ApprovalService(sessions, clock=time.time)),
        migrate=settings.run_migrations,
    )


@decisions_app.command("list")
def decisions_list(
    status: Annotated[str | None, typer.Option(help="pending | approved | denied | expired | cancelled")] = None,
    server: str | None = None,
    tool: str | None = None,
    grant: str | None = None,
    limit: int = 50,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Decisions, newest first."""
    from service.approvals import DecisionQuery, DecisionView

    query = DecisionQuery(status=status, server=server, tool=tool, grant=grant, limit=limit)
    rows, total = _with_approvals(_settings(), lambda service: service.list(query))
    views = [DecisionView.of(row) for row in rows]
    if as_json:
        _json_dump({"items": [v.model_dump() for v in views], "total": total})
        return
    table = Table(title=f"{total} decision(s)")
    table.add_column("id", no_wrap=True)  # copied into `holdgate approve ID`: never wrapped
    for header in ("status", "grant", "call", "created", "expires", "decided by"):
        table.add_column(header)
    table.add_column("outcome", no_wrap=True)
    for v in views:
        call = f"{v.server}/{v.tool} {json.dumps(v.arguments, ensure_ascii=False)}"
        status = v.status + (
            ", lapsed" if v.lapsed else ", agent stopped waiting" if v.agent_stopped_waiting_at else ""
        )
        outcome = v.execution.outcome if v.execution else ""  # "lapsed" too: never cut, like the id
        if outcome == "unknown":
            outcome = "UNKNOWN"
            table.caption = (
                "UNKNOWN: sent upstream by a gateway process that stopped before the answer; it may have run"
            )
        table.add_row(v.id, status, v.grant, call[:80], v.created_at, v.expires_at, v.decided_by or "", outcome)
    console.print(table)


@decisions_app.command("show")
def decisions_show(
    decision_id: Annotated[str, typer.Argument(metavar="ID")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of text.")] = False,
) -> None:
    """One decision, with its votes and how its released call went (exit 1 for an unknown id)."""
    from service.approvals import ApprovalError, DecisionView

    try:
        decision, votes = _with_approvals(_settings(), lambda service: service.get(decision_id))
    except ApprovalError as exc:
        err_console.print(f"[red]{exc.message}[/red]")
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
    arguments: Annotated[
        str | None,
        typer.Option(help="One ID, an editable rule: run the call with these arguments instead (a JSON object)."),
    ] = None,
) -> None:
    """Approve held calls as the local operator: one ID, several, or --all-pending [--server/--tool/--grant]."""
    if arguments is not None:
        if len(decision_ids or []) != 1 or all_pending:
            err_console.print("[red]--arguments edits one decision: give exactly one ID[/red]")
            raise typer.Exit(2)
        from service.commands.approve_edit import approve_edited

        approve_edited(
            (decision_ids or [])[0],
            arguments,
            reason,
            settings=_settings(),
            with_approvals=_with_approvals,
            console=console,
            err_console=err_console,
        )
        return
    _decide_cli(decision_ids or [], "approve", reason, all_pending, server, tool, grant)


@app.command("deny")
def deny(
    reason: Annotated[str, typer.Option(help="Why; the agents are told.")],
    decision_ids: Annotated[list[str] | None, typer.Argument(metavar="ID...", show_default=False)] = None,
    all_pending: AllPendingOption = False,
    server: ServerOption = None,
    tool: ToolOption = None,
    grant: GrantOption = None,
) -> None:
    """Deny held calls as the local operator; the reason goes back to each agent."""
    _decide_cli(decision_ids or [], "deny", reason, all_pending, server, tool, grant)


def _decide_cli(
    ids: list[str],
    value: str,
    reason: str | None,
    all_pending: bool,
    server: str | None,
    tool: str | None,
    grant: str | None,
) -> None:
    """One ID keeps the single-decision command's answers; several IDs or --all-pending vote in bulk."""
    filtered = any((server, tool, grant))
    if all_pending == bool(ids) or (filtered and not all_pending):
        err_console.print(
            "[red]give decision IDs, or --all-pending (optionally with --server, --tool, --grant), not both[/red]"
        )
        raise typer.Exit(2)
    if len(ids) == 1:
        _decide(ids[0], value, reason)
    else:
        _decide_many(ids, value, reason, server=server, tool=tool, grant=grant)


def _decide(decision_id: str, value: str, reason: str | None) -> None:
    from service.approvals import ApprovalError, Voter

    async def vote(service):
        return await service.vote(decision_id, Voter("operator", "local-operator"), value, via="cli", reason=reason)

    try:
        outcome = _with_approvals(_settings(), vote)
    except ApprovalError as exc:
        err_console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    console.print(outcome.message)


def _decide_many(
    ids: list[str], value: str, reason: str | None, *, server: str | None, tool: str | None, grant: str | None
) -> None:
    """Vote on `ids`, or (none given) on the pending decisions matching the filters; exit 1 if any was refused."""
    from service.approvals import LOCAL_OPERATOR, ApprovalError, DecisionQuery, Voter

    async def vote(service):
        targets = ids or await service.pending_ids(
            DecisionQuery(server=server, tool=tool, grant=grant, limit=sys.maxsize)
        )
        return await service.vote_many(targets, Voter("operator", LOCAL_OPERATOR), value, via="cli", reason=reason)

    try:
        results = _with_approvals(_settings(), vote)
    except ApprovalError as exc:
        err_console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    counts = {kind: sum(r.result == kind for r in results) for kind in ("decided", "recorded", "refused")}
    verb = "approved" if value == "approve" else "denied"
    console.print(
        f"{len(results)} decision(s): {counts['decided']} {verb}, "
        f"{counts['recorded']} vote(s) recorded awaiting quorum, {counts['refused']} refused"
    )
    refused = [r for r in results if r.refusal is not None]
    if refused:
        table = Table("id", "refused because", title="refused (nothing changed for these)")
        for r in refused:
            table.add_row(r.decision_id, r.message)
        err_console.print(table)
        raise typer.Exit(1)


def _json_dump(data: Any) -> None:
    print(json.dumps(data, indent=2, default=str))
