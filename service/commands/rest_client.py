"""The command line's client of a running holdgate's REST API, for `approve`, `deny` and `decisions list --url`.

With `--url` (or `HOLDGATE_URL`) those commands act through the service, as the person whose API token they
send, instead of opening the database as the local operator: from an operator's laptop, or wherever the
database is out of reach. They then import no database code at all, which is what lets them start in a
fraction of the local path's time (bench/bench_cli.py).

Standard library only (`urllib`): this module is on those commands' start-up path, under the lazy-import rule
of service/cli.py, and importing httpx alone costs about as much as the rest of the command (docs/decisions.md).
Errors come back as `RestError` with the problem details' `detail` (service/api/problems.py), or with what
kept the request from reaching holdgate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode, urlsplit
from urllib.request import Request, urlopen

TIMEOUT_S = 60.0
"""A bulk vote on thousands of decisions takes seconds; nothing here waits for a person."""


class RestError(Exception):
    """A request the service refused (`status` is its HTTP status) or that never reached it (`status` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class RestClient:
    """Requests to one holdgate (`base_url`, e.g. https://holdgate.example.com) as the person owning `token`."""

    base_url: str
    token: str

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise RestError(f"--url must be holdgate's http:// or https:// base URL, not {self.base_url!r}")
        if not self.token.strip():
            raise RestError("--url needs a person's API token: set HOLDGATE_PERSON_TOKEN (or pass --token)")

    def list_decisions(self, **filters: Any) -> dict[str, Any]:
        """GET /api/decisions with the filters that are set: {"items": [...], "total": N, ...}."""
        return self._request("GET", "/api/decisions", query={k: v for k, v in filters.items() if v is not None})

    def vote(self, decision_id: str, value: str, reason: str | None, **terms: str) -> dict[str, Any]:
        """POST /api/decisions/{id}/approve|deny: {"decided", "message", "decision"}; `terms` are a standing
        approval's `scope` and `for`."""
        body = ({"reason": reason} if reason is not None else {}) | terms or None
        return self._request("POST", f"/api/decisions/{quote(decision_id, safe='')}/{value}", body=body)

    def vote_many(self, value: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /api/decisions/approve|deny (ids or a filter): counts and a result per decision."""
        return self._request("POST", f"/api/decisions/{value}", body=body)

    def _request(
        self, method: str, path: str, *, query: dict[str, Any] | None = None, body: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        url = self.base_url.rstrip("/") + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Authorization": f"Bearer {self.token.strip()}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        request = Request(url, data=data, headers=headers, method=method)
        try:
            with urlopen(request, timeout=TIMEOUT_S) as response:
                answer = json.loads(response.read())
        except HTTPError as exc:
            raise RestError(_refusal(exc), exc.code) from None
        except (URLError, OSError) as exc:  # refused, unresolvable, TLS, timeout
            reason = getattr(exc, "reason", exc)
            raise RestError(f"cannot reach holdgate at {self.base_url}: {reason}") from None
        except ValueError as exc:
            raise RestError(f"{self.base_url} answered something that is not JSON ({exc}): is it holdgate?") from None
        if not isinstance(answer, dict):
            raise RestError(f"{self.base_url} answered {type(answer).__name__}, not a JSON object: is it holdgate?")
        return answer


def _refusal(exc: HTTPError) -> str:
    """The refusal's `detail` (problem details), else its status line."""
    try:
        detail = json.loads(exc.read()).get("detail")
    except (ValueError, AttributeError, OSError):
        detail = None
    text = detail if isinstance(detail, str) and detail else exc.reason
    return f"holdgate answered {exc.code}: {text}"
