"""`holdgate approve ID --arguments JSON`: approve one held call with changed arguments, as the local operator.

A thin layer over `ApprovalService.approve_edited`: it reads the JSON, loads the policy the gateway serves (the edited
call is evaluated by it) and prints the outcome or the refusal (exit 1; bad JSON exits 2, like a bad option).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from rich.console import Console

    from service.settings import Settings


def parse_arguments(text: str) -> Any:
    """The `--arguments` JSON (any JSON value: the service says why a non-object cannot be used)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(
            f"not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", param_hint="--arguments"
        ) from None
    except RecursionError:
        raise typer.BadParameter("nested too deeply to read", param_hint="--arguments") from None


def approve_edited(
    decision_id: str,
    arguments_json: str,
    reason: str | None,
    *,
    settings: Settings,
    with_approvals: Callable[[Settings, Callable[[Any], Awaitable[Any]]], Any],
    console: Console,
    err_console: Console,
) -> None:
    from service.approvals import LOCAL_OPERATOR, ApprovalError, Voter
    from service.configfile import ConfigError
    from service.policy import load_policy

    arguments = parse_arguments(arguments_json)
    try:
        policy = load_policy(settings.policy_path)
    except ConfigError as exc:
        err_console.print(f"[red]the policy the edited call is checked against does not load: {exc}[/red]")
        raise typer.Exit(1) from None

    async def vote(service: Any) -> Any:
        return await service.approve_edited(
            decision_id, Voter("operator", LOCAL_OPERATOR), arguments, policy=policy, via="cli", reason=reason
        )

    try:
        outcome = with_approvals(settings, vote)
    except ApprovalError as exc:
        err_console.print(f"[red]{exc.message}[/red]")
        raise typer.Exit(1) from None
    edited = outcome.decision.edit_diff is not None
    console.print(outcome.message + (" (with edits)" if edited else " (the arguments are unchanged: a plain approval)"))
