"""Every HTTP error holdgate's FastAPI app answers is an RFC 9457 problem details document.

`install(app)` is the one place that shapes errors: an `HTTPException` raised anywhere (a route, a
dependency such as `require_person`), a request FastAPI could not validate, an unknown path or method, and an
unhandled exception all answer `application/problem+json`:

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "no decision d_123", "instance": "/api/decisions/d_123"}

`type` is `about:blank` (RFC 9457 §4.2.1: the status code says all; `title` is its phrase), `detail` is the
message routes always gave (clients that read `detail` keep working), `instance` is the request's path. A
request that failed validation also carries `errors`, pydantic's list (`loc`, `msg`, `type`), the list a 422's
`detail` used to be. Headers of the exception (`WWW-Authenticate`, `Retry-After`) are kept, and a redirect
raised as an exception (the dashboard's sign-in) stays a redirect.

`responses(401, 404, ...)` declares these answers on a route for the OpenAPI document; `openapi_schema` adds
the `Problem` schema they refer to. The MCP endpoint (`/mcp/...`) is not FastAPI's and answers JSON-RPC
errors, as MCP clients expect.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

MEDIA_TYPE = "application/problem+json"
logger = logging.getLogger(__name__)


class Problem(BaseModel):
    """RFC 9457 problem details, as every error of the REST API is answered."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem; about:blank: see status.")
    title: str = Field(description="The HTTP status phrase (Not Found, Conflict, ...).")
    status: int = Field(description="The HTTP status code, repeated.")
    detail: str = Field(description="What went wrong with this request, for a person to read.")
    instance: str = Field(description="The path of the request that failed.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="For a request that failed validation: each problem's place (loc) and message."
    )


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE


DESCRIPTIONS = {
    400: "The request is malformed.",
    401: "No token, or one that is not a declared person's (see WWW-Authenticate).",
    403: "The person may not do this (not an approver of the decision, or the call's own grant).",
    404: "No such decision or route.",
    409: "The decision was already decided, or this person already voted.",
    422: "A parameter or the body is not valid (errors lists each problem).",
    429: "Too many requests; wait for Retry-After.",
    503: "Not ready (starting, stopping, or the database does not answer).",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI `responses` entries for these error statuses: a problem details document each."""
    content = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {status: {"description": DESCRIPTIONS[status], "content": content} for status in statuses}


def problem(
    request: Request, status: int, detail: str, *, headers: Mapping[str, str] | None = None, **extra: Any
) -> ProblemResponse:
    """The problem details response for `status` with `detail`, for `request`."""
    body = Problem(title=_phrase(status), status=status, detail=detail, instance=request.url.path, **extra).model_dump(
        exclude_none=True
    )
    return ProblemResponse(jsonable_encoder(body), status_code=status, headers=headers)


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code < 400:  # a redirect or an empty answer raised to end a dependency early (dashboard sign-in)
        return Response(status_code=exc.status_code, headers=exc.headers)
    detail = exc.detail if isinstance(exc.detail, str) and exc.detail else _phrase(exc.status_code)
    return problem(request, exc.status_code, detail, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")} for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in errors)
    return problem(request, 422, f"the request is not valid: {summary}", errors=errors)


async def _unhandled(request: Request, exc: Exception) -> Response:
    # Starlette's ServerErrorMiddleware calls this after logging nothing: say what failed, keep the body bland.
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem(request, 500, "holdgate could not answer this request; the service log has the details")


def install(app: FastAPI) -> None:
    """Answer every error of `app` as problem details, and declare the `Problem` schema in its OpenAPI."""
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unhandled)
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_problem_schema(default_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def add_problem_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` (an OpenAPI document) with `components.schemas.Problem`, which `responses()` refers to."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    return schema


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
