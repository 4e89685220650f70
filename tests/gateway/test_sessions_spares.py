"""The spare stdio process: a new session's upstream is a child started ahead of time, then replaced."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable

import pytest

from tests.gateway.test_sessions import JOBS_POLICY, open_session, process_exists, wire_client
from tests.support.harness import Gateway, executed_calls, run_gateway, servers, wire_request


def jobs_children() -> set[int]:
    """The jobs server processes this test process started (the gateway runs in it)."""
    pids: set[int] = set()
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/children") as children:
            pids |= {int(pid) for pid in children.read().split()}
    return {pid for pid in pids if process_exists(pid) and b"jobs_server.py" in _cmdline(pid)}


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except FileNotFoundError:
        return b""


def started_at(pid: int) -> int:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22)."""
    with open(f"/proc/{pid}/stat") as stat:
        return int(stat.read().rpartition(")")[2].split()[19])


async def children_once(ready: Callable[[set[int]], object], timeout: float = 20) -> set[int]:
    """Poll the jobs children until `ready(pids)` holds (bounded)."""
    async with asyncio.timeout(timeout):
        while not ready(pids := jobs_children()):
            await asyncio.sleep(0.05)
    return pids


async def spare_pid(gw: Gateway) -> tuple[set[int], int]:
    """The jobs children once the spare is ready, and the spare's pid: the probe's shared session starts first."""
    spare = gw.state.proxies["jobs"].spare
    assert spare is not None
    async with asyncio.timeout(20):
        while not spare.ready:
            await asyncio.sleep(0.05)
    pids = jobs_children()
    assert len(pids) == 2
    return pids, max(pids, key=started_at)


async def first_call_pid(gw: Gateway, tmp_path, request_id: int = 2) -> int:
    """Open a session, make its first call; the pid of the jobs process that ran it."""
    async with wire_client(gw, "agent") as agent:
        url = gw.mcp_url("jobs")
        opened = await open_session(agent, url)
        call = wire_request(request_id, "tools/call", {"name": "list-async-jobs", "arguments": {}})
        called = await agent.post(url, json=call, headers={"Mcp-Session-Id": opened.headers["mcp-session-id"]})
        assert called.status_code == 200 and "result" in called.json()
    return executed_calls(tmp_path)[-1]["pid"]


async def test_a_new_session_takes_the_spare_and_a_new_spare_starts(tmp_path):
    async with run_gateway(tmp_path, policy=JOBS_POLICY, servers=servers(tmp_path)) as gw:
        before, spare = await spare_pid(gw)
        assert await first_call_pid(gw, tmp_path) == spare  # no process was started for the session's call
        after = await children_once(lambda pids: pids - before)
        assert len(after - before) == 1  # the next spare
        everything = before | after
    assert not any(process_exists(pid) for pid in everything)  # spares end with the gateway


async def test_a_spare_that_died_is_replaced(tmp_path):
    async with run_gateway(tmp_path, policy=JOBS_POLICY, servers=servers(tmp_path)) as gw:
        before, spare = await spare_pid(gw)
        os.kill(spare, signal.SIGKILL)
        after = await children_once(lambda pids: spare not in pids and len(pids) == 2)
        _, replacement = await spare_pid(gw)
        assert replacement not in before
        assert await first_call_pid(gw, tmp_path) == replacement
        everything = before | after
    assert not any(process_exists(pid) for pid in everything)


async def test_without_spares_a_session_starts_its_own_process(tmp_path):
    async with run_gateway(tmp_path, policy=JOBS_POLICY, servers=servers(tmp_path), stdio_spares=False) as gw:
        before = await children_once(lambda pids: len(pids) == 1)
        assert await first_call_pid(gw, tmp_path) not in before


@pytest.fixture(autouse=True)
def _linux_only() -> None:
    if not os.path.isdir("/proc/self/task"):
        pytest.skip("reads child processes from /proc")


async def test_a_session_arriving_while_the_spare_starts_waits_for_it_rather_than_starting_another(tmp_path):
    slow = servers(tmp_path)
    jobs = slow["jobs"]
    # The jobs server, a second slower to start: the session below asks while the spare is still starting.
    script = f"import runpy, time; time.sleep(1); runpy.run_path({jobs['args'][0]!r}, run_name='__main__')"
    slow["jobs"] = {**jobs, "args": ["-c", script, "jobs_server.py"]}
    async with run_gateway(tmp_path, policy=JOBS_POLICY, servers=slow) as gw:
        spare = gw.state.proxies["jobs"].spare
        assert spare is not None and not spare.ready
        starting = max(await children_once(lambda pids: len(pids) == 2), key=started_at)  # after the probe's
        assert await first_call_pid(gw, tmp_path) == starting
