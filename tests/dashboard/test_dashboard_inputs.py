"""Whatever a signed-in browser sends to the dashboard's pages (they are not in the OpenAPI document, so
schemathesis does not reach them), the answer is never a 500."""

from __future__ import annotations

import asyncio
import json
import re

import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.approvals.support import PERSON_TOKENS
from tests.test_rest_schemathesis import gateway_in_a_thread

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
EXAMPLES = 150

text = st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=40)
times = st.one_of(
    text,
    st.datetimes().map(lambda d: d.isoformat(timespec="minutes")),
    st.sampled_from(["0001-01-01T00:00", "9999-12-31T23:59-14:00", "2026-11-24T12:00+14:00", "1969-12-31"]),
)
numbers = st.one_of(text, st.integers().map(str), st.sampled_from(["9223372036854775808", "-1", "1e9"]))
json_like = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=20,
)
requests_strategy = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "tab": st.sampled_from(["decisions", "calls"]) | text,
            "status": text,
            "grant": text,
            "server": text,
            "tool": text,
            "approver": text,
            "since": times,
            "until": times,
            "offset": numbers,
        },
    ).map(lambda q: ("/history", q)),
    st.fixed_dictionaries({"format": st.sampled_from(["csv", "jsonl"]) | text, "since": times, "tab": text}).map(
        lambda q: ("/history/export", q)
    ),
    st.fixed_dictionaries(
        {"server": text, "tool": text, "grant": text, "args": st.one_of(text, json_like.map(json.dumps))}
    ).map(lambda q: ("/rules", q)),
    text.map(lambda decision_id: (f"/decisions/{requests.utils.quote(decision_id, safe='')}", {})),
    text.map(lambda target: ("/login", {"next": target})),
)


def signed_in(url: str) -> requests.Session:
    browser = requests.Session()
    page = browser.get(f"{url}/login", timeout=30)
    form = {"token": PERSON_TOKENS["alice"], "csrf": CSRF.search(page.text).group(1), "next": "/"}
    assert browser.post(f"{url}/login", data=form, allow_redirects=False, timeout=30).status_code == 303
    return browser


async def test_no_dashboard_input_gets_a_server_error(tmp_path, database):
    with gateway_in_a_thread(tmp_path / "service", **database) as url:
        browser = await asyncio.to_thread(signed_in, url)
        answered: list[int] = []

        @given(request=requests_strategy)
        @settings(max_examples=EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def page_answers(request: tuple[str, dict[str, str]]) -> None:
            path, query = request
            response = browser.get(f"{url}{path}", params=query, allow_redirects=False, timeout=30)
            answered.append(response.status_code)
            assert response.status_code < 500, (path, query, response.status_code)

        await asyncio.to_thread(page_answers)
    assert len(answered) >= EXAMPLES and 200 in answered and 422 in answered, sorted(set(answered))
