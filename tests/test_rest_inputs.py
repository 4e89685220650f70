"""Bad input on the REST API and the dashboard is a 4xx with a message, never a 500."""

from __future__ import annotations

import pytest

from tests.approvals.support import api, approval_policy
from tests.dashboard.support import browser, sign_in
from tests.support.harness import run_gateway

OUT_OF_RANGE = [
    "/api/decisions?offset=9223372036854775808",
    "/api/decisions?offset=9223372036854775807",
    "/api/decisions?since=0001-01-01T00:00:00",
    "/api/decisions?until=0001-01-01T00:00:00",
    "/api/decisions?since=9999-12-31T23:59:59-14:00",
    "/api/audit?offset=9223372036854775808",
    "/api/audit?since=0001-01-01T00:00:00",
    "/api/audit?until=9999-12-31T23:59:59-14:00",
    "/api/audit?since=0001-01-01T00:00:00%2B14:00&format=jsonl",
]


async def test_out_of_range_api_filters_are_refused_with_a_reason(tmp_path, database):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}, **database) as gw:
        for path in OUT_OF_RANGE:
            response = await api(gw, "GET", path, "alice")
            assert response.status_code == 422, (path, response.status_code, response.text)
            assert response.json()["detail"], path
        fine = await api(gw, "GET", "/api/decisions?since=2026-01-01T00:00:00&offset=1000000", "alice")
        assert fine.status_code == 200 and fine.json()["items"] == []


@pytest.mark.parametrize(
    "path",
    [
        "/history?until=0001-01-01T00:00",
        "/history?since=0001-01-01T00:00",
        "/history?tab=calls&until=0001-01-01T00:00",
        "/history?until=9999-12-31T23:59-14:00",
        "/history?offset=9223372036854775808",
        "/history?tab=calls&offset=9223372036854775808",
        "/history/export?format=csv&since=0001-01-01T00:00",
    ],
)
async def test_out_of_range_history_filters_are_refused_with_a_reason(tmp_path, path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw, browser(gw) as client:
        await sign_in(client, "alice")
        response = await client.get(path)
        assert response.status_code == 422, (path, response.status_code, response.text[:300])
        assert "detail" in response.json()


async def test_deeply_nested_explain_arguments_are_refused_with_a_reason(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw, browser(gw) as client:
        await sign_in(client, "alice")
        for depth in (150, 3000):
            args = '{"a":' * depth + "1" + "}" * depth
            response = await client.get("/rules", params={"server": "jobs", "tool": "cancel-async-job", "args": args})
            assert response.status_code in (200, 422), (depth, response.status_code)
            assert "cannot explain" in response.text and "nested" in response.text, depth
        shallow = await client.get(
            "/rules", params={"server": "jobs", "tool": "cancel-async-job", "args": '{"jobId": {"x": [1, 2]}}'}
        )
        assert shallow.status_code == 200 and "arguments sha256" in shallow.text


NUL_REQUESTS = [
    ("GET", "/api/decisions?server=a%00b", None),
    ("GET", "/api/audit?tool=x%00", None),
    ("GET", "/api/audit?format=csv&grant=%00", None),
    ("GET", "/api/decisions/d_%00", None),
    ("POST", "/api/decisions/d_%00/approve", None),
    ("POST", "/api/decisions/approve", {"server": "jobs\u0000"}),
    ("POST", "/api/decisions/deny", {"ids": ["d_\u0000"], "reason": "no"}),
    ("POST", "/api/decisions/d_x/deny", {"reason": "no\u0000"}),
]


async def test_nul_characters_are_refused_with_a_reason(tmp_path, database):
    """PostgreSQL cannot take NUL in text; refused on both databases alike."""
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}, **database) as gw:
        for method, path, body in NUL_REQUESTS:
            response = await api(gw, method, path, "alice", json=body)
            assert response.status_code == 422, (method, path, response.status_code, response.text)
            assert response.json()["detail"] == "text may not contain the NUL character (\\u0000)"
        async with browser(gw) as client:
            csrf = await sign_in(client, "alice")
            for path in (
                "/history?server=a%00",
                "/history?tab=calls&grant=%00",
                "/decisions/d_%00",
                "/history/export?approver=%00",
            ):
                response = await client.get(path)
                assert response.status_code == 422, (path, response.status_code)
            vote = await client.post("/decisions/d_x/deny", data={"csrf": csrf, "reason": "no\u0000"})
            assert vote.status_code == 422
        assert (await api(gw, "GET", "/api/decisions?server=jobs", "alice")).status_code == 200


async def test_a_deeply_nested_json_body_is_never_a_server_error(tmp_path):
    """The NUL check reads JSON bodies, also where no route parses them (a GET): deep nesting is no 500 there."""
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        body = b"[" * 100_000 + b"]" * 100_000
        headers = {"content-type": "application/json"}
        refused = await api(gw, "POST", "/api/decisions/approve", "alice", content=body, headers=headers)
        assert refused.status_code == 400 and refused.json()["detail"]
        ignored = await api(gw, "GET", "/api/decisions", "alice", content=body, headers=headers)
        assert ignored.status_code == 422 and ignored.json()["detail"] == "the JSON body is nested too deeply"
