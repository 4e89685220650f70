"""`holdgate slack check`: is the bot token good, and can the bot post where requests will go?

Read-only: `auth.test` for the token, `conversations.info` for each channel requests are posted to
(the `--channel` options, else `HOLDGATE_SLACK_DEFAULT_CHANNEL` and every rule's `slack_channel`).
Nothing is posted. Exit status 1 when anything is wrong, with what to do about it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from bots.slack.settings import SlackSettings
from service.settings import Settings, get_settings

app = typer.Typer(no_args_is_help=True, help="Slack approvals.")


@dataclass
class CheckReport:
    ok: bool = True
    lines: list[str] = field(default_factory=list)

    def good(self, line: str) -> None:
        self.lines.append(f"ok    {line}")

    def bad(self, line: str) -> None:
        self.ok = False
        self.lines.append(f"FAIL  {line}")

    def note(self, line: str) -> None:
        self.lines.append(f"note  {line}")


async def run_check(settings: Settings, channels: list[str]) -> CheckReport:
    """The checks behind `holdgate slack check` (a plain function, so tests call it directly)."""
    from slack_sdk.errors import SlackApiError

    from bots.slack.channel import thread_of, web_client

    report = CheckReport()
    slack = settings.section("slack", SlackSettings)
    if slack.bot_token is None:
        report.bad("HOLDGATE_SLACK_BOT_TOKEN is not set (the bot token, xoxb-…, from the app's OAuth page)")
        return report
    if slack.signing_secret is None and slack.app_token is None:
        report.bad("set HOLDGATE_SLACK_SIGNING_SECRET (HTTP) or HOLDGATE_SLACK_APP_TOKEN (Socket Mode)")
    elif slack.app_token is not None:
        report.note("interactions arrive over Socket Mode (HOLDGATE_SLACK_APP_TOKEN)")
    else:
        base = settings.public_url or "https://<HOLDGATE_PUBLIC_URL>"
        report.note(f"interactions arrive at {base.rstrip('/')}/slack/interactions (set it as the Request URL)")
    client = web_client(slack)
    try:
        auth = await client.auth_test()
    except SlackApiError as exc:
        report.bad(f"auth.test: {_error(exc)}; check HOLDGATE_SLACK_BOT_TOKEN")
        return report
    except Exception as exc:
        report.bad(f"auth.test: cannot reach Slack at {client.base_url}: {type(exc).__name__}: {exc}")
        return report
    report.good(f"token: bot {auth.get('user')} ({auth.get('user_id')}) in workspace {auth.get('team')}")
    if not channels:
        report.note("no Slack channel configured: requests are sent as DMs to approvers with a Slack ID")
    for name in channels:
        channel_id, _ = thread_of(name)
        if channel_id.startswith("#"):
            report.note(f"{name}: a channel name; use its ID (C…) so renames do not break requests")
            continue
        try:
            info = (await client.conversations_info(channel=channel_id))["channel"]
        except SlackApiError as exc:
            report.bad(f"channel {name}: {_error(exc)} (invite the bot, or check the ID)")
            continue
        label = f"channel {name} (#{info.get('name', '?')})"
        if info.get("is_archived"):
            report.bad(f"{label} is archived")
        elif info.get("is_member") or not info.get("is_private"):
            member = "the bot is a member" if info.get("is_member") else "public (posting needs chat:write.public)"
            report.good(f"{label}: {member}")
        else:
            report.bad(f"{label} is private and the bot is not a member: /invite the bot there")
    return report


def configured_channels(settings: Settings) -> list[str]:
    """The default channel and every rule's `slack_channel`, in that order, without repeats."""
    default_channel = settings.section("slack", SlackSettings).default_channel
    found = [default_channel] if default_channel else []
    if settings.policy_path.exists():
        from service.policy.holder import PolicyHolder

        policy = PolicyHolder(settings.policy_path).current
        found += [
            channel for spec in _approval_specs(policy) if (channel := spec.routing.get("slack", {}).get("channel"))
        ]
    return list(dict.fromkeys(found))


def _approval_specs(policy) -> list:
    layers = [policy.rules, *(grant.rules for grant in policy.grants.values())]
    verdicts = [rule.verdict for layer in layers for rule in layer.rules]
    verdicts += [grant.default for grant in policy.grants.values() if grant.default is not None]
    return [verdict.approval for verdict in [*verdicts, policy.default] if verdict.approval is not None]


def _error(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    data = getattr(response, "data", None)
    if isinstance(data, dict) and data.get("error"):
        return str(data["error"])
    return f"HTTP {getattr(response, 'status_code', '?')}"


@app.command()
def check(
    channel: Annotated[
        list[str] | None, typer.Option(help="Channel ID to check (repeatable); default: the configured ones.")
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Configuration directory (policy.json).")] = None,
) -> None:
    """Verify the bot token (auth.test) and that the bot can post in the configured channels."""
    settings = get_settings()
    if config is not None:
        settings = settings.model_copy(update={"config_dir": config})
    report = asyncio.run(run_check(settings, channel or configured_channels(settings)))
    for line in report.lines:
        typer.echo(line)
    if not report.ok:
        raise typer.Exit(1)
    typer.echo("Slack is ready.")
