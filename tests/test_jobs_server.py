"""The demo jobs server (examples/jobs_server.py), driven as a user's client would: over stdio with the SDK.

Durations come from the server's environment, so every status is reached without long sleeps: a job
with zero-second phases is completed at once, one with hour-long phases stays where it is.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp_types import CallToolResult

ROOT = Path(__file__).resolve().parents[1]
SERVER = ROOT / "examples" / "jobs_server.py"
HOUR = "3600"
JOB_ID = re.compile(r"\*\*Job ID:\*\* (\S+)")
STATUS = re.compile(r"\*\*Status:\*\* (\w+)")


@asynccontextmanager
async def jobs_server(state_dir: Path, *, pending: str, processing: str, **env: str) -> AsyncIterator[ClientSession]:
    """One server process on `state_dir`, with an initialized client session."""
    params = StdioServerParameters(
        command=sys.executable,
        args=[str(SERVER)],
        env={
            "JOBS_STATE_DIR": str(state_dir),
            "JOBS_PENDING_SECONDS": pending,
            "JOBS_PROCESSING_SECONDS": processing,
            **env,
        },
    )
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        with anyio.fail_after(20):
            await session.initialize()
        yield session


def text_of(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if block.type == "text")


async def call_ok(session: ClientSession, tool: str, arguments: dict) -> str:
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, text_of(result)
    return text_of(result)


async def submit(session: ClientSession, prompt: str = "Explain MCP in one line", **extra: object) -> str:
    text = await call_ok(session, "submit-llm-request-async", {"provider": "claude", "prompt": prompt, **extra})
    assert STATUS.search(text).group(1) == "pending"
    return JOB_ID.search(text).group(1)


async def status_of(session: ClientSession, job_id: str) -> str:
    return STATUS.search(await call_ok(session, "get-async-job-result", {"jobId": job_id})).group(1)


async def test_tools_have_the_real_servers_names_arguments_and_hints(tmp_path: Path) -> None:
    async with jobs_server(tmp_path, pending=HOUR, processing=HOUR) as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}

    assert set(tools) == {
        "submit-llm-request-async",
        "get-async-job-result",
        "list-async-jobs",
        "cancel-async-job",
    }
    submit_schema = tools["submit-llm-request-async"].input_schema
    assert set(submit_schema["properties"]) == {"provider", "prompt", "model", "temperature", "max_tokens"}
    assert set(submit_schema["required"]) == {"provider", "prompt"}
    assert submit_schema["properties"]["provider"]["enum"] == [
        "chatgpt", "claude", "deepseek", "gemini", "grok", "kimi", "perplexity", "mistral",
    ]  # fmt: skip
    assert tools["get-async-job-result"].input_schema["required"] == ["jobId"]
    assert set(tools["list-async-jobs"].input_schema["properties"]) == {"status", "provider", "limit"}
    assert tools["cancel-async-job"].input_schema["required"] == ["jobId"]
    assert tools["get-async-job-result"].annotations.read_only_hint is True
    assert tools["list-async-jobs"].annotations.read_only_hint is True
    assert tools["cancel-async-job"].annotations.destructive_hint is True
    assert tools["submit-llm-request-async"].annotations.read_only_hint is False


async def test_pending_job_is_cancelled_and_a_second_cancel_is_a_tool_error(tmp_path: Path) -> None:
    async with jobs_server(tmp_path, pending=HOUR, processing=HOUR) as session:
        job_id = await submit(session)
        assert await status_of(session, job_id) == "pending"

        cancelled = await call_ok(session, "cancel-async-job", {"jobId": job_id})
        assert "**Previous status:** pending" in cancelled
        assert STATUS.search(cancelled).group(1) == "cancelled"
        assert await status_of(session, job_id) == "cancelled"

        again = await session.call_tool("cancel-async-job", {"jobId": job_id})
        assert again.is_error
        assert f"Cannot cancel job {job_id}: it is already cancelled" in text_of(again)

        unknown = await session.call_tool("cancel-async-job", {"jobId": "123-nosuch"})
        assert unknown.is_error
        assert "Job 123-nosuch not found" in text_of(unknown)


async def test_processing_job_can_be_cancelled(tmp_path: Path) -> None:
    async with jobs_server(tmp_path, pending="0", processing=HOUR) as session:
        job_id = await submit(session)
        assert await status_of(session, job_id) == "processing"
        cancelled = await call_ok(session, "cancel-async-job", {"jobId": job_id})
        assert "**Previous status:** processing" in cancelled


async def test_job_moves_through_pending_and_processing_to_a_canned_answer(tmp_path: Path) -> None:
    # Each phase lasts 2 s of the server's real clock (a separate process): long enough that a status call on a
    # loaded machine (the suite runs in four workers) still lands inside it; 0.2 s phases were missed there.
    async with jobs_server(tmp_path, pending="2", processing="2") as session:
        job_id = await submit(session, prompt="What is holdgate?")
        seen = [await status_of(session, job_id)]
        with anyio.fail_after(30):
            while seen[-1] != "completed":
                await anyio.sleep(0.05)
                status = await status_of(session, job_id)
                if status != seen[-1]:
                    seen.append(status)
        assert seen == ["pending", "processing", "completed"]

        result = await call_ok(session, "get-async-job-result", {"jobId": job_id})
        assert "[demo] claude would answer: 'What is holdgate?'" in result
        assert "No LLM was called" in result

        finished = await session.call_tool("cancel-async-job", {"jobId": job_id})
        assert finished.is_error
        assert "already completed" in text_of(finished)


async def test_failed_job_and_list_filters(tmp_path: Path) -> None:
    async with jobs_server(tmp_path, pending="0", processing="0") as session:
        done = await submit(session, prompt="fine", model="claude-3-haiku")
        failed = await submit(session, prompt="fail: please")
        failed_text = await call_ok(session, "get-async-job-result", {"jobId": failed})
        assert STATUS.search(failed_text).group(1) == "failed"
        assert "simulated a provider error" in failed_text
        assert "**Model:** claude-3-haiku" in await call_ok(session, "get-async-job-result", {"jobId": done})

        only_failed = await call_ok(session, "list-async-jobs", {"status": "failed"})
        assert failed in only_failed and done not in only_failed
        newest = await call_ok(session, "list-async-jobs", {"limit": 1})
        assert failed in newest and done not in newest
        assert await call_ok(session, "list-async-jobs", {"provider": "grok"}) == "No async jobs found."


async def test_two_server_processes_see_the_same_jobs(tmp_path: Path) -> None:
    async with (
        jobs_server(tmp_path, pending=HOUR, processing=HOUR) as first,
        jobs_server(tmp_path, pending=HOUR, processing=HOUR) as second,
    ):
        job_id = await submit(first)
        assert await status_of(second, job_id) == "pending"
        await call_ok(second, "cancel-async-job", {"jobId": job_id})
        assert await status_of(first, job_id) == "cancelled"

        # Concurrent submissions from both processes: the file lock must keep every one of them.
        async with anyio.create_task_group() as tg:
            for session in (first, second):
                for n in range(8):
                    tg.start_soon(submit, session, f"prompt {n}")
        listing = await call_ok(first, "list-async-jobs", {"status": "pending"})
        assert listing.startswith("**Async Jobs (16)**")
    jobs = json.loads((tmp_path / "async-jobs.json").read_text())
    assert len(jobs) == 17


async def test_call_log_records_each_executed_call_once(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    async with jobs_server(tmp_path, pending=HOUR, processing=HOUR, JOBS_CALL_LOG=str(log)) as session:
        job_id = await submit(session, prompt="count me")
        await status_of(session, job_id)
        await call_ok(session, "list-async-jobs", {"limit": 5})
        await call_ok(session, "cancel-async-job", {"jobId": job_id})
        rejected = await session.call_tool("submit-llm-request-async", {"provider": "nobody", "prompt": "x"})
        assert rejected.is_error  # arguments failed the schema: the tool never ran

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(line["tool"], line["arguments"]) for line in lines] == [
        ("submit-llm-request-async", {"provider": "claude", "prompt": "count me"}),
        ("get-async-job-result", {"jobId": job_id}),
        ("list-async-jobs", {"limit": 5}),
        ("cancel-async-job", {"jobId": job_id}),
    ]
    assert all(line["time"].endswith("Z") and isinstance(line["pid"], int) for line in lines)


async def test_corrupt_state_file_is_a_tool_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "async-jobs.json").write_text("[{not json")
    async with jobs_server(tmp_path, pending=HOUR, processing=HOUR) as session:
        result = await session.call_tool("list-async-jobs", {})
    assert result.is_error
    assert f"{tmp_path / 'async-jobs.json'}: line 1 column 3: not valid JSON" in text_of(result)


def test_bad_duration_stops_the_server_with_a_clear_message(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SERVER)],
        env={"JOBS_STATE_DIR": str(tmp_path), "JOBS_PENDING_SECONDS": "soon"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 2
    assert "JOBS_PENDING_SECONDS must be a number of seconds, got 'soon'" in completed.stderr


async def test_tools_version_2_changes_cancel_and_adds_purge(tmp_path: Path) -> None:
    """`JOBS_TOOLS_VERSION=2`: the upstream whose tools change under holdgate (tests/tooldefs)."""
    async with jobs_server(tmp_path, pending=HOUR, processing=HOUR, JOBS_TOOLS_VERSION="2") as session:
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        job_id = await submit(session)
        cancelled = await call_ok(session, "cancel-async-job", {"jobId": job_id, "deleteResults": True})
        purged = await call_ok(session, "purge-async-jobs", {})
    cancel = tools["cancel-async-job"]
    assert "deleteResults" in cancel.input_schema["properties"]
    assert "Safe to call at any time" in (cancel.description or "")
    assert cancel.annotations is not None and cancel.annotations.destructive_hint is None
    assert "**Status:** cancelled" in cancelled
    assert "would purge 1 finished job(s)" in purged


def test_an_unknown_tools_version_stops_the_server_with_a_clear_message(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(SERVER)],
        env={"JOBS_STATE_DIR": str(tmp_path), "JOBS_TOOLS_VERSION": "3"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert completed.returncode == 2
    assert "JOBS_TOOLS_VERSION must be 1 or 2, got '3'" in completed.stderr
