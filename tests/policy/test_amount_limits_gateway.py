"""Amount limits end to end: a real MCP client through holdgate to the demo jobs server, on SQLite and
PostgreSQL. The policy caps the tokens asked for in an hour (`max_tokens` added up), beside a count of calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.harness import audit_events, executed_calls, run_gateway, servers, text_of


def token_budget() -> dict[str, Any]:
    return {
        "version": "1",
        "default": "deny",
        "tools": {
            "submit-llm-request-async": {
                "limits": [
                    {"counter": "tokens", "window": "hour", "max": 3000, "amount": "args.max_tokens"},
                    {"counter": "submits", "window": "hour", "max": 10},
                ]
            }
        },
    }


def submit(max_tokens: Any = None) -> dict[str, Any]:
    arguments: dict[str, Any] = {"provider": "chatgpt", "prompt": "summarise the report"}
    if max_tokens is not None:
        arguments["max_tokens"] = max_tokens
    return arguments


async def test_an_amount_limit_adds_up_an_argument_and_fails_closed_when_it_cannot(
    tmp_path: Path, database: dict[str, Any]
) -> None:
    async with (
        run_gateway(tmp_path, policy=token_budget(), servers=servers(tmp_path), **database) as gw,
        gw.session("jobs") as session,
    ):
        first = await session.call_tool("submit-llm-request-async", submit(1000))
        second = await session.call_tool("submit-llm-request-async", submit(1500))
        over = await session.call_tool("submit-llm-request-async", submit(1000))  # 3500 > 3000
        fits = await session.call_tool("submit-llm-request-async", submit(500))  # exactly 3000
        missing = await session.call_tool("submit-llm-request-async", submit())
        negative = await session.call_tool("submit-llm-request-async", submit(-5))
        text = await session.call_tool("submit-llm-request-async", submit("lots"))
        await gw.state.audit.flush()
        events = [(e.verdict, e.reason) for e in await audit_events(gw)]

    assert not first.is_error and not second.is_error and not fits.is_error
    assert over.is_error
    assert "counter 'tokens' has had its most calls for the window" in text_of(over)
    assert "retry_after=" in text_of(over)
    assert [c["arguments"].get("max_tokens") for c in executed_calls(tmp_path)] == [1000, 1500, 500]

    for result, problem in (
        (missing, 'Key not found in map : "max_tokens"'),
        (negative, "is negative (-5)"),
        (text, "gave a string, not a number"),
    ):
        assert result.is_error
        said = text_of(result)
        assert said.startswith("holdgate denied 'submit-llm-request-async' on 'jobs': limit 'tokens': amount")
        assert problem in said and "so the call is denied" in said

    assert [verdict for verdict, _ in events] == [
        "allowed", "allowed", "rate_limited", "allowed", "denied", "denied", "denied"
    ]  # fmt: skip
    assert events[2][1] == "counter tokens"
    assert events[4][1] is not None and "max_tokens" in events[4][1]
