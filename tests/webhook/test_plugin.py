"""`bots.webhook.plugin`: off without a URL, refused when misconfigured (naming the settings, never their
values), read from `HOLDGATE_WEBHOOK_*`, loaded by name like any channel."""

from __future__ import annotations

import pytest

import bots.webhook
from bots.webhook import WebhookChannel, WebhookSettings, plugin
from service.approvals.channels import load_plugins
from service.settings import Settings
from tests.webhook.support import SECRET


def settings_with(**section: object) -> Settings:
    return Settings(_env_file=None, channel_settings={"webhook": WebhookSettings(**section)})


def test_exported_members():
    assert sorted(bots.webhook.__all__) == ["WebhookChannel", "WebhookSettings", "plugin"]
    assert all(hasattr(bots.webhook, name) for name in bots.webhook.__all__)


def test_loaded_by_name_with_no_router_and_no_contacts():
    [loaded] = load_plugins(["bots.webhook"])
    assert loaded is plugin
    assert plugin.name == "webhook" and plugin.router is None and plugin.check_contact is None


def test_off_without_a_url():
    assert plugin.build(settings_with(secret=SECRET)) is None
    assert plugin.build(settings_with()) is None


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example/secret-path",
        "file:///etc/secret-path",
        "hooks.example/secret-path",
        "https:///secret-path",
        "javascript:secret-path",
    ],
)
def test_refuses_a_url_that_is_not_http_or_https_without_echoing_it(url: str):
    with pytest.raises(ValueError) as refused:
        plugin.build(settings_with(url=url, secret=SECRET))
    assert "HOLDGATE_WEBHOOK_URL must be an http:// or https:// URL" in str(refused.value)
    assert "secret-path" not in str(refused.value)


@pytest.mark.parametrize("secret", [None, "", "fifteen-chars-x", "changethis", "CHANGEME", "xxxxxxxxxxxxxxxx"])
def test_refuses_a_missing_short_or_placeholder_secret_without_echoing_it(secret: str | None):
    with pytest.raises(ValueError) as refused:
        plugin.build(settings_with(url="https://hooks.example/h", secret=secret))
    message = str(refused.value)
    assert "HOLDGATE_WEBHOOK_SECRET is missing, a placeholder or shorter than 16 characters" in message
    assert not secret or secret not in message


def test_names_every_problem_at_once():
    with pytest.raises(ValueError) as refused:
        plugin.build(settings_with(url="ftp://hooks.example", secret="short"))
    assert "HOLDGATE_WEBHOOK_URL" in str(refused.value) and "HOLDGATE_WEBHOOK_SECRET" in str(refused.value)


def test_a_secret_of_16_characters_is_enough():
    channel = plugin.build(settings_with(url="https://hooks.example/h", secret="0123456789abcdef"))
    assert isinstance(channel, WebhookChannel)
    assert channel.target.origin == "https://hooks.example:443"


def test_an_ipv6_receiver_is_named_with_brackets():
    channel = plugin.build(settings_with(url="http://[::1]:8080/T0KEN", secret=SECRET))
    assert isinstance(channel, WebhookChannel)
    assert channel.target.origin == "http://[::1]:8080"


def test_reads_its_section_from_the_environment(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir("/")  # no .env file here
    monkeypatch.setenv("HOLDGATE_WEBHOOK_URL", "https://hooks.example/from-env")
    monkeypatch.setenv("HOLDGATE_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("HOLDGATE_WEBHOOK_TIMEOUT_S", "2.5")
    monkeypatch.setenv("HOLDGATE_WEBHOOK_MAX_BODY_BYTES", "65536")
    channel = plugin.build(Settings(_env_file=None, public_url="https://holdgate.example"))
    assert isinstance(channel, WebhookChannel)
    assert str(channel.target.url) == "https://hooks.example/from-env"
    assert (channel.timeout_s, channel.max_body_bytes, channel.public_url) == (2.5, 65536, "https://holdgate.example")


@pytest.mark.parametrize(
    ("name", "value"),
    [("TIMEOUT_S", "0"), ("TIMEOUT_S", "nan"), ("TIMEOUT_S", "600"), ("MAX_BODY_BYTES", "100")],
)
def test_refuses_out_of_range_knobs(monkeypatch: pytest.MonkeyPatch, name: str, value: str):
    monkeypatch.chdir("/")
    monkeypatch.setenv("HOLDGATE_WEBHOOK_URL", "https://u:p4ss@hooks.example/T0KEN")
    monkeypatch.setenv(f"HOLDGATE_WEBHOOK_{name}", value)
    with pytest.raises(ValueError) as refused:
        WebhookSettings()
    assert name.lower() in str(refused.value)
    assert "p4ss" not in str(refused.value) and "T0KEN" not in str(refused.value)


def test_plain_http_to_another_host_is_allowed_with_a_warning(caplog: pytest.LogCaptureFixture):
    assert plugin.build(settings_with(url="http://hooks.example/T0KEN", secret=SECRET)) is not None
    assert "plain http" in caplog.text and "T0KEN" not in caplog.text
    caplog.clear()
    assert plugin.build(settings_with(url="http://127.0.0.1:9/h", secret=SECRET)) is not None
    assert "plain http" not in caplog.text
