"""`holdgate audit ...`: list or export the audit history, verify its hash chain, apply retention.

A typer sub-app mounted by `service/cli.py`; `holdgate audit` alone (with its filters) lists or
exports, as it always did. A thin layer over `service.audit.service` and `service.audit.chain`, imported inside
the commands (the lazy-import rule at the top of service/cli.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import typer

app = typer.Typer(
    name="audit",
    help="The audit history: list, export (--format jsonl|csv), verify the hash chain, prune.",
    invoke_without_command=True,
)
T = TypeVar("T")


def _with_session(work: Callable[[Any], Awaitable[T]]) -> T:
    from service import db
    from service.settings import get_settings

    settings = get_settings()
    return db.run_in_session(settings.effective_database_url, work, migrate=settings.run_migrations)


@app.callback()
def audit(
    ctx: typer.Context,
    format: Annotated[Literal["table", "jsonl", "csv"], typer.Option(help="Output format.")] = "table",
    grant: str | None = None,
    server: str | None = None,
    tool: str | None = None,
    verdict: str | None = None,
    limit: Annotated[int, typer.Option(help="Rows for the table and --json views.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="The newest --limit records as one JSON document.")] = False,
) -> None:
    """List the audit history, or export it as JSON Lines / CSV on stdout (chain fields included)."""
    if ctx.invoked_subcommand is not None:
        return
    from service.audit import service as audit_service

    flt = audit_service.AuditFilter(grant=grant, server=server, tool=tool, verdict=verdict)
    if format in {"jsonl", "csv"}:

        async def export(session) -> None:
            if format == "csv":
                sys.stdout.write(audit_service.csv_header())
            async for event in audit_service.iter_events(session, flt=flt):
                sys.stdout.write(audit_service.to_csv(event) if format == "csv" else audit_service.to_jsonl(event))

        _with_session(export)
        return
    events = _with_session(lambda s: audit_service.list_events(s, flt=flt, limit=limit))
    if as_json:
        items = [audit_service.event_dict(e) for e in events]
        print(json.dumps({"items": items, "total": len(items)}, indent=2, default=str))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("time", "grant", "server", "tool", "verdict", "rule", "outcome", "ms")
    for e in events:
        table.add_row(
            e.ts.strftime("%Y-%m-%d %H:%M:%S"), e.grant, e.server, e.tool, e.verdict,
            e.rule or "", e.outcome or "", f"{e.duration_ms:.1f}" if e.duration_ms is not None else "",
        )  # fmt: skip
    Console().print(table)


@app.command()
def verify(
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Verify a JSON Lines export instead of the database ('-' for stdin)."),
    ] = None,
) -> None:
    """Check the hash chain; exit 1 naming each place it breaks (edited row, rows deleted between ids)."""
    from service.audit import chain

    if file is None:
        report = _with_session(chain.verify)
    else:
        try:
            if str(file) == "-":
                report = chain.verify_export(sys.stdin)
            else:
                with file.open(encoding="utf-8") as lines:
                    report = chain.verify_export(lines)
        except (OSError, ValueError, KeyError) as exc:
            typer.secho(f"cannot read {file}: {exc}", fg="red", err=True)
            raise typer.Exit(2) from None
    typer.echo(report.describe())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def prune(
    days: Annotated[
        float | None,
        typer.Option(help="Delete records older than this (default: HOLDGATE_AUDIT_RETENTION_DAYS)."),
    ] = None,
) -> None:
    """Apply the retention period now; the last deleted record's hash becomes the chain's anchor."""
    from service.audit import chain
    from service.settings import get_settings

    days = days if days is not None else get_settings().audit.retention_days
    if days is None or days <= 0:
        typer.secho("no retention period: pass --days N or set HOLDGATE_AUDIT_RETENTION_DAYS", fg="red", err=True)
        raise typer.Exit(2)
    now = datetime.now(UTC)
    before = now - timedelta(days=days)
    result = _with_session(lambda s: chain.prune(s, before=before, now=now))
    cutoff = f"{before:%Y-%m-%d %H:%M:%S}Z"
    typer.echo(f"{result.deleted} record(s) older than {cutoff} deleted; chain anchor: id {result.anchor_id}")
