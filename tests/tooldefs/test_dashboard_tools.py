"""The dashboard shows a changed tool on the Rules page, its diff on the tool's page, and accepts it with a click."""

from __future__ import annotations

from urllib.parse import unquote_plus as unquote

from tests.dashboard.support import browser, csrf_of, sign_in
from tests.support.harness import run_gateway, servers, text_of
from tests.tooldefs.test_tool_changes import definitions, policy, ran


async def test_rules_page_links_a_changed_tool_to_its_diff_and_one_click_accepts_it(tmp_path):
    settings = {"approval_hold_s": 0.3}
    async with run_gateway(tmp_path, policy=policy(), servers=servers(tmp_path), **settings) as gw:
        tokens = gw.tokens
    changed = servers(tmp_path, JOBS_TOOLS_VERSION="2")
    async with (
        run_gateway(tmp_path, policy=policy(), servers=changed, grants=[], tokens=tokens, **settings) as gw,
        browser(gw) as client,
    ):
        csrf = await sign_in(client, "alice")
        rules = (await client.get("/rules")).text
        assert 'href="/tools/jobs/cancel-async-job">changed: review</a>' in rules
        assert 'href="/tools/jobs/purge-async-jobs">new: review</a>' in rules
        assert "gets <code>require_approval</code> until someone accepts it" in rules

        page = await client.get("/tools/jobs/cancel-async-job")
        assert page.status_code == 200
        assert '<span class="del">-    &#34;destructiveHint&#34;: true,</span>' in page.text
        assert "deleteResults" in page.text
        current = (await definitions(gw))["cancel-async-job"].current_sha256
        assert f'name="sha256" value="{current}"' in page.text

        # Without the session's CSRF token: refused, nothing accepted.
        forged = await client.post("/tools/jobs/cancel-async-job/accept", data={"csrf": "x", "sha256": current})
        assert forged.status_code == 403
        # A hash that is not the current one (the tool changed again since the page was read): refused.
        stale = await client.post("/tools/jobs/cancel-async-job/accept", data={"csrf": csrf, "sha256": "0" * 64})
        assert stale.status_code == 303 and "review the current diff" in unquote(stale.headers["location"])
        assert (await definitions(gw))["cancel-async-job"].accepted_by == "first sight"

        accepted = await client.post(
            "/tools/jobs/cancel-async-job/accept", data={"csrf": csrf_of(page.text), "sha256": current}
        )
        assert accepted.status_code == 303
        assert "accepted" in unquote(accepted.headers["location"])
        row = (await definitions(gw))["cancel-async-job"]
        assert (row.accepted_sha256, row.accepted_by, row.accepted_via) == (current, "alice", "dashboard")
        after = await client.get("/tools/jobs/cancel-async-job")
        assert "<strong>accepted</strong>" in after.text and 'data-testid="accept"' not in after.text

        async with gw.session("jobs") as session:
            result = await session.call_tool("cancel-async-job", {"jobId": "j"})
        assert "approval pending" not in text_of(result)
        assert len(ran(tmp_path, "cancel-async-job")) == 1

        missing = await client.get("/tools/jobs/no-such-tool")
        assert missing.status_code == 404


async def test_a_held_calls_decision_page_shows_the_change(tmp_path):
    settings = {"approval_hold_s": 0.3}
    async with run_gateway(tmp_path, policy=policy(), servers=servers(tmp_path), **settings) as gw:
        tokens = gw.tokens
    changed = servers(tmp_path, JOBS_TOOLS_VERSION="2")
    async with (
        run_gateway(tmp_path, policy=policy(), servers=changed, grants=[], tokens=tokens, **settings) as gw,
        browser(gw) as client,
    ):
        async with gw.session("jobs") as session:
            held = await session.call_tool("cancel-async-job", {"jobId": "j"})
        decision_id = text_of(held).split("decision ")[1].split()[0].strip("(),.")
        await sign_in(client, "bob")
        page = (await client.get(f"/decisions/{decision_id}")).text
        assert 'data-testid="tool-change"' in page
        assert "changed since it was accepted" in page
        assert 'href="/tools/jobs/cancel-async-job">review and accept</a>' in page
