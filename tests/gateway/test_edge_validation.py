"""A tools/call whose tool name the gateway cannot hold is refused at the edge, and audited as refused.

The audit and decision columns hold 200 characters of tool name, and no database text column takes a
NUL; such a name once stopped the audit writer on PostgreSQL. The gateway now refuses the call with a
JSON-RPC error before the policy acts, and the audit records it (escaped, cut to fit) as a denied call,
on both databases, while the service keeps serving.
"""

from __future__ import annotations

import pytest
from mcp import MCPError
from mcp_types import INVALID_PARAMS

from service.gateway.proxy import TOOL_NAME_MAX, storable_tool_name, tool_name_problem
from tests.support.harness import audit_events, run_gateway, text_of, time_server

POLICY = {"version": "1", "default": "allow", "redact": ["secret"]}


async def test_unholdable_tool_names_are_refused_and_audited_as_refused(tmp_path, database):
    too_long, with_nul, with_newline = "x" * (TOOL_NAME_MAX + 1), "get_current\x00time", "get_current\ntime"
    async with (
        run_gateway(tmp_path, policy=POLICY, servers={"time": time_server()}, **database) as gw,
        gw.session("time") as session,
    ):
        refusals = {}
        for name in (too_long, with_nul, with_newline):
            with pytest.raises(MCPError) as refused:
                await session.call_tool(name, {"secret": "hunter2", "n": 1})
            refusals[name] = refused.value.error
        with pytest.raises(MCPError) as longest:  # at the limit: forwarded, and the upstream's own answer
            await session.call_tool("y" * TOOL_NAME_MAX, {})
        now = await session.call_tool("get_current_time", {"timezone": "UTC"})
        await gw.state.audit.flush()
        events = await audit_events(gw)

    assert all(error.code == INVALID_PARAMS for error in refusals.values())
    assert f"{TOOL_NAME_MAX + 1} characters long (at most {TOOL_NAME_MAX})" in refusals[too_long].message
    assert "U+0000, a control character" in refusals[with_nul].message
    assert "U+000A, a control character" in refusals[with_newline].message
    assert "Unknown tool" in longest.value.error.message
    assert not now.is_error and "UTC" in text_of(now)

    refused_rows = [e for e in events if e.reason and e.reason.startswith("refused at the edge")]
    assert [(e.tool, e.verdict) for e in refused_rows] == [
        ("x" * (TOOL_NAME_MAX - 1) + "…", "denied"),
        ("get_current\\u0000time", "denied"),
        ("get_current\\u000atime", "denied"),
    ]
    assert all("hunter2" not in e.arguments for e in refused_rows), "the policy's redaction still applies"
    assert [(e.tool, e.outcome) for e in events[3:]] == [
        ("y" * TOOL_NAME_MAX, "protocol_error"),
        ("get_current_time", "ok"),
    ]


def test_a_lone_surrogate_or_an_empty_name_is_refused_and_a_unicode_name_is_not():
    assert tool_name_problem("echo\ud800") == "the tool name contains U+D800, an unpaired surrogate"
    assert storable_tool_name("echo\ud800").encode() == b"echo\\ud800"  # storable as UTF-8
    assert tool_name_problem("") == "the tool name is empty"
    assert tool_name_problem("météo-\u00e9t\u00e9_2") is None
