"""The service's log (`service.logs`, `service.logcontext`): JSON lines with the call's context, uvicorn's
access lines in the same format, APScheduler's routine lines at DEBUG, and no secret in any line.

The real run is `python -m service serve` (the command an operator starts), its stderr captured whole.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest

from service import logcontext, logs
from tests.approvals.support import PERSON_TOKENS, api, approval_policy
from tests.email.support import SmtpSink
from tests.slack.fake_slack import BOT_TOKEN, FakeSlack
from tests.slack.support import ALICE, SIGNING_SECRET, form_body, sign
from tests.support.harness import (
    ROOT,
    Gateway,
    free_port,
    seed_grants,
    servers,
    text_of,
    wait_until_serving,
    write_config,
)
from tests.webhook.receiver import Receiver

SMTP_PASSWORD = "smtp-pass-LEAKCANARY-7d1e"
WEBHOOK_SECRET = "webhook-secret-LEAKCANARY-51c9"
WEBHOOK_URL_TOKEN = "url-token-LEAKCANARY-a0f3"
SECRET_KEY = "secret-key-LEAKCANARY-0123456789abcdef"
WRONG_TOKEN = "hg_wrong-LEAKCANARY-9b2c"


@asynccontextmanager
async def serving(tmp_path: Path, log: Path, *args: str, **env: str) -> AsyncIterator[Gateway]:
    """`python -m service serve` with this environment, its stderr and stdout into `log`; stopped by SIGTERM."""
    port = free_port()
    environment = {
        **os.environ,
        "HOLDGATE_CONFIG_DIR": str(tmp_path / "config"),
        "HOLDGATE_DATA_DIR": str(tmp_path / "data"),
        "HOLDGATE_PORT": str(port),
        "HOLDGATE_WATCH_POLICY": "false",
        "HOLDGATE_APPROVAL_HOLD_S": "30",
        "HOLDGATE_OUTBOX_POLL_INTERVAL_S": "0.05",
        "HOLDGATE_OUTBOX_RETRY_BASE_S": "0.05",
        **env,
    }
    tokens = await seed_grants(_settings(tmp_path), ["agent"])
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", "serve", *args, cwd=ROOT, env=environment, stdout=out, stderr=out
        )
        url = f"http://127.0.0.1:{port}"
        try:
            await wait_until_serving(url, process, log)
            yield Gateway(url=url, state=None, tokens=tokens)  # type: ignore[arg-type]
        finally:
            process.terminate()
            await asyncio.wait_for(process.wait(), 30)


def _settings(tmp_path: Path):
    from service.settings import Settings

    return Settings(_env_file=None, config_dir=tmp_path / "config", data_dir=tmp_path / "data")


def every_channel_policy() -> dict[str, Any]:
    policy = approval_policy(channels=["console", "slack", "email", "webhook"], slack_channel="C0APPROVALS")
    policy["people"]["alice"]["email"] = "alice@example.com"
    return policy


def json_lines(log: Path) -> list[dict[str, Any]]:
    """Every line of the log as a JSON object (fails on a line that is not one)."""
    lines = []
    for number, line in enumerate(log.read_text().splitlines(), 1):
        try:
            parsed = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {number} is not JSON: {line[:300]}") from None
        assert isinstance(parsed, dict), line
        lines.append(parsed)
    return lines


async def test_a_real_run_logs_json_lines_with_the_calls_context_and_no_secret(tmp_path):
    """Every channel configured with secrets (Slack's token and signing secret, an SMTP password in its URL, a
    webhook URL with a token and its signing secret, the service's secret key), at DEBUG, where libraries say
    most; a held call is approved, a Slack click with a bad signature and a request with a wrong token are
    refused. No secret appears in any line, and the lines say which call and decision they are about."""
    write_config(tmp_path / "config", policy=every_channel_policy(), servers=servers(tmp_path))
    log = tmp_path / "holdgate.log"
    smtp = SmtpSink().start()  # offers no AUTH: the login with the URL's password fails and is logged
    try:
        async with FakeSlack() as slack, Receiver() as receiver:
            env = {
                "HOLDGATE_LOG_FORMAT": "json",
                "HOLDGATE_SECRET_KEY": SECRET_KEY,
                "HOLDGATE_PUBLIC_URL": "http://127.0.0.1:9",
                "HOLDGATE_SLACK_BOT_TOKEN": BOT_TOKEN,
                "HOLDGATE_SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "HOLDGATE_SLACK_API_URL": slack.url,
                "HOLDGATE_SMTP_URL": f"smtp://holdgate:{SMTP_PASSWORD}@127.0.0.1:{smtp.port}",
                "HOLDGATE_EMAIL_FROM": "holdgate@gateway.example",
                "HOLDGATE_WEBHOOK_URL": f"{receiver.url}?token={WEBHOOK_URL_TOKEN}",
                "HOLDGATE_WEBHOOK_SECRET": WEBHOOK_SECRET,
            }
            async with (
                serving(tmp_path, log, "--log-level", "debug", **env) as gw,
                gw.session("jobs") as session,
            ):
                agent_token = gw.tokens["agent"]
                call = asyncio.create_task(session.call_tool("cancel-async-job", {"jobId": "job-log"}))
                for _ in range(500):
                    pending = (await api(gw, "GET", "/api/decisions?status=pending", "alice")).json()["items"]
                    if pending and slack.posted(pending[0]["id"]) and receiver.received:
                        break
                    await asyncio.sleep(0.05)
                [decision] = pending
                body = form_body({"type": "block_actions", "user": {"id": ALICE}, "actions": []})
                async with httpx2.AsyncClient(base_url=gw.url, timeout=30) as client:
                    forged = await client.post(
                        "/slack/interactions",
                        content=body.encode(),
                        headers={"Content-Type": "application/x-www-form-urlencoded", **sign(body, secret="wrong")},
                    )
                    refused = await client.get("/api/decisions", headers={"Authorization": f"Bearer {WRONG_TOKEN}"})
                    on_mcp = await client.post(
                        f"{gw.url}/mcp/jobs", json={}, headers={"Authorization": f"Bearer {WRONG_TOKEN}"}
                    )
                approved = await api(gw, "POST", f"/api/decisions/{decision['id']}/approve", "alice")
                result = await asyncio.wait_for(call, 20)
                await asyncio.sleep(0.5)  # the email attempts after the ending: their failures are logged too
    finally:
        smtp.stop()

    assert approved.status_code == 200 and "holdgate" not in text_of(result)
    assert forged.status_code in {401, 403} and refused.status_code == 401 and on_mcp.status_code == 401
    text = log.read_text()
    for secret in (
        SMTP_PASSWORD,
        WEBHOOK_SECRET,
        WEBHOOK_URL_TOKEN,
        SECRET_KEY,
        BOT_TOKEN,
        SIGNING_SECRET,
        agent_token,
        WRONG_TOKEN,
        *PERSON_TOKENS.values(),
    ):
        assert secret not in text, f"{secret!r} is in the log"

    lines = json_lines(log)
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    about_call = [line for line in lines if line.get("decision_id") == decision["id"]]
    assert any(
        line.get("grant") == "agent" and line.get("server") == "jobs" and line.get("tool") == "cancel-async-job"
        for line in about_call
    ), "a line written during the held call names its grant, server, tool and decision"
    assert any(line["message"].startswith(f"decision {decision['id']} approved") for line in about_call)
    assert any("APPROVAL NEEDED" in line["message"] for line in about_call)
    assert any(line["logger"] == "service.approvals.outbox" for line in about_call), "the email failure, by decision"

    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    assert access and all(line.get("request_id") for line in access)
    approve = next(line for line in access if line["path"] == f"/api/decisions/{decision['id']}/approve")
    assert approve["method"] == "POST" and approve["status_code"] == 200 and approve["http_version"] == "1.1"
    assert any(line["path"] == "/mcp/jobs" and line["status_code"] == 401 for line in access)

    scheduler = [line for line in lines if line["logger"].startswith("apscheduler")]
    assert scheduler, "at DEBUG the scheduler's routine lines are written"
    assert {line["level"] for line in scheduler} == {"DEBUG"}, "routine lines at DEBUG, never INFO"
    assert not [line for line in scheduler if "grant" in line], "not about the call that happened to add a timer"
    routine = [line for line in scheduler if line["message"].startswith(("Running job", "Looking for jobs"))]
    assert routine and not [line for line in routine if "request_id" in line]


async def test_text_is_the_default_and_uvicorns_lines_share_it(tmp_path):
    write_config(tmp_path / "config", policy=approval_policy(), servers=servers(tmp_path))
    log = tmp_path / "holdgate.log"
    async with serving(tmp_path, log) as gw:
        response = await api(gw, "GET", "/healthz", headers={"X-Request-ID": "req-42"})
    lines = log.read_text().splitlines()
    assert response.headers["x-request-id"] == "req-42"
    assert any(" INFO uvicorn.access: " in line and '"GET /healthz HTTP/1.1" 200' in line for line in lines)
    assert any(" INFO service.app: holdgate " in line and " ready: " in line for line in lines)
    assert not [line for line in lines if "apscheduler" in line], "routine scheduler lines are DEBUG: not shown"


# -- the parts, without a process ----------------------------------------------------------------------


def _handler(log_format: logs.LogFormat, level: str) -> tuple[logging.Handler, io.StringIO]:
    """The service's handler as `logs.logging_config` builds it, writing into a buffer."""
    config = logs.logging_config(log_format, level)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter = config["formatters"]["holdgate"]
    handler.setFormatter(logs.JsonFormatter() if log_format == "json" else logging.Formatter(formatter["format"]))
    handler.addFilter(logcontext.ContextFilter())
    handler.addFilter(logs.RoutineAtDebug())
    return handler, stream


@pytest.fixture
def root_level():
    root = logging.getLogger()
    before = root.level
    yield root
    root.setLevel(before)


def test_apscheduler_routine_lines_are_debug_and_its_warnings_keep_their_level(root_level):
    handler, stream = _handler("json", "info")
    root_level.setLevel(logging.INFO)
    executor = logging.getLogger("apscheduler.executors.default")
    # A gateway started by an earlier test (without `serve`'s logging) sets the apscheduler loggers to WARNING;
    # this test is about the handler's rewrite, so the logger's own level is the default here.
    scheduler_logger = logging.getLogger("apscheduler")
    levels = (executor.level, scheduler_logger.level)
    executor.setLevel(logging.NOTSET)
    scheduler_logger.setLevel(logging.NOTSET)
    executor.addHandler(handler)
    try:
        executor.info('Running job "sweep" (scheduled at 2026-12-02 05:00:00+00:00)')
        executor.warning('Run time of job "sweep" was missed by 0:00:07')
        root_level.setLevel(logging.DEBUG)
        executor.info('Job "sweep" executed successfully')
    finally:
        executor.removeHandler(handler)
        executor.setLevel(levels[0])
        scheduler_logger.setLevel(levels[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["level"], line["message"][:12]) for line in lines] == [
        ("WARNING", "Run time of "),
        ("DEBUG", 'Job "sweep" '),
    ]


def test_json_lines_carry_the_fields_known_and_leave_out_the_others(root_level):
    handler, stream = _handler("json", "info")
    logger = logging.getLogger("service.test_logs")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with logcontext.bound(request_id="r1", grant="agent", server="jobs", tool="cancel-async-job"):
            logger.warning("held")
            logcontext.bind(decision_id="d_1")
            logger.warning("opened")
        logger.warning('outside\nwith a second line "quoted"', extra={"decision_id": "d_2"})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    held, opened, outside, failed = (json.loads(line) for line in stream.getvalue().splitlines())
    assert held["request_id"] == "r1" and held["tool"] == "cancel-async-job" and "decision_id" not in held
    assert opened["decision_id"] == "d_1" and opened["grant"] == "agent"
    assert outside == {
        "time": outside["time"],
        "level": "WARNING",
        "logger": "service.test_logs",
        "message": 'outside\nwith a second line "quoted"',
        "decision_id": "d_2",
    }
    assert outside["time"].endswith("Z") and "T" in outside["time"]
    assert "ValueError: boom" in failed["exc_info"]


def test_a_client_request_id_is_kept_only_when_it_is_plain():
    assert logcontext.request_id_from(b"abc-123_x.y:z") == "abc-123_x.y:z"
    for forged in (b"", b"a b", b'a"b', b"a\nb", b"x" * 129, "é".encode(), b"\x00"):
        made = logcontext.request_id_from(forged)
        assert made != forged.decode("latin-1") and len(made) == 32
    assert logcontext.request_id_from(None) != logcontext.request_id_from(None)


def test_the_format_is_a_setting_and_an_unknown_one_is_refused_naming_it(monkeypatch):
    from pydantic import ValidationError

    from service.settings import Settings

    assert Settings(_env_file=None).logs.format == "text"
    monkeypatch.setenv("HOLDGATE_LOG_FORMAT", "json")
    assert Settings(_env_file=None).logs.format == "json"
    monkeypatch.setenv("HOLDGATE_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError, match=r"logs\.format"):
        Settings(_env_file=None)
