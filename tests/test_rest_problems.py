"""The REST API's errors are RFC 9457 problem details; its OpenAPI document declares them and its security; /docs
works without reaching the internet."""

from __future__ import annotations

import re

import httpx2

from tests.approvals.support import api, approval_policy
from tests.dashboard.test_dashboard_browser import browser_page, chromium  # noqa: F401 (fixture)
from tests.support.harness import run_gateway

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


def assert_problem(response: httpx2.Response, status: int, path: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json", response.headers
    body = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["type"] == "about:blank" and body["status"] == status and body["instance"] == path
    assert body["title"] and body["detail"]
    return body


async def test_every_kind_of_api_error_is_a_problem_details_document(tmp_path, database):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}, **database) as gw:
        # 401 from the person dependency: the challenge header stays
        no_token = await api(gw, "GET", "/api/decisions")
        body = assert_problem(no_token, 401, "/api/decisions")
        assert body["title"] == "Unauthorized" and "person's token" in body["detail"]
        assert no_token.headers["www-authenticate"].startswith("Bearer")
        wrong_scheme = await api(gw, "GET", "/api/audit", headers={"Authorization": "Basic YWxpY2U6eA=="})
        assert_problem(wrong_scheme, 401, "/api/audit")

        # 404 raised by a route, with the route's own message
        missing = await api(gw, "GET", "/api/decisions/d_missing", "alice")
        assert assert_problem(missing, 404, "/api/decisions/d_missing")["detail"] == "no decision d_missing"
        vote = await api(gw, "POST", "/api/decisions/d_missing/approve", "alice")
        assert_problem(vote, 404, "/api/decisions/d_missing/approve")

        # 422 from request validation: a readable detail, and pydantic's list under `errors`
        invalid = await api(gw, "GET", "/api/decisions?limit=0&status=bogus", "alice")
        body = assert_problem(invalid, 422, "/api/decisions")
        assert {tuple(e["loc"]) for e in body["errors"]} == {("query", "limit"), ("query", "status")}
        assert "query.limit" in body["detail"] and "query.status" in body["detail"]
        no_reason = await api(gw, "POST", "/api/decisions/d_missing/deny", "alice", json={})
        assert_problem(no_reason, 422, "/api/decisions/d_missing/deny")

        # 422 raised by a dependency (the NUL check), 400 for a body nested past the parser
        nul = await api(gw, "GET", "/api/decisions?server=a%00b", "alice")
        assert "NUL" in assert_problem(nul, 422, "/api/decisions")["detail"]
        deep = b"[" * 100_000 + b"]" * 100_000
        headers = {"content-type": "application/json"}
        nested = await api(gw, "POST", "/api/decisions/approve", "alice", content=deep, headers=headers)
        assert_problem(nested, 400, "/api/decisions/approve")

        # Starlette's own answers: unknown path, wrong method
        assert_problem(await api(gw, "GET", "/api/nowhere", "alice"), 404, "/api/nowhere")
        assert_problem(await api(gw, "DELETE", "/api/decisions", "alice"), 405, "/api/decisions")


async def test_a_redirect_raised_by_the_dashboard_stays_a_redirect(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        async with httpx2.AsyncClient(base_url=gw.url, timeout=30) as client:
            response = await client.get("/history")
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")
        assert response.content == b""


async def test_the_openapi_document_declares_the_bearer_scheme_and_the_error_responses(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        async with httpx2.AsyncClient(base_url=gw.url, timeout=30) as client:
            document = (await client.get("/openapi.json")).json()
    [(name, scheme)] = document["components"]["securitySchemes"].items()
    assert name == "personToken" and scheme["type"] == "http" and scheme["scheme"] == "bearer"
    assert "token_sha256" in scheme["description"]
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["properties"]) >= PROBLEM_KEYS and set(problem["required"]) == {
        "title",
        "status",
        "detail",
        "instance",
    }
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        if path.startswith("/api/")
        for method, operation in item.items()
    ]
    routes = {(path, method) for path, method, _ in operations}
    assert {
        ("/api/decisions", "get"),
        ("/api/decisions/{decision_id}/approve", "post"),
        ("/api/standing", "get"),
        ("/api/tools/{server}/{tool}/accept", "post"),
        ("/api/audit", "get"),
    } <= routes, sorted(routes)
    for path, method, operation in operations:
        assert operation["security"] == [{"personToken": []}], (path, method)
        errors = {code: answer for code, answer in operation["responses"].items() if code.startswith(("4", "5"))}
        assert {"401", "422"} <= set(errors), (path, method, sorted(errors))
        problem_ref = {"schema": {"$ref": "#/components/schemas/Problem"}}
        assert all(answer["content"] == {"application/problem+json": problem_ref} for answer in errors.values())
    votes = document["paths"]["/api/decisions/{decision_id}/approve"]["post"]["responses"]
    assert {"401", "403", "404", "409", "422"} <= set(votes)
    assert "HTTPValidationError" not in document["components"]["schemas"]  # FastAPI's default 422 shape is gone


async def test_the_docs_page_loads_only_from_holdgate(tmp_path):
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw:
        async with httpx2.AsyncClient(base_url=gw.url, timeout=30) as client:
            page = await client.get("/docs")
            assert page.status_code == 200
            assets = re.findall(r"""(?:href|src)=['"]([^'"]+)['"]""", page.text)
            assert assets and all(a.startswith("/") for a in assets), assets
            for asset in assets:
                served = await client.get(asset)
                assert served.status_code == 200 and len(served.content) > 100, asset
            assert "openapi.json" in page.text


async def test_swagger_ui_renders_the_api_with_the_internet_cut_off(tmp_path, chromium):  # noqa: F811
    async with run_gateway(tmp_path, policy=approval_policy(), servers={}) as gw, browser_page(chromium) as page:
        outside: list[str] = []

        async def local_only(route) -> None:
            if route.request.url.startswith(gw.url):
                await route.continue_()
            else:
                outside.append(route.request.url)
                await route.abort()

        await page.route("**/*", local_only)
        await page.goto(f"{gw.url}/docs")
        await page.wait_for_selector('[data-path="/api/decisions/{decision_id}/approve"]')
        await page.wait_for_selector("button.authorize")  # the bearer scheme gives Swagger UI its Authorize button
        assert outside == []
