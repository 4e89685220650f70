"""Whatever arrives on /mcp, holdgate answers without a 500, audits every tools/call it took, and keeps serving.

A real `holdgate serve` process (SQLite, server-everything as the upstream) takes hypothesis-generated
JSON-RPC bodies on one 2025-11-25 session: arbitrary envelopes (odd ids, methods, params, batches, bytes
that are not JSON), and `tools/call` arguments with the values that broke it before — numbers JSON allows
and Python floats don't (`1e400`), `NaN` from a lenient client, NUL and other control characters, long
strings, deep nesting. After each run the audit is read from the database: every call that was taken is
there, and a plain call still works.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.harness import ROOT, WIRE_HEADERS, everything_server, free_port, wire_initialize, write_config

pytestmark = pytest.mark.usefixtures("node_available")

POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {"echo": {"action": "allow"}, "get-sum": {"action": "allow"}, "get-env": {"action": "deny"}},
}


@dataclass(frozen=True)
class Raw:
    """A JSON token written as is: numbers Python can't hold, or that strict JSON does not allow."""

    text: str


@dataclass
class Service:
    url: str
    database: Path
    token: str
    session_headers: dict[str, str] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)

    def post(self, body: bytes) -> httpx.Response:
        headers = {**WIRE_HEADERS, **self.session_headers, "Authorization": f"Bearer {self.token}"}
        return httpx.post(f"{self.url}/mcp/everything", content=body, headers=headers, timeout=30)

    def audited(self, tool: str) -> int:
        with sqlite3.connect(self.database) as connection:
            return connection.execute("SELECT count(*) FROM audit_events WHERE tool = ?", (tool,)).fetchone()[0]


def _run(*args: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "service", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    tmp_path = tmp_path_factory.mktemp("properties")
    write_config(tmp_path / "config", policy=POLICY, servers={"everything": everything_server()})
    port = free_port()
    env = {
        **os.environ,
        "HOLDGATE_CONFIG_DIR": str(tmp_path / "config"),
        "HOLDGATE_DATA_DIR": str(tmp_path / "data"),
        "HOLDGATE_PORT": str(port),
        "HOLDGATE_WATCH_POLICY": "false",
        "HOLDGATE_AUDIT_FLUSH_INTERVAL_S": "0.05",
    }
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "service", "serve"], cwd=ROOT, env=env, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            assert process.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code < 500:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        token = _run("grant", "create", "agent", env=env).strip().splitlines()[-1]
        live = Service(url=url, database=tmp_path / "data" / "holdgate.db", token=token)
        opened = live.post(json.dumps(wire_initialize()).encode())
        assert opened.status_code == 200, opened.text
        live.session_headers = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        live.post(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode())
        yield live
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
    assert "Traceback" not in (tmp_path / "serve.log").read_text(), (tmp_path / "serve.log").read_text()[-5000:]


def dump(value: Any) -> str:
    """JSON text of `value`, with each `Raw` token written as it is."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(key)}:{dump(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(dump(item) for item in value) + "]"
    return json.dumps(value)


odd_numbers = st.sampled_from(
    [Raw("1e400"), Raw("-1e400"), Raw("NaN"), Raw("Infinity"), Raw("-Infinity"), Raw("1" * 400), Raw("-0.0")]
)
odd_text = st.one_of(
    st.text(),
    st.text(alphabet=st.characters(codec="utf-8", max_codepoint=0x1F)),  # NUL and the other control characters
    st.sampled_from(["\x00", "a\x00b", "x" * 70_000, "\ud7ff\ue000", "🙂" * 100]),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    odd_numbers,
    odd_text,
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(odd_text, children, max_size=4),
    max_leaves=20,
)


def deep(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


arguments = st.one_of(
    st.dictionaries(odd_text, json_values, max_size=5).map(lambda extra: {"message": "hello", **extra}),
    st.fixed_dictionaries({"message": json_values}),
    st.sampled_from([{}, {"message": deep(5000)}, {"message": Raw("{" * 3000 + "}" * 3000)}]),
)


def _assert_served(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])


def _taken(response: httpx.Response) -> bool:
    """Whether the server took the request as a tools/call (anything but a refusal of the envelope)."""
    if response.status_code != 200:
        return False
    text = response.text
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in text.splitlines() if line.startswith("data:")]
        text = data[-1] if data else "{}"
    message = json.loads(text)
    code = (message.get("error") or {}).get("code")
    return code not in (-32700, -32600)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(args=arguments, request_id=st.integers(min_value=1, max_value=2**53))
def test_every_tools_call_is_answered_and_audited(service: Service, args: dict[str, Any], request_id: int) -> None:
    body = dump(
        {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": "echo", "arguments": args}}
    )
    before = service.audited("echo")
    response = service.post(body.encode("utf-8", "surrogatepass"))
    _assert_served(response)
    if _taken(response):
        deadline = time.monotonic() + 5
        while service.audited("echo") <= before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert service.audited("echo") == before + 1, f"not audited: {body[:300]}"


ids = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.text(max_size=50), st.none(), st.booleans(), st.floats()
)
methods = st.one_of(
    st.sampled_from(
        [
            "tools/call",
            "tools/list",
            "resources/list",
            "prompts/list",
            "ping",
            "initialize",
            "completion/complete",
            "logging/setLevel",
            "tasks/get",
            "notifications/cancelled",
            "notifications/initialized",
        ]
    ),
    st.text(max_size=40),
)
envelopes = st.fixed_dictionaries(
    {"jsonrpc": st.sampled_from(["2.0", "1.0", 2]), "method": methods},
    optional={"id": ids, "params": st.one_of(json_values, st.dictionaries(odd_text, json_values, max_size=4))},
)
bodies = st.one_of(
    envelopes.map(dump),
    st.lists(envelopes, min_size=0, max_size=3).map(dump),
    json_values.map(dump),
    st.binary(max_size=200).map(lambda data: data.decode("latin-1")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_any_body_is_answered_without_a_server_error(service: Service, body: str) -> None:
    _assert_served(service.post(body.encode("utf-8", "surrogatepass")))


def test_service_still_serves_after_the_onslaught(service: Service) -> None:
    """Runs last in this module: after everything above, a plain call is answered and audited."""
    before = service.audited("get-sum")
    response = service.post(json.dumps(plain_call("get-sum", {"a": 2, "b": 3})).encode())
    assert response.status_code == 200, response.text
    assert "5" in response.text
    deadline = time.monotonic() + 5
    while service.audited("get-sum") <= before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert service.audited("get-sum") == before + 1


def plain_call(tool: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 999_999, "method": "tools/call", "params": {"name": tool, "arguments": args}}
