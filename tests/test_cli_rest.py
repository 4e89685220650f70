"""`holdgate approve`, `deny` and `decisions list` with `--url`: through a running holdgate's REST API, as a person.

A real holdgate on a real port, decisions opened by its own approvals service from its own policy, and the
command line in a separate process (a fresh interpreter, as an operator's shell runs it), with the URL and the
person's token in the environment.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from tests.approvals.support import PERSON_TOKENS, approval_policy, open_decisions, status_of
from tests.support.harness import ROOT, Gateway, run_gateway


async def holdgate(gw: Gateway, *args: str, person: str | None = "alice", code: int = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOLDGATE_")}
    env |= {"PYTHONPATH": str(ROOT), "HOLDGATE_URL": gw.url, "HOLDGATE_DATA_DIR": "/nonexistent/holdgate"}
    if person is not None:
        env["HOLDGATE_PERSON_TOKEN"] = PERSON_TOKENS.get(person, person)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    return done


async def test_list_approve_and_deny_through_the_api_as_a_person(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        first, second, third = await open_decisions(gw, 3)

        listed = json.loads((await holdgate(gw, "decisions", "list", "--status", "pending", "--json")).stdout)
        assert listed["total"] == 3 and {d["id"] for d in listed["items"]} == {first, second, third}
        table = (await holdgate(gw, "decisions", "list")).stdout
        assert first in table and "3 decision(s)" in table

        approved = await holdgate(gw, "approve", first, "--reason", "looks fine")
        assert "approved" in approved.stdout
        view = await status_of(gw, first)
        assert view.status == "approved" and view.decided_by == "alice" and view.decided_via == "api"

        again = await holdgate(gw, "approve", first, person="bob", code=1)
        assert "409" in again.stderr and "already decided" in again.stderr

        denied = await holdgate(gw, "deny", second, third, "--reason", "not today")
        assert "2 decision(s): 2 denied" in denied.stdout
        assert (await status_of(gw, second)).status == "denied" and (await status_of(gw, third)).reason == "not today"


async def test_all_pending_through_the_api_and_refusals_name_each_decision(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        ids = await open_decisions(gw, 3)
        own = await open_decisions(gw, 1, grant="alice")  # alice cannot approve her own call
        done = await holdgate(gw, "approve", "--all-pending", code=1)
        assert "4 decision(s): 3 approved" in done.stdout and "1 refused" in done.stdout
        assert own[0] in done.stderr
        for decision_id in ids:
            assert (await status_of(gw, decision_id)).status == "approved"
        assert (await status_of(gw, own[0])).status == "pending"


async def test_a_wrong_token_a_non_approver_and_a_missing_token_change_nothing(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        [decision_id] = await open_decisions(gw, 1)
        unknown = await holdgate(gw, "approve", decision_id, person="not-a-token", code=1)
        assert "401" in unknown.stderr and "person's token" in unknown.stderr
        outsider = await holdgate(gw, "approve", decision_id, person="carol", code=1)  # not in group ops
        assert "403" in outsider.stderr
        missing = await holdgate(gw, "deny", decision_id, "--reason", "x", person=None, code=2)
        assert "HOLDGATE_PERSON_TOKEN" in missing.stderr
        assert (await status_of(gw, decision_id)).status == "pending"


async def test_an_unreachable_or_malformed_url_is_one_clear_line(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        port = gw.url.rsplit(":", 1)[1]
    gone = Gateway(url=f"http://127.0.0.1:{port}", state=gw.state, tokens={})  # stopped: nothing listens
    refused = await holdgate(gone, "decisions", "list", code=1)
    assert f"cannot reach holdgate at http://127.0.0.1:{port}" in refused.stderr
    assert "Traceback" not in refused.stderr
    wrong = Gateway(url="holdgate.example.com", state=gw.state, tokens={})
    malformed = await holdgate(wrong, "decisions", "list", code=2)
    assert "http:// or https://" in malformed.stderr


async def test_the_api_path_imports_no_database_code(tmp_path):
    probe = "import json, sys\nfrom service.cli import app\ntry:\n    app(sys.argv[1:], prog_name='holdgate')\n"
    probe += "except SystemExit:\n    pass\nprint(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        [decision_id] = await open_decisions(gw, 1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOLDGATE_")}
        env |= {"PYTHONPATH": str(ROOT), "HOLDGATE_URL": gw.url, "HOLDGATE_PERSON_TOKEN": PERSON_TOKENS["alice"]}
        for args in (["decisions", "list", "--json"], ["approve", decision_id]):
            done = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True
            )
            loaded = set(json.loads(done.stdout.strip().splitlines()[-1]))
            heavy = {"sqlalchemy", "sqlmodel", "pydantic_settings", "fastapi", "mcp", "httpx", "alembic", "rich"}
            assert not loaded & heavy, (args, sorted(loaded & heavy))
        assert (await status_of(gw, decision_id)).status == "approved"
