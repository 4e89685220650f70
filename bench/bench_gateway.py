"""Direct vs through-holdgate: latency and throughput of one tool call over Streamable HTTP.

Starts server-everything (`node … streamableHttp`) as the upstream and `holdgate serve` in front of
it (policy on, audit on, a rate-limit-free allow rule with argument redaction), then drives both
with the same mcp SDK client: sequential calls for p50/p99, then 16 concurrent sessions for
throughput. Usage: python bench/bench_gateway.py [--calls 500] [--seconds 8] [--sessions 16] [--tracing] [--shadow]

`--tracing` adds a second holdgate with OpenTelemetry tracing on (OTLP over HTTP to a sink in this process
that accepts and drops the spans), measured the same way: the cost of tracing on, beside the first holdgate's
figures with tracing off (the default: no OTEL_* variables).

`--shadow` adds a shadow policy (`policy.shadow.json`, service.policy.shadow) of the same size beside the
enforced one, whose `echo` rule has a CEL case on the arguments and a sliding-window limit counted in memory,
and that disagrees with the enforced policy on every call (so each call also counts a disagreement and
carries it into its audit record): run the bench with and without it for the shadow's cost per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parents[1]
EVERYTHING = ROOT / "tests/peers/node_modules/@modelcontextprotocol/server-everything/dist/index.js"
HOLDGATE = Path(sys.executable).parent / "holdgate"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx2.AsyncClient() as http:
        while time.monotonic() < deadline:
            try:
                await http.get(url)
                return
            except httpx2.HTTPError:
                await asyncio.sleep(0.2)
    raise TimeoutError(url)


@asynccontextmanager
async def session(url: str, token: str | None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as s,
    ):
        await s.initialize()
        yield s


async def sequential(url: str, token: str | None, calls: int) -> list[float]:
    async with session(url, token) as s:
        for _ in range(50):
            await s.call_tool("echo", {"message": "warm-up"})
        latencies = []
        for i in range(calls):
            started = time.perf_counter()
            result = await s.call_tool("echo", {"message": f"call {i}"})
            latencies.append((time.perf_counter() - started) * 1000)
            assert not result.is_error, result
        return latencies


async def throughput(url: str, token: str | None, sessions: int, seconds: float) -> float:
    done = 0
    stop = asyncio.Event()

    async def worker(ready: asyncio.Barrier) -> None:
        nonlocal done
        try:
            async with session(url, token) as s:
                await s.call_tool("echo", {"message": "warm-up"})
                await ready.wait()
                while not stop.is_set():
                    await s.call_tool("echo", {"message": "load"})
                    done += 1
        except BaseException:
            await ready.abort()  # a session that fails (refused, cut) stops the bench instead of hanging it
            raise

    ready = asyncio.Barrier(sessions + 1)
    tasks = [asyncio.create_task(worker(ready)) for _ in range(sessions)]
    await ready.wait()
    start_count, started = done, time.perf_counter()
    await asyncio.sleep(seconds)
    rate = (done - start_count) / (time.perf_counter() - started)
    stop.set()
    await asyncio.gather(*tasks)
    return rate


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1]


SHADOW_POLICY = {
    "version": "1",
    "default": "deny",
    "tools": {
        "echo": {
            "action": "require_approval",
            "redact": ["message"],
            "cases": [{"when": "args.message.startsWith('prod-')", "action": "deny"}],
            "rate_limit": {"max": 100_000, "window": "minute"},
        },
        "get-env": {"action": "deny"},
    },
}


def shadow_cost_us(tmp: Path, calls: int = 20_000) -> float:
    """CPU microseconds per call that the shadow adds on the call's path, measured in this process: its verdict
    (CEL case, in-memory limit), the comparison with the enforced action (metrics) and the record's copy."""
    from dataclasses import replace

    from service.audit.service import AuditRecord
    from service.policy.shadow import ShadowPolicy, disagreement

    path = tmp / "shadow-cost.json"
    path.write_text(json.dumps(SHADOW_POLICY))
    shadow = ShadowPolicy(path)
    record = AuditRecord(ts=0.0, grant="bench", server="everything", tool="echo", arguments={}, redact=(), rule="echo")
    started = time.process_time()
    for i in range(calls):
        arguments = {"message": f"call {i}"}
        differs = disagreement(shadow.decide("bench", "everything", "echo", arguments, now=1e9 + i), "allow")
        if differs is not None:
            record = replace(record, shadow_verdict=differs.action, shadow_rule=differs.rule)
    return (time.process_time() - started) / calls * 1e6


def start_holdgate(
    tmp: Path, upstream_url: str, port: int, sessions: int, shadow: bool = False, **extra_env: str
) -> tuple[subprocess.Popen, str]:
    config = tmp / "config"
    config.mkdir(parents=True)
    policy = {
        "version": "1",
        "default": "deny",
        "tools": {"echo": {"action": "allow", "redact": ["message"]}, "get-env": {"action": "deny"}},
    }
    (config / "policy.json").write_text(json.dumps(policy))
    if shadow:
        (config / "policy.shadow.json").write_text(json.dumps(SHADOW_POLICY))
    (config / "servers.json").write_text(json.dumps({"mcpServers": {"everything": {"url": upstream_url}}}))
    env = {
        **os.environ,
        "HOLDGATE_CONFIG_DIR": str(config),
        "HOLDGATE_DATA_DIR": str(tmp / "data"),
        # The throughput stage opens --sessions sessions of one grant; the default cap is 10 per grant.
        "HOLDGATE_MAX_SESSIONS_PER_GRANT": str(sessions),
        "HOLDGATE_MAX_SESSIONS": str(max(sessions, 40)),
        **extra_env,
    }
    subprocess.run(
        [str(HOLDGATE), "db", "upgrade"], env=env, capture_output=True, check=True
    )  # the CLI refuses a missing database
    token = (
        subprocess.run([str(HOLDGATE), "grant", "create", "bench"], env=env, capture_output=True, text=True, check=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    proc = subprocess.Popen(
        [str(HOLDGATE), "serve", "--port", str(port), "--log-level", "warning"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    return proc, token


@asynccontextmanager
async def span_sink():
    """An OTLP/HTTP endpoint that accepts every export and drops it; yields its base URL."""
    from aiohttp import web

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200, content_type="application/x-protobuf", body=b"")

    app = web.Application()
    app.router.add_post("/v1/traces", accept)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def measure(gateway: subprocess.Popen, url: str, token: str, args: argparse.Namespace) -> dict[str, float]:
    """Sequential latency, CPU per call and throughput of one holdgate."""
    await wait_http(url.rsplit("/mcp/", 1)[0] + "/healthz")
    cpu = cpu_seconds(gateway.pid)
    latencies = await sequential(url, token, args.calls)
    cpu = cpu_seconds(gateway.pid) - cpu
    rate = await throughput(url, token, args.sessions, args.seconds)
    cpu_ms = 1000 * cpu / (args.calls + 50)  # with the warm-up
    return {"p50": pct(latencies, 50), "p99": pct(latencies, 99), "cpu_ms": cpu_ms, "rate": rate}


async def main(args: argparse.Namespace) -> None:
    up_port, gw_port, traced_port = free_port(), free_port(), free_port()
    upstream = subprocess.Popen(
        ["node", str(EVERYTHING), "streamableHttp"],
        env={**os.environ, "PORT": str(up_port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gateways: list[subprocess.Popen] = []
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        upstream_url = f"http://127.0.0.1:{up_port}/mcp"
        gateway, token = start_holdgate(Path(scratch) / "off", upstream_url, gw_port, args.sessions + 2, args.shadow)
        gateways.append(gateway)
        try:
            await wait_http(f"http://127.0.0.1:{up_port}/")
            await wait_http(f"http://127.0.0.1:{gw_port}/healthz")
            gateway_url = f"http://127.0.0.1:{gw_port}/mcp/everything"
            client_cpu = time.process_time()
            direct = await sequential(upstream_url, None, args.calls)
            client_cpu = time.process_time() - client_cpu
            direct_rate = await throughput(upstream_url, None, args.sessions, args.seconds)
            results["holdgate"] = await measure(gateway, gateway_url, token, args)
            if args.tracing:
                gateway.terminate()  # one holdgate at a time: the two would share the machine's cores
                gateway.wait(10)
                async with span_sink() as sink:
                    traced, traced_token = start_holdgate(
                        Path(scratch) / "on",
                        upstream_url,
                        traced_port,
                        args.sessions + 2,
                        args.shadow,
                        OTEL_EXPORTER_OTLP_ENDPOINT=sink,
                        OTEL_TRACES_EXPORTER="otlp",
                    )
                    gateways.append(traced)
                    traced_url = f"http://127.0.0.1:{traced_port}/mcp/everything"
                    results["traced"] = await measure(traced, traced_url, traced_token, args)
        finally:
            for process in (*gateways, upstream):
                process.terminate()
                process.wait(10)
    d50, d99 = pct(direct, 50), pct(direct, 99)
    g = results["holdgate"]
    load = os.getloadavg()
    shadowed = "with a shadow policy (disagreeing on every call)" if args.shadow else "no shadow policy"
    print(f"{shadowed}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    if args.shadow:
        with tempfile.TemporaryDirectory() as scratch:
            print(f"  the shadow's own work per call, in-process: {shadow_cost_us(Path(scratch)):.1f} us CPU")
    print(f"sequential echo, {args.calls} calls, one session (ms):")
    print(f"  direct    p50 {d50:7.2f}  p99 {d99:7.2f}")
    print(f"  holdgate  p50 {g['p50']:7.2f}  p99 {g['p99']:7.2f}")
    print(f"  added     p50 {g['p50'] - d50:+7.2f}  p99 {g['p99'] - d99:+7.2f}   (target p50 <= +1.5 ms)")
    calls = args.calls + 50  # with the warm-up
    print(
        f"  CPU per call: holdgate {g['cpu_ms']:.2f} ms; the bench's client on a direct call "
        f"{1000 * client_cpu / calls:.2f} ms (a yardstick for this machine's speed)"
    )
    print(f"throughput, {args.sessions} concurrent sessions, {args.seconds:g}s each:")
    print(f"  direct    {direct_rate:8.0f} calls/s")
    print(f"  holdgate  {g['rate']:8.0f} calls/s  = {100 * g['rate'] / direct_rate:.0f}% of direct   (target >= 50%)")
    if "traced" in results:
        t = results["traced"]
        print("tracing on (OTLP/HTTP to a local sink) vs off (the default):")
        print(f"  p50        off {g['p50']:7.2f} ms   on {t['p50']:7.2f} ms   ({t['p50'] - g['p50']:+.2f})")
        print(f"  CPU/call   off {g['cpu_ms']:7.2f} ms   on {t['cpu_ms']:7.2f} ms   ({t['cpu_ms'] - g['cpu_ms']:+.2f})")
        print(f"  calls/s    off {g['rate']:7.0f}      on {t['rate']:7.0f}      ({100 * t['rate'] / g['rate']:.0f}%)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--sessions", type=int, default=16)
    parser.add_argument("--tracing", action="store_true", help="also measure a holdgate with tracing on")
    parser.add_argument("--shadow", action="store_true", help="run a shadow policy beside the enforced one")
    asyncio.run(main(parser.parse_args()))
