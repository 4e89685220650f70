"""The gateway in front of @modelcontextprotocol/server-everything, driven by the real SDK client."""

from __future__ import annotations

import json

import anyio
import mcp_types as types
import pytest

from tests.support.harness import (
    EVERYTHING_ELICITATION_ANSWER,
    WIRE_HEADERS,
    audit_events,
    everything_server,
    run_gateway,
    wire_request,
)

pytestmark = pytest.mark.usefixtures("node_available")

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {"action": "allow"},
        "get-sum": {"action": "allow", "redact": ["b"]},
        "trigger-long-running-operation": {"action": "allow"},
        "trigger-elicitation-request": {"action": "allow"},
        "get-env": {"action": "deny", "reason": "environment variables may hold secrets"},
        "get-tiny-image": {"action": "allow", "hide": True},
    },
}


@pytest.fixture
async def gateway(tmp_path):
    async with run_gateway(
        tmp_path, policy=POLICY, servers={"everything": everything_server()}, grants=["agent", "other"]
    ) as gw:
        yield gw


def text_of(result: types.CallToolResult) -> str:
    return "\n".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_allowed_call_reaches_the_upstream_and_returns_its_result(gateway):
    async with gateway.session("everything") as session:
        result = await session.call_tool("echo", {"message": "hello through holdgate"})
    assert not result.is_error
    assert "hello through holdgate" in text_of(result)


async def test_denied_call_returns_a_tool_error_with_the_reason(gateway):
    async with gateway.session("everything") as session:
        result = await session.call_tool("get-env", {})
    assert result.is_error
    assert "environment variables may hold secrets" in text_of(result)
    assert "get-env" in text_of(result)


async def test_default_deny_applies_to_tools_without_a_rule(gateway):
    async with gateway.session("everything") as session:
        result = await session.call_tool("toggle-simulated-logging", {})
    assert result.is_error
    assert "denied" in text_of(result)


async def test_tools_list_shows_only_callable_and_unhidden_tools(gateway):
    async with gateway.session("everything") as session:
        names = {tool.name for tool in (await session.list_tools()).tools}
    assert names == {"echo", "get-sum", "trigger-long-running-operation", "trigger-elicitation-request"}


async def test_hidden_tool_is_still_callable_when_allowed(gateway):
    async with gateway.session("everything") as session:
        result = await session.call_tool("get-tiny-image", {})
    assert not result.is_error


async def test_unfiltered_tools_list_when_configured(tmp_path):
    async with (
        run_gateway(
            tmp_path, policy=POLICY, servers={"everything": everything_server()}, tools_list_filter=False
        ) as gw,
        gw.session("everything") as session,
    ):
        names = {tool.name for tool in (await session.list_tools()).tools}
    assert {"get-env", "echo", "get-tiny-image"} <= names


async def test_progress_notifications_are_forwarded(gateway):
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with gateway.session("everything") as session:
        result = await session.call_tool(
            "trigger-long-running-operation", {"duration": 0.3, "steps": 3}, progress_callback=on_progress
        )
    assert not result.is_error
    assert [p for p, _ in seen] == [1, 2, 3]
    assert all(total == 3 for _, total in seen)


async def test_elicitation_from_the_upstream_reaches_the_client_and_back(gateway):
    asked: list[str] = []

    async def on_elicit(context, params):
        asked.append(params.message)
        return types.ElicitResult(action="accept", content=EVERYTHING_ELICITATION_ANSWER)

    async with gateway.session("everything", elicitation_callback=on_elicit) as session:
        result = await session.call_tool("trigger-elicitation-request", {})
    assert asked, "the elicitation never reached the downstream client"
    assert "Ada" in text_of(result) or "accept" in text_of(result).lower()


async def test_resources_templates_prompts_and_completion_are_proxied(gateway):
    async with gateway.session("everything") as session:
        resources = await session.list_resources()
        assert resources.resources
        first = resources.resources[0]
        read = await session.read_resource(first.uri)
        assert read.contents
        templates = await session.list_resource_templates()
        assert templates.resource_templates
        prompts = await session.list_prompts()
        names = {p.name for p in prompts.prompts}
        assert "simple-prompt" in names
        prompt = await session.get_prompt("simple-prompt")
        assert prompt.messages


async def test_cancelling_a_call_ends_it_and_the_session_keeps_working(gateway):
    async with gateway.session("everything") as session:
        with anyio.move_on_after(0.5) as scope:
            await session.call_tool("trigger-long-running-operation", {"duration": 30, "steps": 30})
        assert scope.cancelled_caught
        result = await session.call_tool("echo", {"message": "still here"})
        assert "still here" in text_of(result)
    await gateway.state.audit.flush()
    events = await audit_events(gateway)
    long_ops = [e for e in events if e.tool == "trigger-long-running-operation"]
    assert long_ops and long_ops[-1].outcome == "cancelled"


async def test_modern_era_client_lists_and_calls_through_the_gateway(gateway):
    async with gateway.modern("everything") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        assert "echo" in names and "get-env" not in names
        result = await client.call_tool("echo", {"message": "stateless hello"})
        assert "stateless hello" in text_of(result)
        denied = await client.call_tool("get-env", {})
        assert denied.is_error


async def test_each_call_is_audited_with_redacted_arguments(gateway):
    async with gateway.session("everything") as session:
        await session.call_tool("get-sum", {"a": 2, "b": 40})
        await session.call_tool("get-env", {})
    await gateway.state.audit.flush()
    events = {e.tool: e for e in await audit_events(gateway)}
    summed = events["get-sum"]
    assert summed.verdict == "allowed" and summed.outcome == "ok" and summed.grant == "agent"
    assert json.loads(summed.arguments) == {"a": 2, "b": "[redacted]"}
    assert len(summed.args_sha256) == 64 and summed.duration_ms is not None
    assert events["get-env"].verdict == "denied" and events["get-env"].rule == "get-env"


async def test_a_session_cannot_be_used_with_another_grants_token(gateway):
    import httpx2

    def attempt(token: str, session_id: str):
        return http.post(
            gateway.mcp_url("everything"),
            headers={**WIRE_HEADERS, "Authorization": f"Bearer {token}", "Mcp-Session-Id": session_id},
            json=wire_request(99, "ping"),
        )

    async with gateway.session("everything", grant="agent") as session, httpx2.AsyncClient() as http:
        await session.list_tools()
        manager = gateway.state.endpoint.managers["everything"]
        (session_id,) = manager.sessions  # the one live session
        assert (await attempt(gateway.tokens["agent"], session_id)).status_code == 200
        assert (await attempt(gateway.tokens["other"], session_id)).status_code == 404
