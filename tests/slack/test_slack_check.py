"""`holdgate slack check`: the token (auth.test) and the channels requests go to (conversations.info)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from bots.slack.cli import configured_channels, run_check
from bots.slack.settings import SlackSettings
from service.cli import app
from service.settings import Settings
from tests.slack.fake_slack import BOT_TOKEN, FakeSlack
from tests.slack.support import SIGNING_SECRET, slack_policy


def settings_for(fake: FakeSlack, tmp_path, **changes) -> Settings:
    values = {
        "bot_token": BOT_TOKEN,
        "signing_secret": SIGNING_SECRET,
        "api_url": fake.url.rstrip("/"),  # a missing trailing slash is added
        **changes,
    }
    slack = SlackSettings(_env_file=None, **values)
    return Settings(
        _env_file=None,
        config_dir=tmp_path,
        public_url="https://holdgate.example.com",
        channel_settings={"slack": slack},
    )


async def test_a_good_token_and_a_channel_the_bot_is_in(tmp_path):
    async with FakeSlack() as fake:
        report = await run_check(settings_for(fake, tmp_path), ["C0APPROVALS"])
    assert report.ok, report.lines
    assert "ok    token: bot holdgate (U0BOT) in workspace holdgate test" in report.lines
    assert "ok    channel C0APPROVALS (#approvals): the bot is a member" in report.lines
    assert any("https://holdgate.example.com/slack/interactions" in line for line in report.lines)
    assert [c.method for c in fake.calls] == ["auth.test", "conversations.info"], "read-only: nothing is posted"


async def test_a_bad_token_a_missing_channel_and_a_private_channel_fail(tmp_path):
    async with FakeSlack() as fake:
        fake.channels["G0SECRET"] = {"id": "G0SECRET", "name": "secret", "is_member": False, "is_private": True}
        bad_token = await run_check(settings_for(fake, tmp_path, bot_token="xoxb-wrong"), ["C0APPROVALS"])
        channels = await run_check(settings_for(fake, tmp_path), ["C0MISSING", "G0SECRET"])
    assert not bad_token.ok and "FAIL  auth.test: invalid_auth; check HOLDGATE_SLACK_BOT_TOKEN" in bad_token.lines
    assert not channels.ok
    assert "FAIL  channel C0MISSING: channel_not_found (invite the bot, or check the ID)" in channels.lines
    assert "FAIL  channel G0SECRET (#secret) is private and the bot is not a member: /invite the bot there" in (
        channels.lines
    )


async def test_slack_unreachable(tmp_path):
    async with FakeSlack() as fake:
        settings = settings_for(fake, tmp_path)
    report = await run_check(settings, [])  # the fake is gone
    assert not report.ok and report.lines[-1].startswith("FAIL  auth.test: cannot reach Slack at")


def test_the_command_checks_the_default_and_the_policys_channels(tmp_path, monkeypatch):
    (tmp_path / "policy.json").write_text(json.dumps(slack_policy(slack_channel="C0POLICY")))
    with FakeSlack.in_thread() as fake:
        fake.channels["C0POLICY"] = {"id": "C0POLICY", "name": "policy", "is_member": True, "is_private": False}
        for name, value in {
            "CONFIG_DIR": str(tmp_path),
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_APP_TOKEN": "xapp-1-test",
            "SLACK_API_URL": fake.url,
            "SLACK_DEFAULT_CHANNEL": "C0APPROVALS",
        }.items():
            monkeypatch.setenv(f"HOLDGATE_{name}", value)
        from service.settings import get_settings

        get_settings.cache_clear()
        try:
            assert configured_channels(get_settings()) == ["C0APPROVALS", "C0POLICY"]
            result = CliRunner().invoke(app, ["slack", "check"])
        finally:
            get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "channel C0APPROVALS (#approvals)" in result.output and "channel C0POLICY (#policy)" in result.output
    assert "Socket Mode" in result.output and result.output.rstrip().endswith("Slack is ready.")


def test_the_app_manifest_matches_what_holdgate_uses():
    from pathlib import Path

    manifest = (Path(__file__).resolve().parents[2] / "config/slack-app-manifest.yaml").read_text()
    assert "request_url: https://holdgate.example.com/slack/interactions" in manifest
    assert "socket_mode_enabled: false" in manifest and "is_enabled: true" in manifest
    for scope in ("chat:write", "chat:write.public", "im:write", "channels:read", "groups:read"):
        assert f"      - {scope} " in manifest
    assert "\t" not in manifest, "YAML has no tabs"


def test_a_bot_token_alone_is_refused_at_start_up():
    import pydantic
    import pytest

    with pytest.raises(pydantic.ValidationError, match="HOLDGATE_SLACK_SIGNING_SECRET"):
        SlackSettings(_env_file=None, bot_token=BOT_TOKEN)
    assert SlackSettings(_env_file=None, bot_token=BOT_TOKEN, app_token="xapp-1").app_token
