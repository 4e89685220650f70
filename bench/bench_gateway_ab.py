"""Two holdgate checkouts side by side, calls interleaved: a before/after of the per-call overhead on a busy machine.

`bench_gateway.py` measures one holdgate after the other, so on a machine shared with other work the load moves
between the two measurements (its figures swung by ±1 ms of CPU per call from run to run while this was written).
This one starts server-everything over Streamable HTTP and two `holdgate serve` in front of it, one running the
code of `--before` (a checkout or an exported tree: its directory goes first on the server's PYTHONPATH) and one
this checkout's, opens one session on each and on the upstream directly, and sends the calls in turns (direct,
before, after, direct, before, after, ...): both see the same machine at the same moments. Reported: p50 latency
of each (and added to direct), and each holdgate's CPU per call over the same window (/proc, user + system,
every thread: the audit writer's database thread too), as the median of `--rounds` rounds.

Usage: python bench/bench_gateway_ab.py --before DIR [--calls 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gateway import EVERYTHING, ROOT, cpu_seconds, free_port, session, start_holdgate, wait_http


async def main(args: argparse.Namespace) -> None:
    import subprocess

    before_root = str(Path(args.before).resolve())
    up_port = free_port()
    upstream = subprocess.Popen(
        ["node", str(EVERYTHING), "streamableHttp"],
        env={**os.environ, "PORT": str(up_port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    upstream_url = f"http://127.0.0.1:{up_port}/mcp"
    gateways: dict[str, tuple[subprocess.Popen, str, str]] = {}
    saved = os.environ.get("PYTHONPATH")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for name, root in (("before", before_root), ("after", str(ROOT))):
                os.environ["PYTHONPATH"] = root  # start_holdgate passes the environment on (db upgrade, grant, serve)
                port = free_port()
                process, token = start_holdgate(Path(scratch) / name, upstream_url, port, 4)
                gateways[name] = (process, token, f"http://127.0.0.1:{port}/mcp/everything")
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved
            await wait_http(f"http://127.0.0.1:{up_port}/")
            for _, _, url in gateways.values():
                await wait_http(url.rsplit("/mcp/", 1)[0] + "/healthz")
            async with AsyncExitStack() as stack:
                sessions = {"direct": await stack.enter_async_context(session(upstream_url, None))}
                for name, (_, token, url) in gateways.items():
                    sessions[name] = await stack.enter_async_context(session(url, token))
                for _ in range(50):  # warm-up
                    for s in sessions.values():
                        await s.call_tool("echo", {"message": "warm-up"})
                rounds: list[dict[str, float]] = []
                for _ in range(args.rounds):
                    latencies: dict[str, list[float]] = {name: [] for name in sessions}
                    cpu = {name: cpu_seconds(process.pid) for name, (process, _, _) in gateways.items()}
                    for i in range(args.calls):
                        for name, s in sessions.items():
                            started = time.perf_counter()
                            result = await s.call_tool("echo", {"message": f"call {i}"})
                            latencies[name].append((time.perf_counter() - started) * 1000)
                            assert not result.is_error, result
                    figures = {f"p50 {name}": statistics.median(values) for name, values in latencies.items()}
                    for name, (process, _, _) in gateways.items():
                        figures[f"cpu {name}"] = (cpu_seconds(process.pid) - cpu[name]) / args.calls * 1000
                    rounds.append(figures)
                    load = os.getloadavg()[0]
                    print(
                        f"  round: p50 direct {figures['p50 direct']:.2f}, before {figures['p50 before']:.2f}, after "
                        f"{figures['p50 after']:.2f} ms; CPU per call before {figures['cpu before']:.3f}, after "
                        f"{figures['cpu after']:.3f} ms; load {load:.2f}",
                        flush=True,
                    )
    finally:
        for process, _, _ in gateways.values():
            process.terminate()
        upstream.terminate()
        for process in (*(p for p, _, _ in gateways.values()), upstream):
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
    median = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    load = os.getloadavg()
    print(f"before: {before_root}; after: {ROOT}; {args.rounds} rounds of {args.calls} calls each, interleaved")
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores; medians of the rounds:")
    for name in ("before", "after"):
        p50, cpu = median[f"p50 {name}"], median[f"cpu {name}"]
        print(f"  {name:6}  p50 {p50:6.2f} ms (added {p50 - median['p50 direct']:+.2f})  CPU per call {cpu:.3f} ms")
    print(f"  direct  p50 {median['p50 direct']:6.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--before", required=True, help="a checkout (or exported tree) of the code to compare with")
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main(parser.parse_args()))
