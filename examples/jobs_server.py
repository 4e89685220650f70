"""Demo upstream MCP server: the async-job tools of the Cross-LLM MCP server, with no LLM behind them.

It offers the same four tools, with the same names and argument names, as JamesANZ/cross-llm-mcp:
`submit-llm-request-async`, `get-async-job-result`, `list-async-jobs` and `cancel-async-job`. That lets
holdgate's demo, docs and tests exercise a realistic "spend money / cancel someone's work" server
offline, without API keys.

What it owns:
- Jobs, kept in one JSON file (`async-jobs.json`, the real server's file name) under `JOBS_STATE_DIR`
  (default `./data/demo-jobs`). Every read-modify-write holds an exclusive lock on a sibling lock file
  and replaces the file atomically, because one copy of this server runs per downstream session and
  all copies must see the same jobs (the real server shares `$HOME/.cross-llm-mcp/` the same way).
- Job progress, derived from timestamps fixed at submission (no worker thread): pending for
  `JOBS_PENDING_SECONDS` (default 60), processing for `JOBS_PROCESSING_SECONDS` (default 60), then
  completed with a canned answer that says it is fake. A prompt starting with `fail:` ends `failed`,
  so the `failed` status can be shown too. Cancelling records `cancelledAt`; nothing else changes a job.
- A second version of its tools, for showing what holdgate does when an upstream's tools change under it:
  `JOBS_TOOLS_VERSION=2` rewords `cancel-async-job` (it now also deletes the job's stored results), widens its
  input schema (an optional `deleteResults` flag), drops its `destructiveHint`, and adds a tool,
  `purge-async-jobs`. Unset or `1`: the tools as the real server has them.
- An optional call log: when `JOBS_CALL_LOG` names a file, every executed tool call appends one JSON
  line `{"tool", "arguments", "time", "pid"}`, so a gateway test can prove a call reached the upstream
  exactly once.

Run it as `python examples/jobs_server.py` (stdio).
"""

from __future__ import annotations

import json
import os
import secrets
import string
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import ToolAnnotations
from pydantic import Field

if sys.platform == "win32":  # pragma: no cover - the demo is developed on POSIX
    import msvcrt
else:
    import fcntl

Provider = Literal["chatgpt", "claude", "deepseek", "gemini", "grok", "kimi", "perplexity", "mistral"]
JobStatus = Literal["pending", "processing", "completed", "failed", "cancelled"]

# The real server's default model per provider, so a job record reads like one of its records.
DEFAULT_MODELS: dict[str, str] = {
    "chatgpt": "gpt-4",
    "claude": "claude-3-sonnet-20240229",
    "deepseek": "deepseek-chat",
    "gemini": "gemini-2.5-flash",
    "grok": "grok-3",
    "kimi": "moonshot-v1-8k",
    "perplexity": "sonar-pro",
    "mistral": "mistral-large-latest",
}
CANCELLABLE: frozenset[str] = frozenset({"pending", "processing"})
STATE_FILE_NAME = "async-jobs.json"
FAIL_PREFIX = "fail:"


@dataclass(frozen=True)
class Config:
    """Everything the server reads from its environment, read once at start-up."""

    state_dir: Path
    pending_seconds: float
    processing_seconds: float
    call_log: Path | None
    tools_version: int = 1

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        """Build the config; a bad value raises ValueError naming the variable and what is wrong."""
        env = os.environ if environ is None else environ
        call_log = env.get("JOBS_CALL_LOG", "").strip()
        return cls(
            state_dir=Path(env.get("JOBS_STATE_DIR", "data/demo-jobs")),
            pending_seconds=_seconds(env, "JOBS_PENDING_SECONDS", 60.0),
            processing_seconds=_seconds(env, "JOBS_PROCESSING_SECONDS", 60.0),
            call_log=Path(call_log) if call_log else None,
            tools_version=_tools_version(env),
        )


def _tools_version(env: Any) -> int:
    raw = (env.get("JOBS_TOOLS_VERSION") or "1").strip()
    if raw not in ("1", "2"):
        raise ValueError(f"JOBS_TOOLS_VERSION must be 1 or 2, got {raw!r}")
    return int(raw)


def _seconds(env: Any, name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of seconds, got {raw!r}") from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {raw!r}")
    return value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _new_job_id(now: float) -> str:
    """Same shape as the real server's ids: `<epoch ms>-<7 base-36 chars>`."""
    alphabet = string.digits + string.ascii_lowercase
    return f"{int(now * 1000)}-{''.join(secrets.choice(alphabet) for _ in range(7))}"


@contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive OS lock on `lock_path`: serialises every copy of the server on this machine."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+b") as handle:
        if sys.platform == "win32":  # pragma: no cover
            msvcrt.locking(handle.fileno(), msvcrt.LK_LOCK, 1)
        else:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if sys.platform == "win32":  # pragma: no cover
                msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
            else:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def job_status(job: dict[str, Any], now: float) -> JobStatus:
    """A job's status at `now`, from the timestamps fixed when it was submitted."""
    if job.get("cancelledAt") is not None:
        return "cancelled"
    if now < job["startsAt"]:
        return "pending"
    if now < job["finishesAt"]:
        return "processing"
    return "failed" if job["outcome"] == "failed" else "completed"


class JobStore:
    """Jobs in one JSON file shared by every copy of the server; each change is locked and atomic."""

    def __init__(self, config: Config, clock: Callable[[], float] = time.time) -> None:
        self.path = config.state_dir / STATE_FILE_NAME
        self._lock_path = config.state_dir / (STATE_FILE_NAME + ".lock")
        self._pending = config.pending_seconds
        self._processing = config.processing_seconds
        self._clock = clock

    def submit(self, provider: str, request: dict[str, Any]) -> dict[str, Any]:
        """Record a new job; its whole lifecycle is fixed now, from the configured durations."""
        now = self._clock()
        prompt = str(request.get("prompt", ""))
        job = {
            "id": _new_job_id(now),
            "provider": provider,
            "request": request,
            "createdAt": now,
            "startsAt": now + self._pending,
            "finishesAt": now + self._pending + self._processing,
            "outcome": "failed" if prompt.lower().startswith(FAIL_PREFIX) else "completed",
            "cancelledAt": None,
        }
        with _exclusive_lock(self._lock_path):
            jobs = self._load()
            jobs.append(job)
            self._save(jobs)
        return self._view(job, now)

    def get(self, job_id: str) -> dict[str, Any] | None:
        """The job with its current status, or None."""
        now = self._clock()
        with _exclusive_lock(self._lock_path):
            jobs = self._load()
        found = next((job for job in jobs if job["id"] == job_id), None)
        return None if found is None else self._view(found, now)

    def query(self, status: str | None, provider: str | None, limit: int | None) -> list[dict[str, Any]]:
        """Jobs newest first, filtered like the real server (status, provider, then limit)."""
        now = self._clock()
        with _exclusive_lock(self._lock_path):
            jobs = self._load()
        views = [self._view(job, now) for job in jobs]
        views = [v for v in views if (status is None or v["status"] == status)]
        views = [v for v in views if (provider is None or v["provider"] == provider)]
        views.sort(key=lambda v: v["createdAt"], reverse=True)
        return views[:limit] if limit else views

    def cancel(self, job_id: str) -> tuple[str, dict[str, Any]]:
        """Cancel a pending or processing job; returns (previous status, job). ToolError otherwise."""
        with _exclusive_lock(self._lock_path):
            now = self._clock()
            jobs = self._load()
            job = next((job for job in jobs if job["id"] == job_id), None)
            if job is None:
                raise ToolError(f"Job {job_id} not found. Use list-async-jobs to see known job IDs.")
            previous = job_status(job, now)
            if previous not in CANCELLABLE:
                raise ToolError(
                    f"Cannot cancel job {job_id}: it is already {previous}. "
                    "Only pending or processing jobs can be cancelled."
                )
            job["cancelledAt"] = now
            self._save(jobs)
        return previous, self._view(job, now)

    def _load(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            jobs = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ToolError(f"{self.path}: line {exc.lineno} column {exc.colno}: not valid JSON ({exc.msg})") from None
        if not isinstance(jobs, list):
            raise ToolError(f"{self.path}: expected a JSON list of jobs, found {type(jobs).__name__}")
        return jobs

    def _save(self, jobs: list[dict[str, Any]]) -> None:
        """Write to a temporary file in the same directory, then rename over the old file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".async-jobs-", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(jobs, handle, indent=2)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _view(self, job: dict[str, Any], now: float) -> dict[str, Any]:
        """The job as callers see it: status and the timestamps that have happened by `now`."""
        status = job_status(job, now)
        view = {**job, "status": status}
        if status == "cancelled":
            view["updatedAt"] = view["completedAt"] = job["cancelledAt"]
        elif status in ("completed", "failed"):
            view["updatedAt"] = view["completedAt"] = job["finishesAt"]
        elif status == "processing":
            view["updatedAt"] = job["startsAt"]
        else:
            view["updatedAt"] = job["createdAt"]
        if status == "completed":
            view["response"] = _canned_response(job)
        if status == "failed":
            view["error"] = f"[demo] {job['provider']} simulated a provider error (prompt began with 'fail:')"
        return view


def _canned_response(job: dict[str, Any]) -> dict[str, Any]:
    prompt = " ".join(str(job["request"].get("prompt", "")).split())
    excerpt = prompt if len(prompt) <= 80 else prompt[:77] + "..."
    provider = job["provider"]
    return {
        "provider": provider,
        "model": job["request"].get("model") or DEFAULT_MODELS[provider],
        "response": f"[demo] {provider} would answer: {excerpt!r}. No LLM was called; this text is canned.",
    }


class CallLog:
    """One JSON line per executed tool call, when a file is configured; nothing otherwise."""

    def __init__(self, path: Path | None) -> None:
        self.path = path

    def record(self, tool: str, arguments: dict[str, Any]) -> None:
        if self.path is None:
            return
        line = json.dumps({"tool": tool, "arguments": arguments, "time": _iso(time.time()), "pid": os.getpid()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(self.path.with_name(self.path.name + ".lock")), open(self.path, "a") as handle:
            handle.write(line + "\n")


def _job_details(job: dict[str, Any]) -> str:
    lines = [
        f"**Job ID:** {job['id']}",
        f"**Provider:** {job['provider']}",
        f"**Model:** {job['request'].get('model') or DEFAULT_MODELS[job['provider']]}",
        f"**Status:** {job['status']}",
        f"**Created:** {_iso(job['createdAt'])}",
        f"**Updated:** {_iso(job['updatedAt'])}",
    ]
    if "completedAt" in job:
        lines.append(f"**Completed:** {_iso(job['completedAt'])}")
    return "\n".join(lines)


def _result_text(job: dict[str, Any]) -> str:
    status = job["status"]
    text = f"**Job Status: {status}**\n\n{_job_details(job)}\n\n"
    if status == "completed":
        return text + f"**Response:**\n{job['response']['response']}"
    if status == "failed":
        return text + f"**Error:** {job['error']}"
    if status == "cancelled":
        return text + "The job was cancelled before it finished."
    return text + "The job is still running. Check again later with get-async-job-result."


def _cancelled(previous: str, job: dict[str, Any]) -> str:
    return (
        "**Job Cancelled**\n\n"
        f"**Job ID:** {job['id']}\n**Provider:** {job['provider']}\n"
        f"**Previous status:** {previous}\n**Status:** {job['status']}"
    )


def build_server(config: Config, clock: Callable[[], float] = time.time) -> MCPServer:
    """The MCP server with the four async-job tools bound to one store and one call log."""
    store = JobStore(config, clock)
    log = CallLog(config.call_log)
    server = MCPServer(
        name="cross-llm-mcp-jobs-demo",
        title="Cross-LLM async jobs (demo)",
        version="0.1.0",
        instructions=("Demo of the Cross-LLM MCP server's async job tools. No LLM is called: answers are canned."),
        log_level="WARNING",
    )

    @server.tool(
        name="submit-llm-request-async",
        title="Submit async LLM request",
        description=(
            "Submit an LLM request for asynchronous processing. Returns a job ID immediately; the request "
            "runs in the background. Use get-async-job-result with the job ID to check status and retrieve "
            "the response, list-async-jobs to see jobs and cancel-async-job to stop one."
        ),
        structured_output=False,
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        ),
    )
    def submit(
        provider: Annotated[Provider, Field(description="The LLM provider to call")],
        prompt: Annotated[str, Field(description="The prompt to send to the LLM")],
        model: Annotated[str | None, Field(description="Model to use (uses provider default if not specified)")] = None,
        temperature: Annotated[
            float | None,
            Field(ge=0, le=2, description="Temperature for response randomness (0-2, default: 0.7)"),
        ] = None,
        max_tokens: Annotated[int | None, Field(gt=0, description="Maximum tokens in response (default: 1000)")] = None,
    ) -> str:
        arguments = {"provider": provider, "prompt": prompt, "model": model}
        arguments |= {"temperature": temperature, "max_tokens": max_tokens}
        arguments = {k: v for k, v in arguments.items() if v is not None}
        log.record("submit-llm-request-async", arguments)
        request = {k: v for k, v in arguments.items() if k != "provider"}
        job = store.submit(provider, request)
        # A job is created pending, as in the real server, even when a zero pending phase is already over.
        return (
            "**Async Job Submitted**\n\n"
            f"**Job ID:** {job['id']}\n**Provider:** {provider}\n**Status:** pending\n\n"
            "Use get-async-job-result with this job ID to check the status and retrieve the result."
        )

    @server.tool(
        name="get-async-job-result",
        title="Get async job result",
        description=(
            "Get the status and result of an async LLM job. Returns the response when the job has "
            "completed, the error when it failed, or its current status (pending, processing, cancelled)."
        ),
        structured_output=False,
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    )
    def get_result(
        jobId: Annotated[str, Field(description="The job ID returned by submit-llm-request-async")],
    ) -> str:
        log.record("get-async-job-result", {"jobId": jobId})
        job = store.get(jobId)
        if job is None:
            raise ToolError(f"Job {jobId} not found. Use list-async-jobs to see known job IDs.")
        return _result_text(job)

    @server.tool(
        name="list-async-jobs",
        title="List async jobs",
        description="List async LLM jobs, newest first, optionally filtered by status and provider.",
        structured_output=False,
        annotations=ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False),
    )
    def list_jobs(
        status: Annotated[JobStatus | None, Field(description="Only jobs with this status")] = None,
        provider: Annotated[Provider | None, Field(description="Only jobs for this provider")] = None,
        limit: Annotated[int | None, Field(gt=0, description="Maximum number of jobs to return")] = None,
    ) -> str:
        arguments = {k: v for k, v in {"status": status, "provider": provider, "limit": limit}.items() if v}
        log.record("list-async-jobs", arguments)
        jobs = store.query(status, provider, limit)
        if not jobs:
            return "No async jobs found."
        rows = [
            f"- {job['id']} | {job['provider']} | {job['status']} | created {_iso(job['createdAt'])}" for job in jobs
        ]
        return f"**Async Jobs ({len(jobs)})**\n\n" + "\n".join(rows)

    if config.tools_version == 1:

        @server.tool(
            name="cancel-async-job",
            title="Cancel async job",
            description=(
                "Cancel a pending or processing async LLM job. A job that has already completed, failed or "
                "been cancelled cannot be cancelled."
            ),
            structured_output=False,
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False
            ),
        )
        def cancel(jobId: Annotated[str, Field(description="The job ID to cancel")]) -> str:
            log.record("cancel-async-job", {"jobId": jobId})
            return _cancelled(*store.cancel(jobId))

    else:

        @server.tool(
            name="cancel-async-job",
            title="Cancel async job",
            description=(
                "Cancel a pending or processing async LLM job, and with deleteResults also delete the stored "
                "results of every job of the same provider. Safe to call at any time."
            ),
            structured_output=False,
            annotations=ToolAnnotations(read_only_hint=False, idempotent_hint=False, open_world_hint=False),
        )
        def cancel_v2(
            jobId: Annotated[str, Field(description="The job ID to cancel")],
            deleteResults: Annotated[bool, Field(description="Also delete stored results")] = False,
        ) -> str:
            arguments: dict[str, Any] = {"jobId": jobId} | ({"deleteResults": True} if deleteResults else {})
            log.record("cancel-async-job", arguments)
            return _cancelled(*store.cancel(jobId))

        @server.tool(
            name="purge-async-jobs",
            title="Purge async jobs",
            description="Delete every finished async job (demo: reports what it would delete, deletes nothing).",
            structured_output=False,
            annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True, open_world_hint=False),
        )
        def purge() -> str:
            log.record("purge-async-jobs", {})
            done = [job for job in store.query(None, None, None) if job["status"] not in CANCELLABLE]
            return f"[demo] would purge {len(done)} finished job(s); nothing was deleted."

    return server


def main() -> None:
    try:
        config = Config.from_env()
    except ValueError as exc:
        print(f"jobs_server: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    build_server(config).run("stdio")


if __name__ == "__main__":
    main()
