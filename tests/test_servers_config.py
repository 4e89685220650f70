"""`config/servers.json` in the mcpServers format: stdio and HTTP upstreams, ${VAR} expansion, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.configfile import ConfigError
from service.gateway.servers import HttpServerSpec, StdioServerSpec, load_servers

SECRET = "s3cr3t-value-never-shown"


def write(tmp_path: Path, servers: dict[str, Any] | str) -> Path:
    path = tmp_path / "servers.json"
    if isinstance(servers, str):
        path.write_text(servers)
    else:
        path.write_text(json.dumps({"mcpServers": servers}, indent=2))
    return path


def load(tmp_path: Path, servers: dict[str, Any] | str, environ: dict[str, str] | None = None):
    return load_servers(write(tmp_path, servers), environ if environ is not None else {})


def error_for(tmp_path: Path, servers: dict[str, Any] | str, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, servers, environ)
    error = info.value
    assert error.file == tmp_path / "servers.json"
    assert str(error).startswith(f"{tmp_path / 'servers.json'}: {error.location}: ")
    return error


# -- what loads -------------------------------------------------------------------------------------


def test_claude_desktop_format_stdio_and_http(tmp_path):
    specs = load(
        tmp_path,
        {
            "jobs": {
                "command": "python",
                "args": ["examples/jobs_server.py", "--verbose"],
                "env": {"JOBS_STATE_DIR": "/tmp/jobs"},
                "cwd": "/srv",
            },
            "remote": {"url": "https://mcp.example.com/mcp", "headers": {"X-Team": "blue"}},
            "minimal": {"command": "node"},
        },
    )
    assert list(specs) == ["jobs", "remote", "minimal"]
    assert specs["jobs"] == StdioServerSpec(
        name="jobs",
        command="python",
        args=("examples/jobs_server.py", "--verbose"),
        env={"JOBS_STATE_DIR": "/tmp/jobs"},
        cwd="/srv",
    )
    assert specs["remote"] == HttpServerSpec(
        name="remote", url="https://mcp.example.com/mcp", headers={"X-Team": "blue"}
    )
    assert specs["minimal"] == StdioServerSpec(name="minimal", command="node")


@pytest.mark.parametrize("kind", ["http", "streamable-http", "streamableHttp"])
def test_claude_code_type_field_for_http(tmp_path, kind):
    spec = load(tmp_path, {"r": {"type": kind, "url": "http://127.0.0.1:9000/mcp"}})["r"]
    assert isinstance(spec, HttpServerSpec) and spec.url == "http://127.0.0.1:9000/mcp"


def test_claude_code_type_field_for_stdio(tmp_path):
    assert isinstance(load(tmp_path, {"s": {"type": "stdio", "command": "node"}})["s"], StdioServerSpec)


def test_no_servers_is_fine(tmp_path):
    assert load(tmp_path, {}) == {}


# -- ${VAR} expansion -------------------------------------------------------------------------------


def test_variables_are_expanded_everywhere(tmp_path):
    environ = {"PY": "/usr/bin/python3", "ROOT": "/srv/app", "KEY": SECRET, "TOKEN": "tok", "HOST": "mcp.example.com"}
    specs = load(
        tmp_path,
        {
            "jobs": {
                "command": "${PY}",
                "args": ["${ROOT}/server.py", "--key=${KEY}", "plain"],
                "env": {"API_KEY": "${KEY}", "MIXED": "a-${ROOT}-b"},
                "cwd": "${ROOT}",
            },
            "remote": {"url": "https://${HOST}/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}},
        },
        environ,
    )
    jobs = specs["jobs"]
    assert jobs.command == "/usr/bin/python3"
    assert jobs.args == ("/srv/app/server.py", f"--key={SECRET}", "plain")
    assert jobs.env == {"API_KEY": SECRET, "MIXED": "a-/srv/app-b"}
    assert jobs.cwd == "/srv/app"
    assert specs["remote"].url == "https://mcp.example.com/mcp"
    assert specs["remote"].headers == {"Authorization": "Bearer tok"}


def test_defaults(tmp_path):
    servers = {
        "s": {"command": "node", "env": {"LEVEL": "${LOG_LEVEL:-info}", "EMPTY": "${UNSET:-}", "SET": "${A:-x}"}}
    }
    assert load(tmp_path, servers, {"A": "from-env"})["s"].env == {"LEVEL": "info", "EMPTY": "", "SET": "from-env"}
    # a variable set to the empty string is set: its value wins over the default
    assert load(tmp_path, servers, {"A": ""})["s"].env["SET"] == ""


def test_only_braced_variables_are_expanded(tmp_path):
    spec = load(tmp_path, {"s": {"command": "sh", "args": ["-c", "echo $HOME", "${lower_case}"]}}, {"lower_case": "ok"})
    assert spec["s"].args == ("-c", "echo $HOME", "ok")


def test_the_process_environment_is_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("HOLDGATE_TEST_SERVERS_VAR", "from-process")
    spec = load_servers(write(tmp_path, {"s": {"command": "node", "env": {"V": "${HOLDGATE_TEST_SERVERS_VAR}"}}}))
    assert spec["s"].env == {"V": "from-process"}


@pytest.mark.parametrize(
    ("entry", "location"),
    [
        ({"command": "node", "env": {"API_KEY": "${MISSING_KEY}"}}, "mcpServers.s.env.API_KEY"),
        ({"command": "node", "args": ["--a", "${MISSING_KEY}"]}, "mcpServers.s.args[1]"),
        ({"command": "${MISSING_KEY}"}, "mcpServers.s.command"),
        ({"url": "https://x/${MISSING_KEY}"}, "mcpServers.s.url"),
        ({"url": "https://x/mcp", "headers": {"Authorization": "Bearer ${MISSING_KEY}"}},
         "mcpServers.s.headers.Authorization"),
    ],
)  # fmt: skip
def test_missing_variable_names_the_place_and_the_variable(tmp_path, entry, location):
    error = error_for(tmp_path, {"s": entry}, {"OTHER": SECRET})
    assert error.location == location
    assert error.message == "environment variable MISSING_KEY is not set (used as ${MISSING_KEY})"
    assert SECRET not in str(error)


def test_errors_after_expansion_do_not_echo_values(tmp_path):
    """A bad value that came from the environment is reported without the value."""
    environ = {"KEY": SECRET}
    error = error_for(tmp_path, {"s": {"url": "not a url ${KEY}"}}, environ)
    assert error.location == "mcpServers.s.url"
    assert SECRET not in str(error)

    error = error_for(tmp_path, {"s": {"command": "node", "env": {"A": "${KEY}"}, "bogus": "${KEY}"}}, environ)
    assert error.location == "mcpServers.s.bogus"
    assert "unknown key 'bogus'" in error.message
    assert SECRET not in str(error)


# -- refused ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        {"type": "sse", "url": "https://mcp.example.com/sse"},
        {"transport": "sse", "url": "https://mcp.example.com/sse"},
    ],
)
def test_sse_is_refused_by_name(tmp_path, entry):
    error = error_for(tmp_path, {"old": entry})
    assert error.location == "mcpServers.old.type"
    assert "SSE transport is not supported" in error.message
    assert "Streamable HTTP" in error.message


@pytest.mark.parametrize(
    ("name", "location"),
    [
        ("bad name", 'mcpServers["bad name"]'),
        ("-dash-first", "mcpServers.-dash-first"),
        ("_underscore-first", "mcpServers._underscore-first"),
        ("a/b", "mcpServers.a/b"),
        ("x" * 65, "mcpServers." + "x" * 65),
        ("", 'mcpServers[""]'),
        ("dot.ted", None),
        ("under_score-1", None),
        ("x" * 64, None),
    ],
)
def test_server_names(tmp_path, name, location):
    servers = {name: {"command": "node"}}
    if location is None:
        assert list(load(tmp_path, servers)) == [name]
        return
    error = error_for(tmp_path, servers)
    assert error.location == location
    assert "server name must be 1-64 letters" in error.message
    assert "/mcp/<name>" in error.message


@pytest.mark.parametrize(
    "entry",
    [
        {"command": "node", "url": "https://x/mcp"},
        {},
        {"args": ["x"]},
        {"env": {"A": "b"}},
    ],
)
def test_exactly_one_of_command_and_url(tmp_path, entry):
    error = error_for(tmp_path, {"s": entry})
    assert error.location == "mcpServers.s"
    assert error.message == 'give either "command" (a stdio server) or "url" (an HTTP server)'


@pytest.mark.parametrize(
    ("entry", "location", "message"),
    [
        ({"command": ""}, "mcpServers.s.command", "at least 1 character"),
        ({"command": "node", "args": "x"}, "mcpServers.s.args", "valid list"),
        ({"command": "node", "env": {"A": 5}}, "mcpServers.s.env.A", "valid string"),
        ({"command": "node", "headers": {}}, "mcpServers.s.headers", "unknown key 'headers'"),
        ({"url": "ftp://x/mcp"}, "mcpServers.s.url", "'http' or 'https'"),
        ({"url": "https://x/mcp", "headers": {"A": 5}}, "mcpServers.s.headers.A", "valid string"),
        ({"url": "https://x/mcp", "env": {}}, "mcpServers.s.env", "unknown key 'env'"),
        ({"type": "http", "command": "node"}, "mcpServers.s.type", "'stdio'"),
        ({"type": "stdio", "url": "https://x/mcp"}, "mcpServers.s.type", "'http'"),
        ("node", "mcpServers.s", "valid dictionary"),
    ],
)
def test_bad_entries(tmp_path, entry, location, message):
    error = error_for(tmp_path, {"s": entry})
    assert error.location == location
    assert message in error.message


def test_bad_files(tmp_path):
    assert error_for(tmp_path, '{"mcpServers": {\n  "a": }}').location == "line 2, column 8"
    duplicate = error_for(tmp_path, '{"mcpServers": {"a": {"command": "x"}, "a": {"url": "http://x"}}}')
    assert duplicate.location == "mcpServers.a" and "more than once" in duplicate.message
    misspelt = error_for(tmp_path, '{"mcpservers": {}}')
    assert "did you mean 'mcpServers'?" in misspelt.message
    with pytest.raises(ConfigError, match="file not found"):
        load_servers(tmp_path / "missing.json", {})


# -- secrets stay out of reprs ----------------------------------------------------------------------


def test_repr_never_shows_env_or_header_values(tmp_path):
    environ = {"KEY": SECRET}
    specs = load(
        tmp_path,
        {
            "jobs": {"command": "python", "args": ["--key", "${KEY}"], "env": {"API_KEY": "${KEY}"}},
            "remote": {
                "url": "https://user:${KEY}@mcp.example.com/mcp?api_key=${KEY}",
                "headers": {"Authorization": "Bearer ${KEY}"},
            },
        },
        environ,
    )
    for text in (repr(specs), str(specs), repr(specs["jobs"]), f"{specs['remote']}", repr(specs["remote"])):
        assert SECRET not in text
    assert "API_KEY" in repr(specs["jobs"])  # names are shown, values are not
    assert "Authorization" in repr(specs["remote"])
    assert "url='https://***@mcp.example.com/mcp?***'" in repr(specs["remote"])
    assert specs["remote"].url == f"https://user:{SECRET}@mcp.example.com/mcp?api_key={SECRET}"  # still used as is
