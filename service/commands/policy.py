"""`holdgate policy ...`: check a policy file, explain a decision, write a starter policy for a server, replay a
candidate policy on the audited calls.

A typer sub-app; `service/cli.py` mounts it with `app.add_typer(policy_cli.app, name="policy")`.
Only a thin layer over `load_policy`, `explain`, `service.commands.policy_init` and `service.audit.replay`,
imported inside the commands (the lazy-import rule at the top of service/cli.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from service.policy.engine import Policy

app = typer.Typer(name="policy", help="Check and explain the tool-call policy.", no_args_is_help=True)

FileOption = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="Policy file (default: $HOLDGATE_CONFIG_DIR/policy.json)."),
]


@app.command()
def check(
    file: Annotated[
        Path | None, typer.Argument(help="Policy file (default: $HOLDGATE_CONFIG_DIR/policy.json).")
    ] = None,
) -> None:
    """Validate a policy file; exit 1 naming the file, the place in it and what is wrong."""
    policy = _load(file)
    typer.echo(f"ok: {policy.path}: {policy.rule_count} rules, version {policy.version}")
    _warn_unknown_servers(policy)


def _warn_unknown_servers(policy: Policy) -> None:
    """`servers.<name>` settings for a name servers.json does not have apply to nothing: say so (a typo)."""
    from service.configfile import ConfigError
    from service.gateway.servers import load_servers
    from service.settings import get_settings

    try:
        known = load_servers(get_settings().servers_path)
    except ConfigError:
        return  # no servers.json here (a policy checked on its own): nothing to compare with
    for name in sorted(set(policy.server_tool_change) - set(known)):
        typer.echo(
            f"warning: {policy.path}: servers.{name}: no server '{name}' in {get_settings().servers_path}; "
            "its settings apply to nothing",
            err=True,
        )


@app.command()
def explain(
    server: Annotated[str, typer.Option("--server", "-s", help="Upstream server name.")],
    tool: Annotated[str, typer.Option("--tool", "-t", help="Tool name.")],
    grant: Annotated[str | None, typer.Option("--grant", "-g", help="Grant (agent) name.")] = None,
    args: Annotated[str | None, typer.Option("--args", help="Call arguments as a JSON object.")] = None,
    file: FileOption = None,
) -> None:
    """Say which rule decides a call, why it wins over the others, and what follows from it."""
    from service.policy.explain import explain as explain_text

    arguments = _parse_args(args) if args is not None else None
    policy = _load(file)
    typer.echo(explain_text(policy, grant, server, tool, arguments))


@app.command()
def init(
    server: Annotated[str, typer.Option("--server", "-s", help="Upstream server name in servers.json.")],
    config: Annotated[
        Path | None, typer.Option(help="Config directory (servers.json, catalog/); default $HOLDGATE_CONFIG_DIR.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Where to write (default: <config>/policy.json if absent; '-': stdout)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Overwrite an existing output file.")] = False,
    rate: Annotated[int, typer.Option(help="Calls a minute per grant allowed to each write tool.")] = 30,
) -> None:
    """Connect to a server, list its tools, and write a starter policy by risk.

    Read-only tools are allowed, writes rate-limited, destructive tools (and any the catalog rates
    high risk) and tools nothing describes require approval; everything else is denied by default.
    Risk comes from <config>/catalog/ and holdgate's shipped catalogs first, then the tools'
    readOnlyHint/destructiveHint annotations.
    """
    import asyncio
    import tempfile

    from service.commands import policy_init
    from service.configfile import ConfigError
    from service.gateway.upstream import UpstreamUnavailable
    from service.policy.compiler import load_policy
    from service.settings import get_settings

    config_dir = config if config is not None else get_settings().config_dir
    target = output if output is not None else config_dir / "policy.json"
    to_stdout = str(target) == "-"
    if not to_stdout and target.exists() and not force:
        typer.echo(f"{target} exists; pass --force to overwrite it, or --output FILE", err=True)
        raise typer.Exit(1)
    try:
        document, classes = asyncio.run(policy_init.build(server, config_dir, rate_max=rate))
    except (KeyError, ConfigError) as exc:
        typer.echo(str(exc).strip("'\""), err=True)
        raise typer.Exit(1) from None
    except UpstreamUnavailable as exc:
        typer.echo(exc.error.message, err=True)
        raise typer.Exit(1) from None
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    with tempfile.TemporaryDirectory() as scratch:  # what is written must load
        check = Path(scratch) / "policy.json"
        check.write_text(text, encoding="utf-8")
        load_policy(check)
    for c in classes:
        typer.echo(f"  {c.action:<16} {c.tool}  [{c.describe()}]", err=True)
    if unknown := policy_init.unclassified(classes):
        typer.echo(
            f"warning: {len(unknown)} tool(s) have neither a catalog entry nor annotations, so they require "
            f"approval: {', '.join(unknown)}. Add them to a catalog in {config_dir / 'catalog'} or edit the rules.",
            err=True,
        )
    if to_stdout:
        typer.echo(text, nl=False)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {target}: {len(classes)} tool(s) of '{server}'; check it with `holdgate policy check {target}`")


@app.command()
def replay(
    candidate: Annotated[Path, typer.Argument(help="The candidate policy file (same format as policy.json).")],
    since: Annotated[
        str, typer.Option(help="Oldest calls to replay: an age (7d, 12h, 30m) or a UTC time (2026-11-24T12:00).")
    ] = "7d",
    until: Annotated[
        str | None, typer.Option(help="Newest calls (excluded): an age or a UTC time; default now.")
    ] = None,
    grant: Annotated[str | None, typer.Option("--grant", "-g", help="Only this grant's calls.")] = None,
    server: Annotated[str | None, typer.Option("--server", "-s", help="Only calls to this server.")] = None,
    examples: Annotated[int, typer.Option(min=0, max=100, help="Example calls shown per change.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of tables.")] = False,
) -> None:
    """Replay CANDIDATE on the audited calls: what would it have changed?

    Each call is decided by the candidate with its arguments as the audit recorded them (a case that
    depends on a redacted value is reported undecidable, never guessed) and the candidate's rate limits are
    replayed in time order with the recorded times. Prints the calls whose verdict would change, by
    (recorded -> candidate) verdict and by rule, with examples, and the refusals the limits would have caused.
    """
    from datetime import UTC, datetime

    from service import db
    from service.audit import replay as replay_audit
    from service.configfile import ConfigError
    from service.settings import get_settings

    try:
        policy = replay_audit.load_candidate(candidate)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    now = datetime.now(UTC)
    try:
        flt = replay_audit.ReplayFilter(
            since=replay_audit.time_point(since, now=now),
            until=replay_audit.time_point(until, now=now) if until is not None else None,
            grant=grant,
            server=server,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = get_settings()
    report = db.run_in_session(
        settings.effective_database_url,
        lambda session: replay_audit.replay(session, policy, flt, examples=examples),
        migrate=settings.run_migrations,
    )
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
        return
    typer.echo(replay_audit.describe(report))


def _load(file: Path | None) -> Policy:
    from service.configfile import ConfigError
    from service.policy.compiler import load_policy
    from service.settings import get_settings

    path = file if file is not None else get_settings().policy_path
    try:
        return load_policy(path)
    except ConfigError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None


def _parse_args(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"not valid JSON: {exc.msg} at column {exc.colno}", param_hint="--args") from None
    if not isinstance(value, dict):
        raise typer.BadParameter('must be a JSON object, like \'{"jobId": "42"}\'', param_hint="--args")
    return value
