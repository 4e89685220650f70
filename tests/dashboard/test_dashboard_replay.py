"""The Rules page replays a pasted or uploaded candidate policy on the audited calls and shows the changes table
(the same report as `holdgate policy replay`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.approvals.support import approval_policy
from tests.dashboard.support import browser, sign_in
from tests.support.harness import run_gateway, servers


def candidate() -> str:
    return json.dumps(
        {
            "version": "1",
            "default": "deny",
            "tools": {
                "list-async-jobs": {"action": "allow"},
                "cancel-async-job": {"cases": [{"when": "args.jobId.startsWith('prod-')", "action": "deny"}]},
            },
        }
    )


async def test_paste_or_upload_a_candidate_and_see_what_would_change(tmp_path: Path) -> None:
    policy = approval_policy()
    policy["tools"]["cancel-async-job"] = {"action": "allow"}
    async with run_gateway(tmp_path, policy=policy, servers=servers(tmp_path)) as gw:
        async with gw.session("jobs") as session:
            for job in ("prod-1", "prod-2", "dev-1"):
                await session.call_tool("cancel-async-job", {"jobId": job})
            await session.call_tool("list-async-jobs", {})
        await gw.state.audit.flush()
        async with browser(gw) as client:
            csrf = await sign_in(client, "alice")
            pasted = await client.post("/rules/replay", data={"csrf": csrf, "candidate": candidate(), "since": "1h"})
            uploaded = await client.post(
                "/rules/replay",
                data={"csrf": csrf, "since": "1h"},
                files={"file": ("candidate.json", candidate().encode(), "application/json")},
            )
            broken = await client.post(
                "/rules/replay", data={"csrf": csrf, "candidate": '{"version": "1", "default": "nope"}'}
            )
            bad_time = await client.post("/rules/replay", data={"csrf": csrf, "candidate": candidate(), "since": "x"})
            forged = await client.post("/rules/replay", data={"csrf": "forged", "candidate": candidate()})

    for page in (pasted, uploaded):
        assert page.status_code == 200, page.text
        # The page's title is its name; the replay section is rendered once, in the page's content.
        assert re.search(r"<title>Rules · holdgate</title>", page.text), page.text[:300]
        assert page.text.count('id="replay"') == 1
        table = page.text[page.text.index('id="replay-changes"') :]
        rows = re.findall(r'<tr class="(changed|unchanged)">(.*?)</tr>', table, re.S)
        cells = [(kind, re.findall(r"action-([a-z_]+)", row), re.findall(r"<td>(\d+)</td>", row)) for kind, row in rows]
        assert ("changed", ["allow", "deny"], ["2"]) in cells
        assert ("unchanged", ["allow", "allow"], ["2"]) in cells
        assert "#1 jobs/cancel-async-job" in page.text and "prod-1" in page.text
    assert broken.status_code == 200 and "cannot replay: candidate: default" in broken.text
    said = re.findall(r"data-testid=\"replay-problem\">(.*?)</p>", broken.text, re.S)[0]
    assert "/" not in said, "the scratch file's path is not shown"
    assert "neither an age" in bad_time.text
    assert forged.status_code == 403
