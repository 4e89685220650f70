"""`holdgate tools ...`: the upstream tools' pinned definitions: list them, diff a change, accept it.

A typer sub-app mounted in `service/cli.py`. Acts on the configured database directly, as the local operator
(like `holdgate approve`); a running holdgate lets calls to an accepted tool through within
`HOLDGATE_TOOL_DEFINITIONS_REFRESH_S` (5 s). Heavy modules (the database, the tool definitions) are imported
inside the commands, so `holdgate --help` and other commands do not pay for them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

app = typer.Typer(
    name="tools",
    help="Upstream tools' definitions: see what changed since a person accepted them, and accept.",
    no_args_is_help=True,
)

T = TypeVar("T")
JsonOption = Annotated[bool, typer.Option("--json", help="JSON instead of text.")]


@app.command("list")
def list_tools(
    server: Annotated[str | None, typer.Argument(help="Only this upstream server.")] = None,
    pending: Annotated[bool, typer.Option("--pending", help="Only changed and new tools.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Every tool holdgate has seen listed, with its status: accepted, changed or new."""
    from service.tooldefs import ToolDefinitionView, listing

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[ToolDefinitionView]:
        async with sessions() as session:
            return [ToolDefinitionView.of(row) for row in await listing(session, server=server, pending=pending)]

    views = _run(work)
    if as_json:
        typer.echo(json.dumps([view.model_dump(exclude_none=True) for view in views], indent=2))
        return
    if not views:
        typer.echo(
            "no tools recorded" + (f" for server {server}" if server else "") + (" that changed" if pending else "")
        )
        return
    for view in views:
        by = f"accepted by {view.accepted_by} {view.accepted_at}" if view.accepted_by else "never accepted"
        typer.echo(f"{view.status:<9} {view.server}/{view.tool}  sha256 {view.current_sha256[:12]}  ({by})")


@app.command()
def diff(
    server: Annotated[str, typer.Argument(help="Upstream server (its name in servers.json).")],
    tool: Annotated[str | None, typer.Argument(help="One tool; without it, every changed or new tool.")] = None,
    as_json: JsonOption = False,
) -> None:
    """What changed in a tool's definition since a person accepted it, as a unified diff."""
    from service.tooldefs import ToolDefinitionView, UnknownTool, get, listing
    from service.tooldefs.store import known_servers

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[ToolDefinitionView] | str:
        async with sessions() as session:
            if tool is not None:
                try:
                    return [ToolDefinitionView.of(await get(session, server, tool), details=True)]
                except UnknownTool as exc:
                    return exc.message
            if server not in await known_servers(session):
                return f"holdgate has recorded no tools of server '{server}' (it lists them when it first connects)"
            rows = await listing(session, server=server, pending=True)
            return [ToolDefinitionView.of(row, details=True) for row in rows]

    found = _run(work)
    if isinstance(found, str):
        typer.echo(found, err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps([view.model_dump(exclude_none=True) for view in found], indent=2, ensure_ascii=False))
        return
    if not found:
        typer.echo(f"every tool of {server} is as accepted")
        return
    for view in found:
        typer.echo(_headline(view))
        if view.diff:
            typer.echo(view.diff)
        typer.echo("")


@app.command()
def accept(
    server: Annotated[str, typer.Argument(help="Upstream server (its name in servers.json).")],
    tool: Annotated[str, typer.Argument(help="The tool whose current definition to accept.")],
    sha256: Annotated[
        str | None,
        typer.Option("--sha256", help="The hash you reviewed (from `tools diff`): refused if the tool changed since."),
    ] = None,
) -> None:
    """Accept a tool's current definition as the local operator (audited); its calls follow their rule again."""
    import time

    from service.approvals import LOCAL_OPERATOR
    from service.audit.keys import ArgsDigester
    from service.settings import get_settings
    from service.tooldefs import ToolDefinitionError
    from service.tooldefs import accept as accept_definition

    if sha256 is not None and (len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256)):
        raise typer.BadParameter("must be a sha256 as 64 lowercase hex characters", param_hint="--sha256")
    secret_key = get_settings().secret_key

    async def work(sessions: async_sessionmaker[AsyncSession]) -> str:
        try:
            row, before = await accept_definition(
                sessions,
                server,
                tool,
                by=LOCAL_OPERATOR,
                via="cli",
                now=time.time(),
                audit_key=await ArgsDigester(sessions, secret_key).key(),
                expected_sha256=sha256,
            )
        except ToolDefinitionError as exc:
            raise typer.Exit(_fail(exc.message)) from None
        was = f"replacing {before[:12]}" if before else "a new tool"
        return f"accepted {server}/{tool}: definition sha256 {row.current_sha256} ({was})"

    typer.echo(_run(work))


def _headline(view: Any) -> str:
    if view.status == "accepted":
        return f"{view.server}/{view.tool}: as accepted (sha256 {view.current_sha256[:12]}, by {view.accepted_by})"
    what = "new (never accepted)" if view.status == "new" else f"changed since accepted by {view.accepted_by}"
    return (
        f"{view.server}/{view.tool}: {what}; presented since {view.changed_at}\n"
        f"accept with: holdgate tools accept {view.server} {view.tool} --sha256 {view.current_sha256}"
    )


def _fail(message: str) -> int:
    typer.echo(message, err=True)
    return 1


def _run(work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]]) -> T:
    from service import db
    from service.settings import get_settings

    settings = get_settings()
    return db.run_offline(settings.effective_database_url, work, migrate=settings.run_migrations)
