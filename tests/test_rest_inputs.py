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
