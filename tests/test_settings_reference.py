"""docs/settings.md is what tools/settings_reference.py writes from the settings models: a setting added, renamed
or redescribed without regenerating the reference fails here."""

from __future__ import annotations

import subprocess
import sys

from tests.support.harness import ROOT


def test_the_settings_reference_is_up_to_date():
    done = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "settings_reference.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr + "\n(run: python tools/settings_reference.py)"


def test_the_reference_names_every_documented_variable():
    from pydantic import BaseModel

    from service.settings import FLAT_NAMES, Settings

    text = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    top_level = [
        name
        for name, field in Settings.model_fields.items()
        if not field.exclude and not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel))
    ]
    names = [f"HOLDGATE_{name.upper()}" for name in [*top_level, *FLAT_NAMES]]
    assert [name for name in names if f"`{name}`" not in text] == []
    for channel_variable in ("HOLDGATE_SLACK_BOT_TOKEN", "HOLDGATE_SMTP_URL", "HOLDGATE_WEBHOOK_SECRET"):
        assert f"`{channel_variable}`" in text
