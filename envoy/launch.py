#!/usr/bin/env python3
"""Render Sluice's Envoy bootstrap and run Envoy + the mock provider.

One module serves `make run`, the end-to-end tests and the benchmark, so all
three run exactly the same configuration. Everything binds to 127.0.0.1.

    python3 envoy/launch.py run [--config FILE] [--port 10000]
    python3 envoy/launch.py render --config FILE --out bootstrap.yaml
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENVOY_DIR = ROOT / "envoy"
WASM = ROOT / "target/wasm32-wasip1/wasm/sluice_filter.wasm"
MOCK = ROOT / "target/release/sluice-mock-provider"
RECORDINGS = (ROOT.parent / "shared/fixtures/provider-recordings").resolve()
DEMO_KEY = "sk-sluice-demo"
MOCK_PROVIDER_SECRET = "mock-provider-secret"

# Real providers offered by `make run` when their key is in the environment.
REAL_PROVIDERS = [
    # (env var, provider entry, cluster host, models)
    ("OPENAI_API_KEY",
     {"name": "openai", "kind": "openai", "cluster": "openai", "host": "api.openai.com",
      "base_path": "/v1", "auth": {"type": "bearer"}, "api_key_env": "OPENAI_API_KEY"},
     "api.openai.com", ["gpt-4o-mini", "gpt-4.1-mini", "gpt-4o"]),
    ("ANTHROPIC_API_KEY",
     {"name": "anthropic", "kind": "anthropic", "cluster": "anthropic", "host": "api.anthropic.com",
      "auth": {"type": "header", "name": "x-api-key"}, "api_key_env": "ANTHROPIC_API_KEY"},
     "api.anthropic.com", ["claude-sonnet-4-5", "claude-haiku-4-5"]),
    ("GEMINI_API_KEY",
     {"name": "gemini", "kind": "gemini", "cluster": "gemini",
      "host": "generativelanguage.googleapis.com",
      "auth": {"type": "header", "name": "x-goog-api-key"}, "api_key_env": "GEMINI_API_KEY"},
     "generativelanguage.googleapis.com", ["gemini-2.5-flash", "gemini-2.5-pro"]),
]
REAL_CLUSTERS = [
    ("openai", "api.openai.com"),
    ("anthropic", "api.anthropic.com"),
    ("gemini", "generativelanguage.googleapis.com"),
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_template(name: str) -> string.Template:
    return string.Template((ENVOY_DIR / name).read_text())


def demo_config(with_real: bool = True) -> dict:
    cfg = json.loads((ENVOY_DIR / "demo-config.json").read_text())
    if with_real:
        for env, provider, _host, models in REAL_PROVIDERS:
            if os.environ.get(env):
                cfg["providers"].append(provider)
                for m in models:
                    cfg["models"].append(
                        {"name": m, "targets": [{"provider": provider["name"], "model": m}]})
    return cfg


def render_bootstrap(*, config: dict, listen_port: int, admin_port: int, mock_port: int,
                     access_log: Path, wasm: Path = WASM, listen_address: str = "127.0.0.1",
                     real_clusters: bool = True) -> str:
    env_keys = sorted({p["api_key_env"] for p in config.get("providers", [])
                       if p.get("api_key_env")})
    clusters = ""
    if real_clusters:
        tmpl = load_template("real-providers.yaml.tmpl")
        clusters = "".join(tmpl.substitute(NAME=n, HOST=h) for n, h in REAL_CLUSTERS)
    return load_template("sluice.yaml.tmpl").substitute(
        ADMIN_PORT=admin_port,
        LISTEN_ADDRESS=listen_address,
        LISTEN_PORT=listen_port,
        MOCK_PORT=mock_port,
        ACCESS_LOG=json.dumps(str(access_log)),
        WASM_PATH=json.dumps(str(wasm)),
        HOST_ENV_KEYS=json.dumps(env_keys),
        # A JSON string is a valid YAML double-quoted scalar.
        PLUGIN_CONFIG=json.dumps(json.dumps(config)),
        REAL_PROVIDER_CLUSTERS=clusters,
    )


def render_plain(*, listen_port: int, admin_port: int, mock_port: int, access_log: Path) -> str:
    return load_template("plain.yaml.tmpl").substitute(
        ADMIN_PORT=admin_port, LISTEN_PORT=listen_port, MOCK_PORT=mock_port,
        ACCESS_LOG=json.dumps(str(access_log)))


def _wait_http(url: str, timeout: float, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready after {timeout}s ({url})")


class Mock:
    """The Rust mock provider on a free loopback port."""

    def __init__(self, workdir: Path, *, require_key: str | None = MOCK_PROVIDER_SECRET,
                 chunk_delay_ms: int = 0, workers: int = 1, log_requests: bool = True,
                 binary: Path = MOCK):
        port_file = workdir / f"mock-{os.getpid()}-{id(self)}.port"
        args = [str(binary), "--port", "0", "--port-file", str(port_file),
                "--chunk-delay-ms", str(chunk_delay_ms), "--workers", str(workers)]
        if require_key:
            args += ["--require-key", require_key]
        if RECORDINGS.is_dir():
            args += ["--recordings", str(RECORDINGS)]
        if not log_requests:
            args.append("--no-log")
        self.log = open(workdir / "mock.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 20
        while not port_file.exists() or not port_file.read_text():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mock provider did not start; see mock.log")
            time.sleep(0.02)
        self.port = int(port_file.read_text())
        self.url = f"http://127.0.0.1:{self.port}"
        _wait_http(self.url + "/__mock/health", 10, self.proc, "mock provider")

    def requests(self) -> list:
        with urllib.request.urlopen(self.url + "/__mock/requests", timeout=5) as r:
            return json.loads(r.read())

    def clear(self) -> None:
        req = urllib.request.Request(self.url + "/__mock/requests", method="DELETE")
        urllib.request.urlopen(req, timeout=5).read()

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


class Envoy:
    """An Envoy process for a rendered bootstrap, with its own --base-id."""

    def __init__(self, workdir: Path, bootstrap: str, *, admin_port: int, concurrency: int = 1,
                 env: dict | None = None, name: str = "envoy", log_level: str = "warning"):
        self.workdir = workdir
        self.admin_port = admin_port
        self.admin = f"http://127.0.0.1:{admin_port}"
        cfg = workdir / f"{name}.yaml"
        cfg.write_text(bootstrap)
        self.log_path = workdir / f"{name}.log"
        self.log = open(self.log_path, "ab")
        envoy = shutil.which("envoy") or "envoy"
        self.proc = subprocess.Popen(
            [envoy, "-c", str(cfg), "--concurrency", str(concurrency),
             "--base-id", str(admin_port), "--log-level", log_level,
             "--component-log-level", "wasm:info"],
            stdout=self.log, stderr=self.log, env={**os.environ, **(env or {})})
        _wait_http(self.admin + "/ready", 60, self.proc, f"envoy ({self.log_path})")

    def stats(self, filter_: str = "") -> dict:
        url = self.admin + "/stats?format=json" + (f"&filter={filter_}" if filter_ else "")
        with urllib.request.urlopen(url, timeout=5) as r:
            data = json.loads(r.read())
        return {s["name"]: s.get("value") for s in data.get("stats", []) if "name" in s}

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class Stack:
    """Mock provider + Envoy with Sluice, as `make run` and the tests use them."""

    def __init__(self, config: dict | None = None, *, workdir: Path | None = None,
                 listen_port: int | None = None, concurrency: int = 1,
                 chunk_delay_ms: int = 0, real_clusters: bool = False,
                 mock_log_requests: bool = True, listen_address: str = "127.0.0.1"):
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="sluice-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config if config is not None else demo_config(with_real=False)
        self.mock = Mock(self.workdir, chunk_delay_ms=chunk_delay_ms,
                         log_requests=mock_log_requests)
        try:
            self.port = listen_port or free_port()
            admin_port = free_port()
            self.access_log = self.workdir / "access.log"
            bootstrap = render_bootstrap(
                config=self.config, listen_port=self.port, admin_port=admin_port,
                mock_port=self.mock.port, access_log=self.access_log,
                real_clusters=real_clusters, listen_address=listen_address)
            self.envoy = Envoy(self.workdir, bootstrap, admin_port=admin_port,
                               concurrency=concurrency,
                               env={"SLUICE_MOCK_API_KEY": MOCK_PROVIDER_SECRET})
        except BaseException:
            self.mock.stop()
            raise
        self.url = f"http://127.0.0.1:{self.port}"

    def usage_records(self) -> list[dict]:
        """Usage records in the access log so far (file logs flush late)."""
        if not self.access_log.exists():
            return []
        out = []
        for line in self.access_log.read_text().splitlines():
            _, sep, usage = line.partition(" usage=")
            if sep and usage.strip() not in ("", "-"):
                out.append(json.loads(usage))
        return out

    def wait_usage(self, request_id: str, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.usage_records():
                if r.get("request_id") == request_id:
                    return r
            time.sleep(0.1)
        raise AssertionError(f"no usage record for {request_id} in {self.access_log}")

    def stop(self) -> None:
        try:
            self.envoy.stop()
        finally:
            self.mock.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _missing_build() -> list[str]:
    return [str(p) for p in (WASM, MOCK) if not p.exists()]


def cmd_run(args) -> int:
    missing = _missing_build()
    if missing:
        print(f"missing build outputs: {missing}; run 'make run'", file=sys.stderr)
        return 1
    cfg = json.loads(Path(args.config).read_text()) if args.config else demo_config()
    workdir = ROOT / ".run"
    workdir.mkdir(exist_ok=True)
    stack = Stack(cfg, workdir=workdir, listen_port=args.port, concurrency=args.concurrency,
                  real_clusters=True, chunk_delay_ms=args.chunk_delay_ms)
    models = ", ".join(m["name"] for m in cfg.get("models", []))
    print(f"""
Sluice is up: Envoy on {stack.url} (admin {stack.envoy.admin}), mock provider on {stack.mock.url}
models: {models}
access log (with usage records): {stack.access_log}

Try it:

  curl -s {stack.url}/v1/chat/completions \\
    -H 'Authorization: Bearer {DEMO_KEY}' -H 'Content-Type: application/json' \\
    -d '{{"model": "mock-gpt", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  # streaming:
  curl -sN {stack.url}/v1/chat/completions \\
    -H 'Authorization: Bearer {DEMO_KEY}' -H 'Content-Type: application/json' \\
    -d '{{"model": "mock-gpt", "stream": true, "messages": [{{"role": "user", "content": "Hi"}}]}}'

Ctrl-C stops Envoy and the mock provider.
""", flush=True)
    stop = {"now": False}

    def handler(*_):
        stop["now"] = True
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    try:
        while not stop["now"]:
            if stack.envoy.proc.poll() is not None:
                print(f"envoy exited; see {stack.envoy.log_path}", file=sys.stderr)
                return 1
            time.sleep(0.2)
    finally:
        stack.stop()
    return 0


def cmd_render(args) -> int:
    cfg = json.loads(Path(args.config).read_text()) if args.config else demo_config()
    out = render_bootstrap(config=cfg, listen_port=args.port, admin_port=args.admin_port,
                           mock_port=args.mock_port, access_log=Path(args.access_log),
                           wasm=Path(args.wasm))
    Path(args.out).write_text(out) if args.out else sys.stdout.write(out)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="start the mock provider and Envoy with Sluice")
    r.add_argument("--config", default=os.environ.get("SLUICE_CONFIG") or None)
    r.add_argument("--port", type=int, default=int(os.environ.get("SLUICE_PORT", "10000")))
    r.add_argument("--concurrency", type=int, default=2)
    r.add_argument("--chunk-delay-ms", type=int, default=30,
                   help="mock provider delay between stream chunks (visible streaming)")
    r.set_defaults(fn=cmd_run)
    d = sub.add_parser("render", help="print a bootstrap for a configuration")
    d.add_argument("--config")
    d.add_argument("--out")
    d.add_argument("--port", type=int, default=10000)
    d.add_argument("--admin-port", type=int, default=9901)
    d.add_argument("--mock-port", type=int, default=8081)
    d.add_argument("--access-log", default="/dev/stdout")
    d.add_argument("--wasm", default=str(WASM))
    d.set_defaults(fn=cmd_render)
    args = p.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
