"""`holdgate policy ...`: check a policy file and explain a decision, from the command line.

A typer sub-app; `service/cli.py` mounts it with `app.add_typer(policy_cli.app, name="policy")`.
Only a thin layer over `load_policy` and `explain`.
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
