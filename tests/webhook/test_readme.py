"""The receiver's check in README "Webhook" works on what the channel sends (so the README cannot drift)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.support.harness import ROOT
from tests.webhook.receiver import Receiver
from tests.webhook.support import SECRET, a_decision, open_channel


def readme_check() -> Any:
    section = ROOT.joinpath("README.md").read_text().split("\n## Webhook\n", 1)[1].split("\n## ", 1)[0]
    [code] = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md#webhook", "exec"), namespace)
    namespace["SECRET"] = SECRET.encode()
    return namespace["holdgate_notification"]


async def test_the_readme_check_accepts_what_the_channel_sends_and_nothing_else(receiver: Receiver):
    check = readme_check()
    async with open_channel(receiver.url) as channel:
        delivery = await channel.deliver("request", a_decision(), None)
    [got] = receiver.received

    assert check(got.headers, got.body)["delivery"] == delivery
    with pytest.raises(ValueError, match="bad signature"):
        check(got.headers, got.body.replace(b"job-7", b"job-8"))
    stale = {**got.headers, "X-Holdgate-Timestamp": str(int(got.headers["X-Holdgate-Timestamp"]) - 3600)}
    with pytest.raises(ValueError, match="stale"):
        check(stale, got.body)
    with pytest.raises(ValueError, match="bad signature"):
        check({**got.headers, "X-Holdgate-Signature": "sha256=" + "0" * 64}, got.body)
