"""Settings sections keep the documented flat names (README "Configuration") working."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import FLAT_NAMES, SECTIONS, ApprovalSettings, GatewaySettings, Settings


def test_every_flat_name_names_a_field_of_its_section():
    for flat, (section, name) in FLAT_NAMES.items():
        assert name in SECTIONS[section].model_fields, flat
    assert not set(FLAT_NAMES) & set(Settings.model_fields), "a flat name is not also a top-level field"


def test_flat_environment_names_set_the_sections(monkeypatch):
    monkeypatch.setenv("HOLDGATE_APPROVAL_HOLD_S", "12")
    monkeypatch.setenv("HOLDGATE_MAX_SESSIONS", "7")
    monkeypatch.setenv("HOLDGATE_ALLOWED_HOSTS", '["holdgate.example:*"]')
    monkeypatch.setenv("HOLDGATE_AUDIT_RETENTION_DAYS", "3")
    monkeypatch.setenv("HOLDGATE_CLAIM_LEASE_S", "20")
    settings = Settings(_env_file=None)
    assert settings.approvals.hold_s == 12
    assert settings.approvals.claim_lease_s == 20
    assert settings.gateway.max_sessions == 7
    assert settings.gateway.allowed_hosts == ["holdgate.example:*"]
    assert settings.audit.retention_days == 3


def test_the_nested_form_works_too(monkeypatch):
    monkeypatch.setenv("HOLDGATE_APPROVALS__POLL_INTERVAL_S", "4")
    assert Settings(_env_file=None).approvals.poll_interval_s == 4


def test_keyword_arguments_beat_the_environment_which_beats_the_env_file(monkeypatch, tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("HOLDGATE_MAX_SESSIONS=5\nHOLDGATE_APPROVAL_HOLD_S=6\nHOLDGATE_OUTBOX_MAX_ATTEMPTS=3\n")
    monkeypatch.setenv("HOLDGATE_MAX_SESSIONS", "8")
    monkeypatch.setenv("HOLDGATE_APPROVAL_HOLD_S", "9")
    settings = Settings(_env_file=env_file, approval_hold_s=30)
    assert settings.approvals.hold_s == 30, "a keyword argument wins"
    assert settings.gateway.max_sessions == 8, "the environment wins over the .env file"
    assert settings.approvals.outbox_max_attempts == 3, "the .env file still counts"


def test_a_section_given_whole_is_taken_as_given():
    settings = Settings(_env_file=None, gateway=GatewaySettings(max_sessions=3), approvals=ApprovalSettings(hold_s=1))
    assert (settings.gateway.max_sessions, settings.approvals.hold_s) == (3, 1)


def test_a_bad_value_under_a_flat_name_is_refused(monkeypatch):
    monkeypatch.setenv("HOLDGATE_SESSION_IDLE_S", "0")
    with pytest.raises(ValidationError, match="greater than 0"):
        Settings(_env_file=None)


def test_the_anonymous_grant_is_still_refused_off_loopback():
    with pytest.raises(ValidationError, match="HOLDGATE_ANONYMOUS_DEV_GRANT is only allowed on a loopback"):
        Settings(_env_file=None, anonymous_dev_grant=True, host="0.0.0.0")


def test_the_shadow_policy_sits_beside_the_policy_unless_told(monkeypatch, tmp_path):
    assert Settings(_env_file=None, config_dir=tmp_path).shadow_policy_path == tmp_path / "policy.shadow.json"
    monkeypatch.setenv("HOLDGATE_SHADOW_POLICY_PATH", str(tmp_path / "elsewhere.json"))
    assert Settings(_env_file=None).shadow_policy_path == tmp_path / "elsewhere.json"
