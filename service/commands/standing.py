"""`holdgate standing ...`: list the standing approvals, and revoke one, as the local operator.

A typer sub-app mounted by `service/cli.py`; a thin layer over `ApprovalService.standing_list` and
`revoke_standing` on the configured database (heavy modules are imported inside the commands).
"""

from __future__ import annotations

import json
import time
from functools import cache
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from rich.console import Console

app = typer.Typer(
    name="standing",
    help="Standing approvals: approvals that cover later calls of a grant for a while.",
    no_args_is_help=True,
)


@cache
def console() -> Console:
    """rich is imported when a command prints, not when the CLI starts (the lazy-import rule, service/cli.py)."""
    from rich.console import Console

    return Console()


@cache
def err_console() -> Console:
    from rich.console import Console

    return Console(stderr=True)


def _run(work: Any) -> Any:
    """Run `work(approval_service)` on the configured database, as the local operator."""
    from service import db
    from service.approvals import ApprovalService
    from service.settings import get_settings

    settings = get_settings()
    return db.run_offline(
        settings.effective_database_url,
        lambda sessions: work(ApprovalService(sessions, clock=time.time)),
        migrate=settings.run_migrations,
    )


@app.command("list")
def list_standing(
    all_: Annotated[bool, typer.Option("--all", help="Revoked and expired ones too.")] = False,
    grant: Annotated[str | None, typer.Option(help="Only this grant's.")] = None,
    limit: int = 100,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """Standing approvals, newest first: the active ones, or --all."""
    from service.approvals import StandingQuery, StandingView

    query = StandingQuery(active_only=not all_, grant=grant, limit=limit)
    rows = _run(lambda service: service.standing_list(query))
    now = time.time()
    views = [StandingView.of(row, now) for row in rows]
    if as_json:
        print(json.dumps({"items": [v.model_dump() for v in views]}, indent=2))
        return
    from rich.table import Table

    table = Table(title=f"{len(views)} standing approval(s)" + ("" if all_ else ", active"))
    table.add_column("id", no_wrap=True)  # copied into `holdgate standing revoke ID`: never wrapped
    for header in ("scope", "grant", "covers", "by", "state"):
        table.add_column(header)
    for v in views:
        covers = f"{v.server}/{v.tool}"
        if v.scope == "same_args":
            covers += " " + json.dumps(v.arguments, ensure_ascii=False)
        table.add_row(v.id, v.scope, v.grant, covers[:80], v.approved_by, v.state)
    console().print(table)


@app.command("revoke")
def revoke(
    standing_id: Annotated[str, typer.Argument(metavar="ID")],
    reason: Annotated[str | None, typer.Option(help="Why (kept in the audit).")] = None,
) -> None:
    """End a standing approval now: the next call it covered is held again (exit 1: unknown or already ended)."""
    from service.approvals import LOCAL_OPERATOR, ApprovalError

    try:
        standing = _run(
            lambda service: service.revoke_standing(standing_id, by=LOCAL_OPERATOR, via="cli", reason=reason)
        )
    except ApprovalError as exc:
        err_console().print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    console().print(
        f"standing approval {standing.id} revoked ({standing.scope} on {standing.server}/{standing.tool} "
        f"for grant {standing.grant})"
    )
