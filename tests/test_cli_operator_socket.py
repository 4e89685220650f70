"""`holdgate approve`, `deny` and `decisions list` on the service's host: a running holdgate carries them out on its
operator socket (data_dir/holdgate.sock), and the command falls back to the database whenever it cannot.

A real holdgate (in this process, its own SQLite database in tmp_path/data), decisions opened by its approvals
service, and the command line in a separate process with the service's data directory, as an operator's shell on
the same host runs it. What a user relies on: the same answers as on the database, much sooner (the command imports
no database code), and never a vote on a database other than the one the command's own settings name.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from service.locations import OPERATOR_SOCKET_FILE, database_fingerprint
from tests.approvals.support import approval_policy, open_decisions, status_of
from tests.support.harness import ROOT, Gateway, run_gateway

PROBE = (
    "import json, sys\nfrom service.cli import app\ntry:\n    app(sys.argv[1:], prog_name='holdgate')\n"
    "except SystemExit as exit:\n    code = exit.code or 0\nelse:\n    code = 0\n"
    "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\nsys.exit(code)\n"
)
"""Runs the CLI, then prints (last, on stderr) the top-level packages it imported."""


def socket_of(tmp_path: Path) -> Path:
    return tmp_path / "data" / OPERATOR_SOCKET_FILE


async def holdgate(tmp_path: Path, *args: str, code: int = 0, **env: str) -> tuple[str, str, set[str]]:
    """Run the CLI as the operator on the service's host: its stdout, stderr and the packages it imported."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HOLDGATE_")}
    environ |= {"PYTHONPATH": str(ROOT), "HOLDGATE_DATA_DIR": str(tmp_path / "data")} | env
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", PROBE, *args],
        env=environ,
        cwd=tmp_path,  # no stray .env
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
    *message, modules = done.stderr.rstrip("\n").split("\n")
    return done.stdout, "\n".join(message), set(json.loads(modules))


def ask_raw(path: Path, payload: bytes) -> dict[str, Any]:
    """Send raw bytes to the operator socket; its one-line reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(str(path))
        try:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the service stopped reading a request too long, answered and closed
        with conn.makefile("rb") as stream:
            return json.loads(stream.readline())


def fingerprint(gw: Gateway) -> str:
    return database_fingerprint(gw.state.settings.effective_database_url)


async def test_the_commands_go_through_the_running_service_and_import_no_database_code(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        first, second, third, fourth = await open_decisions(gw, 4)
        mode = stat.S_IMODE(socket_of(tmp_path).stat().st_mode)
        assert stat.S_ISSOCK(socket_of(tmp_path).stat().st_mode) and mode == 0o600

        listed, _, imported = await holdgate(tmp_path, "decisions", "list", "--status", "pending", "--json")
        assert {d["id"] for d in json.loads(listed)["items"]} == {first, second, third, fourth}
        assert not imported & {"sqlalchemy", "sqlmodel", "pydantic", "pydantic_settings", "aiosqlite"}, imported

        approved, _, imported = await holdgate(tmp_path, "approve", first, "--reason", "looks fine")
        assert "approved" in approved and "sqlalchemy" not in imported
        view = await status_of(gw, first)
        assert (view.status, view.decided_by, view.decided_via, view.reason) == (
            "approved",
            "local-operator",
            "cli",
            "looks fine",
        )

        _, again, _ = await holdgate(tmp_path, "approve", first, code=1)
        assert "already decided" in again

        denied, _, imported = await holdgate(tmp_path, "deny", second, third, "--reason", "not today")
        assert "2 decision(s): 2 denied" in denied and "sqlalchemy" not in imported
        assert (await status_of(gw, third)).reason == "not today"

        table, _, _ = await holdgate(tmp_path, "decisions", "list")
        assert fourth in table and "4 decision(s)" in table


async def test_bulk_refusals_and_standing_terms_answer_as_on_the_database(tmp_path):
    policy = approval_policy(scopes={"tool": "1h"})
    async with run_gateway(tmp_path, policy=policy, servers={}) as gw:
        first, second = await open_decisions(gw, 2)
        _, bad_for, _ = await holdgate(tmp_path, "approve", first, "--scope", "tool", "--for", "soon", code=2)
        assert "invalid duration" in bad_for
        _, bad_scope, _ = await holdgate(tmp_path, "approve", first, "--scope", "everything", "--for", "1h", code=2)
        assert "unknown scope" in bad_scope
        assert (await status_of(gw, first)).status == "pending"

        standing, _, _ = await holdgate(tmp_path, "approve", first, "--scope", "tool", "--for", "30m")
        assert "approved" in standing and (await status_of(gw, first)).standing_id is not None

        bulk, refusals, _ = await holdgate(tmp_path, "approve", first, second, "missing-id", code=1)
        assert "3 decision(s): 1 approved" in bulk and "2 refused" in bulk
        assert first in refusals and "missing-id" in refusals
        assert (await status_of(gw, second)).status == "approved"


async def test_without_a_service_the_commands_open_the_database_and_answer_the_same(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        first, second = await open_decisions(gw, 2)
    assert not socket_of(tmp_path).exists(), "the service removes its socket when it stops"

    approved, _, imported = await holdgate(tmp_path, "approve", first)
    assert "approved" in approved and "sqlalchemy" in imported
    listed, _, _ = await holdgate(tmp_path, "decisions", "list", "--json")
    statuses = {d["id"]: d["status"] for d in json.loads(listed)["items"]}
    assert statuses == {first: "approved", second: "pending"}


async def test_a_stale_socket_of_a_killed_service_is_passed_by_and_replaced_by_the_next_service(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        [first] = await open_decisions(gw, 1)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # bound, never listening: what a SIGKILL leaves
    stale.bind(str(socket_of(tmp_path)))
    stale.close()
    approved, _, imported = await holdgate(tmp_path, "approve", first)
    assert "approved" in approved and "sqlalchemy" in imported

    async with run_gateway(tmp_path, policy=None, servers={}, grants=[]) as gw:
        [second] = await open_decisions(gw, 1, grant="other")
        denied, _, imported = await holdgate(tmp_path, "deny", second, "--reason", "no")
        assert "denied" in denied and "sqlalchemy" not in imported


async def test_a_service_that_closes_without_answering_leaves_the_command_to_the_database(tmp_path):
    """Something accepts on the socket and closes without a reply (a service stopping mid-request): the command
    does the work on the database itself, once."""
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        [first] = await open_decisions(gw, 1)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(socket_of(tmp_path)))
    listener.listen()
    accepted: list[bytes] = []

    def hang_up() -> None:
        conn, _ = listener.accept()
        with conn:
            accepted.append(conn.recv(65536))

    closer = asyncio.create_task(asyncio.to_thread(hang_up))
    try:
        approved, _, imported = await holdgate(tmp_path, "approve", first)
        await closer
    finally:
        listener.close()
    assert accepted and b'"op": "vote"' in accepted[0], "the command asked the socket first"
    assert "approved" in approved and "sqlalchemy" in imported


async def test_a_service_on_another_database_is_not_asked(tmp_path):
    """The service keeps its database elsewhere (HOLDGATE_DATABASE_URL) but its socket in this data directory:
    the command names the data directory's database, so the service refuses, and the command opens that one (here
    missing: the same clear error as with no service at all) and changes nothing in the service's."""
    elsewhere = f"sqlite+aiosqlite:///{tmp_path / 'elsewhere.db'}"
    (tmp_path / "data").mkdir(mode=0o700)
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}, database_url=elsewhere) as gw:
        [decision_id] = await open_decisions(gw, 1)
        assert socket_of(tmp_path).is_socket()
        _, missing, _ = await holdgate(tmp_path, "approve", decision_id, code=1)
        assert "holdgate.db" in missing
        assert (await status_of(gw, decision_id)).status == "pending"
        approved, _, imported = await holdgate(tmp_path, "approve", decision_id, HOLDGATE_DATABASE_URL=elsewhere)
        assert "approved" in approved and "sqlalchemy" not in imported


async def test_odd_requests_get_an_error_line_and_change_nothing(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        [decision_id] = await open_decisions(gw, 1)
        path, database = socket_of(tmp_path), fingerprint(gw)
        vote = {"op": "vote", "value": "approve", "ids": [decision_id]}

        def line(obj: object) -> bytes:
            return json.dumps(obj).encode() + b"\n"

        odd = {
            "not JSON": b"approve it\n",
            "NUL": b'{"database": "\x00"}\n',
            "no newline": json.dumps({"database": database, "request": vote}).encode(),
            "empty": b"",
            "a list": line([vote]),
            "1e400": line({"database": database, "request": {"op": "list", "limit": 1e400}}),
            "unknown op": line({"database": database, "request": {"op": "drop"}}),
            "unknown field": line({"database": database, "request": vote | {"voter": "alice"}}),
            "bad value": line({"database": database, "request": vote | {"value": "maybe"}}),
            "ids not a list": line({"database": database, "request": vote | {"ids": decision_id}}),
            "nested 5000 deep": b'{"database": "x", "request": ' + b"[" * 5000 + b"]" * 5000 + b"}\n",
            "huge": line({"database": database, "request": vote | {"reason": "x" * 2_000_000}}),
        }
        for name, payload in odd.items():
            reply = await asyncio.to_thread(ask_raw, path, payload)
            assert set(reply) == {"error"}, (name, reply)
        wrong_database = await asyncio.to_thread(ask_raw, path, line({"database": "0" * 64, "request": vote}))
        assert wrong_database == {"other_database": True}

        silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # connects and goes away mid-request
        silent.connect(str(path))
        silent.sendall(b'{"database": ')
        silent.close()

        assert (await status_of(gw, decision_id)).status == "pending", "no odd request changed anything"
        answer = await asyncio.to_thread(ask_raw, path, line({"database": database, "request": vote}))
        assert "approved" in answer["answer"]["message"]


async def test_a_second_service_on_the_same_data_directory_leaves_the_first_ones_socket(tmp_path, caplog):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as first:
        inode = socket_of(tmp_path).stat().st_ino
        async with run_gateway(tmp_path, policy=None, servers={}, grants=[]):
            assert socket_of(tmp_path).stat().st_ino == inode
        assert socket_of(tmp_path).stat().st_ino == inode, "the second one's stop did not remove the first's socket"
        [decision_id] = await open_decisions(first, 1)
        approved, _, imported = await holdgate(tmp_path, "approve", decision_id)
        assert "approved" in approved and "sqlalchemy" not in imported
    assert "another holdgate process already serves" in caplog.text


async def test_the_socket_can_be_turned_off(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}, operator_socket=False) as gw:
        [decision_id] = await open_decisions(gw, 1)
        assert not socket_of(tmp_path).exists()
        approved, _, imported = await holdgate(tmp_path, "approve", decision_id)
        assert "approved" in approved and "sqlalchemy" in imported
