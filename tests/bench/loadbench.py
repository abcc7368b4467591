#!/usr/bin/env python3
"""`make bench`: what Sluice costs against plain Envoy, measured in one run.

Starts the release mock provider (no added delay), a plain Envoy routing to
it (the ceiling) and an Envoy with Sluice, each with --concurrency 1, and
drives the same request through both with wrk. Loopback only; bounded time
(about DURATION x cases + startup).

    python3 tests/bench/loadbench.py [--duration 8] [--connections 16]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "envoy"))
import launch  # noqa: E402

KEY = "sk-bench"


def bench_config() -> dict:
    prov = {"cluster": "mock_provider", "host": "mock.local", "auth": {"type": "none"}}
    return {
        "version": "bench",
        "keys": [{"id": "bench", "sha256": hashlib.sha256(KEY.encode()).hexdigest()}],
        "providers": [{"name": "mock", "kind": "openai", **prov},
                      {"name": "mock-anthropic", "kind": "anthropic", **prov}],
        "models": [{"name": "bench-gpt", "targets": [{"provider": "mock", "model": "up"}]},
                   {"name": "bench-claude",
                    "targets": [{"provider": "mock-anthropic", "model": "up"}]}],
    }


TEXT = ("Summarise the following paragraph about gateways and meshes. " * 32)[:1900]


def request_body(stream: bool, model: str = "bench-gpt", dialect: str = "openai") -> str:
    # ~2 KB chat request, the size the targets are stated for.
    body = {"model": model, "messages": [{"role": "user", "content": TEXT}],
            "temperature": 0.2}
    if dialect == "anthropic":
        body["max_tokens"] = 256
    if stream:
        body["stream"] = True
    return json.dumps(body)


LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.headers["x-mock-chunks"] = "{chunks}"
"""

TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TCK


def run_wrk(url: str, path: str, body: str, chunks: int, duration: int, connections: int,
            workdir: Path, pid: int | None = None) -> dict:
    script = workdir / f"req-{abs(hash((body, chunks)))}.lua"
    script.write_text(LUA.format(body=json.dumps(body), key=KEY, chunks=chunks))
    c0 = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "5s",
         "-s", str(script), url + path],
        capture_output=True, text=True, timeout=duration + 30).stdout
    cpu = cpu_seconds(pid) - c0 if pid else 0.0
    total = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    lat = {}
    for pct, val, unit in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M):
        lat[pct] = float(val) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = int(non2xx.group(1)) if non2xx else 0
    return {"rps": rps, "p50": lat.get("50"), "p99": lat.get("99"), "errors": errors,
            "cpu_us": 1e6 * cpu / max(total, 1)}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--stream-events", type=int, default=50)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    # No key check: plain Envoy forwards the request as the client sent it.
    mock = launch.Mock(work, require_key=None, log_requests=False, workers=1)
    envs = []
    try:
        plain_port, plain_admin = launch.free_port(), launch.free_port()
        plain = launch.Envoy(work, launch.render_plain(
            listen_port=plain_port, admin_port=plain_admin, mock_port=mock.port,
            access_log=work / "plain-access.log"), admin_port=plain_admin, name="plain")
        envs.append(plain)
        s_port, s_admin = launch.free_port(), launch.free_port()
        sluice = launch.Envoy(work, launch.render_bootstrap(
            config=bench_config(), listen_port=s_port, admin_port=s_admin, mock_port=mock.port,
            access_log=work / "sluice-access.log", real_clusters=False),
            admin_port=s_admin, name="sluice",
            env={"SLUICE_MOCK_API_KEY": launch.MOCK_PROVIDER_SECRET})
        envs.append(sluice)
        plain_url = f"http://127.0.0.1:{plain_port}"
        s_url = f"http://127.0.0.1:{s_port}"
        chat, msgs = "/v1/chat/completions", "/v1/messages"
        rows = []
        for stream, chunks in ((False, 8), (True, args.stream_events)):
            case = f"stream ({chunks} events)" if stream else "non-stream"
            # (gateway, url, pid, path, body): plain Envoy first, the ceiling.
            runs = [
                ("plain Envoy", plain_url, plain.proc.pid, chat, request_body(stream)),
                ("Sluice passthrough openai→openai", s_url, sluice.proc.pid, chat,
                 request_body(stream)),
                ("Sluice openai→anthropic", s_url, sluice.proc.pid, chat,
                 request_body(stream, "bench-claude")),
                ("Sluice anthropic→openai", s_url, sluice.proc.pid, msgs,
                 request_body(stream, "bench-gpt", "anthropic")),
            ]
            base = None
            for name, url, pid, path, body in runs:
                run_wrk(url, path, body, chunks, 2, args.connections, work)  # warm-up
                r = run_wrk(url, path, body, chunks, args.duration, args.connections, work, pid)
                if base is None:
                    base = r
                rows.append((case, name, r, base))
        rss = {"plain Envoy": rss_mb(plain.proc.pid), "Sluice": rss_mb(sluice.proc.pid)}
        wasm_kb = launch.WASM.stat().st_size / 1024
        print()
        print(f"wrk -t1 -c{args.connections} -d{args.duration}s, Envoy --concurrency 1, "
              f"~2 KB request, mock provider with no delay; {os.cpu_count()} cores; "
              f"filter {wasm_kb:.0f} KB")
        print()
        print("| case | gateway | req/s | vs plain | p50 ms | p99 ms | added p50 ms | "
              "added p99 ms | Envoy CPU µs/req | non-2xx |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for case, name, r, base in rows:
            print(f"| {case} | {name} | {r['rps']:.0f} | {100 * r['rps'] / base['rps']:.0f}% | "
                  f"{r['p50']:.2f} | {r['p99']:.2f} | {r['p50'] - base['p50']:+.2f} | "
                  f"{r['p99'] - base['p99']:+.2f} | {r['cpu_us']:.0f} | {r['errors']} |")
        print()
        for name, mb in rss.items():
            print(f"Envoy RSS after the run ({name}): {mb:.1f} MB")
        bad = [r for _, _, r, _ in rows if r["errors"]]
        return 1 if bad else 0
    finally:
        for e in envs:
            e.stop()
        mock.stop()


if __name__ == "__main__":
    sys.exit(main())
