"""`holdgate policy ...`: check a policy file, explain a decision, write a starter policy for a server.

A typer sub-app; `service/cli.py` mounts it with `app.add_typer(policy_cli.app, name="policy")`.
Only a thin layer over `load_policy`, `explain` and `service.commands.policy_init`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from service.configfile import ConfigError
from service.policy.compiler import load_policy
from service.policy.engine import Policy
from service.policy.explain import explain as explain_text
from service.settings import get_settings

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
    from service.gateway.servers import load_servers

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
    from service.gateway.upstream import UpstreamUnavailable

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


def _load(file: Path | None) -> Policy:
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
