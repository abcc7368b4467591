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
import secrets
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
SLUICE = ROOT / "target/release/sluice"
# The shared fixtures (read-only, beside the project root); SLUICE_FIXTURES
# overrides, as for the Rust tests (tests/fixtures).
FIXTURES = Path(os.environ.get("SLUICE_FIXTURES", ROOT.parent / "shared/fixtures")).resolve()
RECORDINGS = FIXTURES / "provider-recordings"
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


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


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


# Labels of the filter's metrics (filter/core/src/metrics.rs `LABELS`).
METRIC_LABELS = ["provider", "model", "status_class", "token_type", "client_dialect", "rule",
                 "action", "reason", "key", "outcome"]


def stats_tags() -> list[dict]:
    return [{"tag_name": l, "regex": f"(;{l}=([^;]+))"} for l in METRIC_LABELS]


ALL_ENV_KEYS = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "SLUICE_MOCK_API_KEY"]
CONTROL_PLANE_CLUSTER = "sluice_control_plane"


def env_keys_of(config: dict) -> list[str]:
    return sorted({p["api_key_env"] for p in config.get("providers", []) if p.get("api_key_env")})


def static_filter(config: dict, wasm: Path) -> dict:
    """The wasm filter with its configuration inline."""
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "sluice", "root_id": "sluice",
                "vm_config": {
                    "vm_id": "sluice", "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm)}},
                    "environment_variables": {"host_env_keys": env_keys_of(config)},
                },
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": json.dumps(config)},
                # A crashed VM is reloaded instead of failing every request.
                "failure_policy": "FAIL_RELOAD",
                # Hold headers while the body is read (routing on `model`).
                "allow_on_headers_stop_iteration": True,
            },
        },
    }


def control_plane_grpc(token: str | None, cluster: str = CONTROL_PLANE_CLUSTER) -> dict:
    """The control plane as a gRPC service, with the token every call must
    carry (`sluice serve --grpc-token`)."""
    svc = {"envoy_grpc": {"cluster_name": cluster}}
    if token:
        svc["initial_metadata"] = [{"key": "authorization", "value": f"Bearer {token}"}]
    return svc


def _key_action(state: str = "sluice_key") -> dict:
    """The descriptor entry `sluice_key=<key id>`, from the filter state the
    Sluice filter sets: `sluice_key` before the request leaves (keys with
    rpm/tpm limits or a budget), `sluice_settle` when the response ends (only
    if the service admitted it). Absent, the whole entry is dropped (the
    expression fails and `skip_if_error` is off), so other requests make no
    call to the rate limit service and a refused one settles nothing."""
    return {"extension": {
        "name": "envoy.rate_limit_descriptors.expr",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.rate_limit_descriptors.expr.v3.Descriptor",
            "descriptor_key": "sluice_key",
            "text": f"filter_state['wasm.{state}']",
            "skip_if_error": False}}}


def ratelimit_filter(token: str | None, timeout_ms: int = 50, fail_open: bool = True) -> dict:
    """Envoy's global rate limiting, counted by the control plane's rate
    limit service on Redis (control-plane/src/ratelimit.rs; docs/fleet.md):
    a request takes one from the key's rpm, checks its tpm and reserves its
    cost estimate from the key's budget; when the stream is done, the tokens
    billed are charged to the tpm and the cost billed replaces the
    reservation in the budget. The service
    slow or down → the request goes on (`failure_mode_deny: false`) under
    each Envoy's own limits, counted in `ratelimit.failure_mode_allowed`."""
    def kind(value: str) -> dict:
        return {"generic_key": {"descriptor_key": "sluice_limit", "descriptor_value": value}}
    path = {"request_headers": {"header_name": ":path", "descriptor_key": "sluice_path",
                                "skip_if_absent": True}}
    return {
        "name": "envoy.filters.http.ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit",
            "domain": "sluice",
            "timeout": f"{timeout_ms / 1000:.3f}s",
            "failure_mode_deny": not fail_open,
            "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
            "rate_limit_service": {"grpc_service": control_plane_grpc(token),
                                   "transport_api_version": "V3"},
            "rate_limits": [
                {"actions": [_key_action(), kind("requests"), path],
                 "hits_addend": {"number": 1}},
                {"actions": [_key_action(), kind("tokens"), path],
                 "hits_addend": {"number": 0}},
                {"actions": [_key_action(), kind("budget"), path],
                 "hits_addend": {"format": "%FILTER_STATE(wasm.sluice_budget_hold:PLAIN)%"}},
                {"actions": [_key_action("sluice_settle"), kind("tokens")],
                 "apply_on_stream_done": True,
                 "hits_addend": {"format": "%FILTER_STATE(wasm.sluice_tokens:PLAIN)%"}},
                {"actions": [_key_action("sluice_settle"), kind("budget_spent")],
                 "apply_on_stream_done": True,
                 "hits_addend": {"format": "%FILTER_STATE(wasm.sluice_budget_spent:PLAIN)%"}},
                {"actions": [_key_action("sluice_settle"), kind("budget")],
                 "apply_on_stream_done": True,
                 "hits_addend": {"format": "%FILTER_STATE(wasm.sluice_budget_hold:PLAIN)%",
                                 "is_negative_hits": True}},
            ],
        },
    }


def credential_injector(secret: str, header: str, prefix: str, token: str | None) -> dict:
    """Upstream filter adding a provider key from the control plane's SDS
    secret: Envoy redacts it in /config_dump, and it never enters the VM."""
    return {
        "name": "envoy.filters.http.credential_injector",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
            "overwrite": True,
            "credential": {
                "name": "envoy.http.injected_credentials.generic",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                    "credential": {"name": secret, "sds_config": {
                        "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                                              "grpc_services": [control_plane_grpc(token)]},
                        "resource_api_version": "V3"}},
                    "header": header,
                    **({"header_value_prefix": prefix} if prefix else {}),
                },
            },
        },
    }


def with_upstream_filters(cluster: dict, filters: list[dict]) -> dict:
    """`cluster` with upstream HTTP filters (run once per upstream attempt)."""
    opts = cluster.setdefault("typed_extension_protocol_options", {}).setdefault(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http_protocol_options": {}}})
    opts["http_filters"] = filters + [{
        "name": "envoy.filters.http.upstream_codec",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec"}}]
    return cluster


def ecds_filter(api_type: str = "GRPC", token: str | None = None) -> dict:
    """The wasm filter from the control plane (ECDS). Listeners wait for the
    first config; afterwards Envoy keeps the last good one if the control
    plane goes away."""
    return {
        "name": "sluice",
        "config_discovery": {
            "config_source": {
                "api_config_source": {
                    "api_type": api_type, "transport_api_version": "V3",
                    "grpc_services": [control_plane_grpc(token)],
                },
                "initial_fetch_timeout": "0s",
                "resource_api_version": "V3",
            },
            "type_urls": ["type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"],
        },
    }


def cds_config(token: str | None = None) -> dict:
    """Clusters from the control plane (providers by URL, resilient models)."""
    return {"cds_config": {
        "api_config_source": {"api_type": "GRPC", "transport_api_version": "V3",
                              "grpc_services": [control_plane_grpc(token)]},
        "resource_api_version": "V3"}}


def grpc_access_log(token: str | None = None, cluster: str = CONTROL_PLANE_CLUSTER) -> dict:
    """Usage records to the control plane's AccessLogService. With replicas,
    one such logger per replica (each its own cluster): every record reaches
    each, the ledger keeps it once (keyed by the gateway's id), and a
    replica dying loses nothing the other received (docs/fleet.md)."""
    return {
        "name": "envoy.access_loggers.http_grpc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": "sluice" if cluster == CONTROL_PLANE_CLUSTER else cluster,
                "transport_api_version": "V3",
                "grpc_service": control_plane_grpc(token, cluster),
                # Usage records, and capture records of sampled requests
                # (replay baselines; only set when capture is configured).
                "filter_state_objects_to_log": ["wasm.sluice_usage", "wasm.sluice_capture"],
                # Small batches: budgets are enforced from these records.
                "buffer_flush_interval": "0.05s",
            },
        },
    }


def control_plane_cluster(port: int | list[int], name: str = CONTROL_PLANE_CLUSTER) -> dict:
    """The control plane's gRPC (xDS, SDS, rate limits, access logs). Several
    ports: replicas on one store, any of which serves the same versions; a
    TCP health check takes a dead one out within a second, so streams
    reconnect to the other."""
    ports = [port] if isinstance(port, int) else list(port)
    c = {
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }},
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                         "port_value": p}}}}
            for p in ports]}]},
    }
    if len(ports) > 1:
        c["health_checks"] = [{"timeout": "0.5s", "interval": "1s", "unhealthy_threshold": 1,
                               "healthy_threshold": 1, "tcp_health_check": {}}]
    return c


def replica_clusters(ports: list[int]) -> list[dict]:
    """One cluster per control-plane replica, for its access logger."""
    return [control_plane_cluster(p, f"{CONTROL_PLANE_CLUSTER}_{i}") for i, p in enumerate(ports)]


def grpc_access_logs(token: str | None, ports: list[int]) -> list[dict]:
    """The usage loggers: one to the control plane, or one per replica."""
    if len(ports) == 1:
        return [grpc_access_log(token)]
    return [grpc_access_log(token, c["name"]) for c in replica_clusters(ports)]


def control_plane_http_cluster(port: int) -> dict:
    """HTTP/1.1 to the control plane's admin address, where it serves the
    module for Envoys that fetch it (`sluice serve --wasm-url`)."""
    c = control_plane_cluster(port)
    c["name"] = c["load_assignment"]["cluster_name"] = "sluice_control_plane_http"
    del c["typed_extension_protocol_options"]
    return c


def render_bootstrap(*, config: dict | None, listen_port: int, admin_port: int, mock_port: int,
                     access_log: Path, wasm: Path = WASM, listen_address: str = "127.0.0.1",
                     real_clusters: bool = True,
                     control_plane_port: int | list[int] | None = None,
                     xds_api_type: str = "GRPC", node_id: str = "sluice-envoy",
                     control_plane_admin_port: int | None = None,
                     control_plane_token: str | None = None,
                     injected_mock_secret: str | None = None,
                     global_limits: bool = False, ratelimit_timeout_ms: int = 50,
                     usage_sinks: list[int] | None = None) -> str:
    """Static mode (config inline) or, with `control_plane_port`, managed mode
    (config over ECDS, usage over gRPC access logs, each call carrying
    `control_plane_token`). `usage_sinks` (static mode): access-log usage
    records to these control planes' ports too (what one logger per replica
    costs, tests/bench/instructions.py). `injected_mock_secret`: the mock provider's key
    is the control plane's SDS secret of that name, added by Envoy's
    credential_injector upstream. `global_limits` (managed mode): Envoy's
    ratelimit filter after Sluice, counting against the control plane's rate
    limit service (`sluice serve --redis`). Inserted blocks are JSON, which
    is valid YAML flow style."""
    clusters = ""
    if real_clusters:
        tmpl = load_template("real-providers.yaml.tmpl")
        clusters = "".join(tmpl.substitute(NAME=n, HOST=h) for n, h in REAL_CLUSTERS)
    managed = control_plane_port is not None
    cp_ports = ([control_plane_port] if isinstance(control_plane_port, int)
                else list(control_plane_port or []))
    sink_ports = list(usage_sinks or []) if not managed else []
    sink_clusters = replica_clusters(sink_ports)
    mock_cluster = _cluster("mock_provider", mock_port)
    if injected_mock_secret:
        with_upstream_filters(mock_cluster, [credential_injector(
            injected_mock_secret, "authorization", "Bearer ", control_plane_token)])
    return load_template("sluice.yaml.tmpl").substitute(
        NODE_ID=json.dumps(node_id),
        STATS_TAGS=json.dumps(stats_tags()),
        ADMIN_PORT=admin_port,
        LISTEN_ADDRESS=listen_address,
        LISTEN_PORT=listen_port,
        MOCK_CLUSTER=json.dumps(mock_cluster),
        ACCESS_LOG=json.dumps(str(access_log)),
        SLUICE_FILTER=json.dumps(ecds_filter(xds_api_type, control_plane_token) if managed
                                 else static_filter(config or {}, wasm))
        + ("\n          - " + json.dumps(ratelimit_filter(control_plane_token,
                                                          ratelimit_timeout_ms))
           if managed and global_limits else ""),
        GRPC_ACCESS_LOG="".join("          - " + json.dumps(log) + "\n"
                                for log in grpc_access_logs(control_plane_token, cp_ports))
        if managed else "".join("          - " + json.dumps(grpc_access_log(
            control_plane_token, c["name"])) + "\n" for c in sink_clusters),
        REAL_PROVIDER_CLUSTERS=clusters,
        # Managed: clusters of providers by URL and of resilient models
        # come from the control plane (CDS).
        DYNAMIC_RESOURCES=("dynamic_resources: " + json.dumps(cds_config(control_plane_token))
                           + "\n") if managed else "",
        CONTROL_PLANE_CLUSTER=("  - " + json.dumps(control_plane_cluster(cp_ports))
                               + ("\n  - " + json.dumps(control_plane_http_cluster(
                                   control_plane_admin_port)) if control_plane_admin_port else "")
                               + "".join("\n  - " + json.dumps(c) for c in replica_clusters(
                                   cp_ports if len(cp_ports) > 1 else [])))
        if managed else "".join("  - " + json.dumps(c) + "\n" for c in sink_clusters),
    )


def _listener(name: str, port: int, http_filters: list, route: dict, *, access_log: list,
              preserve_request_id: bool = False) -> dict:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "access_log": access_log,
        "route_config": {"name": name, "virtual_hosts": [
            {"name": name, "domains": ["*"], "routes": [{"match": {"prefix": "/"}, **route}]}]},
        "http_filters": http_filters + [{
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    if preserve_request_id:
        # Both sides of a shadow pair log the front listener's request id.
        hcm["preserve_external_request_id"] = True
    return {"name": name,
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
            "per_connection_buffer_limit_bytes": 33554432,
            "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                            "typed_config": hcm}]}]}


def _cluster(name: str, port: int, *, http2: bool = False) -> dict:
    c = {"name": name, "type": "STATIC", "connect_timeout": "2s",
         "per_connection_buffer_limit_bytes": 33554432,
         "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
             {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1",
                                                          "port_value": port}}}}]}]}}
    if http2:
        c["typed_extension_protocol_options"] = control_plane_cluster(port)[
            "typed_extension_protocol_options"]
    return c


def render_shadow_bootstrap(*, primary_config: dict | None, shadow_config: dict, listen_port: int,
                            admin_port: int, mock_port: int, access_log: Path, shadow_wasm: Path,
                            wasm: Path = WASM, percent: int = 100,
                            control_plane_port: int | None = None,
                            node_id: str = "sluice-envoy",
                            control_plane_token: str | None = None) -> str:
    """Online shadow (docs/replay.md): a front listener routes every request
    to the primary Sluice listener and mirrors `percent` % of them to a
    shadow listener running another filter build (its own VM). Envoy drops
    the mirrored answers; both filters report digests with their usage
    records and the control plane pairs them. Mirroring happens in front of
    the filters so the shadow sees the client's request, not the primary's
    translation of it."""
    primary_port, shadow_port = free_port(), free_port()
    managed = control_plane_port is not None
    file_log = [{"name": "envoy.access_loggers.file", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
        "path": str(access_log), "log_format": {"text_format_source": {"inline_string":
            "%REQ(X-REQUEST-ID)% %RESPONSE_CODE% usage=%FILTER_STATE(wasm.sluice_usage:PLAIN)%\n"}}}}]
    logs = file_log + ([grpc_access_log(control_plane_token)] if managed else [])
    primary = (ecds_filter(token=control_plane_token) if managed
               else static_filter(primary_config or {}, wasm))
    shadow = static_filter(shadow_config, shadow_wasm)
    # A VM of its own: another build must not share the primary's VM.
    shadow["typed_config"]["config"]["vm_config"]["vm_id"] = "sluice-shadow"
    shadow["typed_config"]["config"]["name"] = "sluice-shadow"
    sluice_route = {"route": {"cluster_header": "x-sluice-cluster", "timeout": "600s"},
                    "request_headers_to_remove": ["x-sluice-cluster"]}
    front_route = {"route": {
        "cluster": "sluice_primary", "timeout": "600s",
        "request_mirror_policies": [{
            "cluster": "sluice_shadow",
            "runtime_fraction": {"default_value": {"numerator": percent, "denominator": "HUNDRED"},
                                 "runtime_key": "sluice.shadow_percent"}}]}}
    clusters = [_cluster("sluice_primary", primary_port), _cluster("sluice_shadow", shadow_port),
                _cluster("mock_provider", mock_port)]
    if managed:
        clusters.append(control_plane_cluster(control_plane_port))
    boot = {
        "node": {"id": node_id, "cluster": "sluice-gateway"},
        "stats_config": {"stats_tags": stats_tags()},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin_port}}},
        "static_resources": {
            "listeners": [
                _listener("front", listen_port, [], front_route, access_log=[]),
                _listener("sluice", primary_port, [primary], sluice_route, access_log=logs,
                          preserve_request_id=True),
                _listener("sluice_shadow", shadow_port, [shadow], sluice_route, access_log=logs,
                          preserve_request_id=True),
            ],
            "clusters": clusters,
        },
    }
    return json.dumps(boot, indent=1)


def render_plain(*, listen_port: int, admin_port: int, mock_port: int, access_log: Path,
                 wasm: Path | None = None, config: dict | None = None,
                 log_usage: bool = False) -> str:
    """Plain Envoy; with `wasm`, that module loaded like Sluice with `config`
    (the bench's no-op filter baseline and its probes). `log_usage`: the
    access log formats the usage filter state as Sluice's bootstrap does."""
    extra = ""
    if wasm is not None:
        extra = "          - " + json.dumps(static_filter(config or {}, wasm)) + "\n"
    return load_template("plain.yaml.tmpl").substitute(
        ADMIN_PORT=admin_port, LISTEN_PORT=listen_port, MOCK_PORT=mock_port,
        ACCESS_LOG=json.dumps(str(access_log)), EXTRA_FILTER=extra,
        USAGE_FIELD=" usage=%FILTER_STATE(wasm.sluice_usage:PLAIN)%" if log_usage else "")


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
                 binary: Path = MOCK, replay: list[Path] | None = None):
        port_file = workdir / f"mock-{os.getpid()}-{id(self)}.port"
        args = [str(binary), "--port", "0", "--port-file", str(port_file),
                "--chunk-delay-ms", str(chunk_delay_ms), "--workers", str(workers)]
        if require_key:
            args += ["--require-key", require_key]
        if RECORDINGS.is_dir():
            args += ["--recordings", str(RECORDINGS)]
        if not log_requests:
            args.append("--no-log")
        for b in replay or []:
            args += ["--replay-baseline", str(b)]
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


class Redis:
    """redis-server on a free loopback port, nothing persisted (the global
    rate-limit counters of the tests and `make run --redis`)."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/"
        self.workdir = workdir
        self.start()

    def start(self) -> None:
        self.log = open(self.workdir / f"redis-{self.port}.log", "ab")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
            stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as c:
                    c.sendall(b"PING\r\n")
                    if c.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING")
            time.sleep(0.05)

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


def _pg_bin(name: str) -> str:
    """A PostgreSQL server program: on PATH, else Debian's versioned dir."""
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    raise RuntimeError(f"{name} not found: apt-get install postgresql")


class Postgres:
    """A throwaway PostgreSQL cluster on a free loopback port (the shared
    store of control-plane replicas in tests and `make run`-style stacks).
    initdb refuses to run as root, so under root the cluster belongs to the
    `postgres` user Debian's package creates."""

    def __init__(self, port: int | None = None, ssl: bool = False):
        """`ssl`: TCP connections must use TLS (`hostssl` only), with a server
        certificate for 127.0.0.1 signed by a CA of its own (`self.ca`)."""
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix=f"sluice-pg-{self.port}-"))
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.ssl = ssl
        self.ca = self.dir / "ca.pem"
        self.user = None
        if os.geteuid() == 0:
            import pwd
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self.user = "postgres"
        subprocess.run([_pg_bin("initdb"), "-D", str(self.dir / "data"), "-U", "postgres",
                        "-A", "trust", "--no-sync", "-E", "UTF8"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                       user=self.user, cwd=self.dir)
        if ssl:
            self._certificates()
        self.start()

    def _certificates(self) -> None:
        data = self.dir / "data"
        run = lambda *a: subprocess.run(["openssl", *a], check=True, cwd=self.dir,  # noqa: E731
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=sluice test CA", "-keyout", "ca.key", "-out", "ca.pem")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", str(data / "server.key"), "-out", "server.csr")
        (self.dir / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext",
            "-out", str(data / "server.crt"))
        (data / "pg_hba.conf").write_text(
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
        if self.user:
            import pwd
            pw = pwd.getpwnam(self.user)
            for f in ("server.key", "server.crt", "pg_hba.conf"):
                os.chown(data / f, pw.pw_uid, pw.pw_gid)
        os.chmod(data / "server.key", 0o600)

    def start(self) -> None:
        self.log = open(self.dir / "postgres.log", "ab")
        self.proc = subprocess.Popen(
            [_pg_bin("postgres"), "-D", str(self.dir / "data"), "-p", str(self.port),
             "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1",
             # A test cluster: durability is not what is tested here.
             "-c", "fsync=off", "-c", "synchronous_commit=off",
             "-c", "max_connections=200"]
            + (["-c", "ssl=on"] if self.ssl else []),
            stdout=self.log, stderr=self.log, user=self.user, cwd=self.dir)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.proc.returncode} "
                                   f"({self.dir / 'postgres.log'})")
            r = subprocess.run([_pg_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if r.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError("postgres did not become ready")
            time.sleep(0.1)

    def stop(self) -> None:
        # SIGINT: PostgreSQL's fast shutdown.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Envoy:
    """An Envoy process for a rendered bootstrap, with its own --base-id."""

    def __init__(self, workdir: Path, bootstrap: str, *, admin_port: int, concurrency: int = 1,
                 env: dict | None = None, name: str = "envoy", log_level: str = "warning",
                 wait_ready: bool = True):
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
             # File access logs (usage records) every 0.5 s, not every 10 s.
             "--file-flush-interval-msec", "500",
             "--component-log-level", "wasm:info"],
            stdout=self.log, stderr=self.log, env={**os.environ, **(env or {})})
        if wait_ready:
            try:
                _wait_http(self.admin + "/ready", 60, self.proc, f"envoy ({self.log_path})")
            except BaseException:
                # Not ready, or interrupted: never leave the process behind.
                self.stop()
                raise

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


class ControlPlane:
    """`sluice serve` on free loopback ports with its own sqlite file, or
    (`db="postgres://…"`) one replica of several on a shared Postgres: give
    them the same `grpc_token` and distinct `name`s."""

    def __init__(self, workdir: Path, *, seed: dict | None = None, db: Path | str | None = None,
                 grpc_port: int | None = None, admin_port: int | None = None,
                 token: str = "test-admin-token", read_token: str = "test-read-token",
                 binary: Path = SLUICE, wasm: Path = WASM, capture_dir: Path | None = None,
                 wasm_remote: bool = False, push_keys: bool = False,
                 wasm_inline: bool = False, provider_secrets: dict | None = None,
                 redis_url: str | None = None, grpc_token: str | None = None,
                 name: str = "control-plane", extra_env: dict | None = None):
        """`provider_secrets`: env var → value the control plane serves over
        SDS (`--provider-secrets`); `push_keys`: the mock provider's key that
        way (Envoy's credential_injector adds it upstream; nothing in Envoy's
        environment or the VM). `wasm_remote`: Envoy fetches the module from
        the control plane instead of reading a local file; `wasm_inline`: the
        control plane sends the module's bytes in the config (as in
        Kubernetes)."""
        self.env = dict(extra_env or {})
        self.workdir = workdir
        self.db = db or workdir / "sluice.db"
        self.grpc_port = grpc_port or free_port()
        self.admin_port = admin_port or free_port()
        self.admin_url = f"http://127.0.0.1:{self.admin_port}"
        self.token = token
        self.read_token = read_token
        # Every gRPC call (ECDS, SDS, access logs) carries it.
        self.grpc_token = grpc_token or secrets.token_hex(24)
        self.name = name
        self.binary = binary
        self.args = [str(binary), "serve", "--db", str(self.db),
                     "--grpc", f"127.0.0.1:{self.grpc_port}",
                     "--admin", f"127.0.0.1:{self.admin_port}",
                     "--env-keys", ",".join(ALL_ENV_KEYS)]
        secrets_ = dict(provider_secrets or {})
        if push_keys:
            secrets_["SLUICE_MOCK_API_KEY"] = MOCK_PROVIDER_SECRET
        if secrets_:
            # Served over SDS to Envoy's credential_injector.
            self.args += ["--provider-secrets", ",".join(secrets_)]
            self.env.update(secrets_)
        if wasm_remote:
            self.args += ["--wasm-url", f"{self.admin_url}/wasm/sluice.wasm",
                          "--wasm-file", str(wasm)]
        elif wasm_inline:
            self.args += ["--wasm-file", str(wasm)]
        else:
            self.args += ["--wasm", str(wasm)]
        if seed is not None:
            seed_file = workdir / "seed-config.json"
            seed_file.write_text(json.dumps(seed))
            self.args += ["--seed", str(seed_file)]
        if redis_url:
            # Serves Envoy's rate limit service API on the gRPC port.
            self.args += ["--redis", redis_url]
        self.capture_dir = capture_dir
        if capture_dir is not None:
            self.args += ["--capture-dir", str(capture_dir)]
        self.start()

    def start(self) -> None:
        self.log = open(self.workdir / f"{self.name}.log", "ab")
        env = {**os.environ, "SLUICE_ADMIN_TOKEN": self.token,
               "SLUICE_ADMIN_READ_TOKEN": self.read_token, "SLUICE_GRPC_TOKEN": self.grpc_token,
               **self.env}
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log, env=env)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"control plane exited with {self.proc.returncode}; "
                                   f"see {self.workdir / (self.name + '.log')}")
            try:
                self.api("GET", "/v1/status")
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def api(self, method: str, path: str, body=None, token: str | None = None):
        data = None if body is None else (body if isinstance(body, bytes)
                                          else json.dumps(body).encode())
        req = urllib.request.Request(self.admin_url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token or self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {**os.environ, "SLUICE_ADMIN_URL": self.admin_url,
               "SLUICE_ADMIN_TOKEN": self.token}
        p = subprocess.run([str(self.binary), *args], capture_output=True, text=True,
                           env=env, timeout=30)
        if check and p.returncode != 0:
            raise RuntimeError(f"sluice {' '.join(args)}: {p.stderr}")
        return p

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        self.proc.kill()
        self.proc.wait(timeout=10)
        self.log.close()

    def stop(self) -> None:
        _stop(self.proc)
        self.log.close()


class Stack:
    """Mock provider + Envoy with Sluice, as `make run` and the tests use them.
    `managed=True`: the config comes from a control plane (ECDS), usage goes
    back to it (gRPC access logs)."""

    def __init__(self, config: dict | None = None, *, workdir: Path | None = None,
                 listen_port: int | None = None, concurrency: int = 1,
                 chunk_delay_ms: int = 0, real_clusters: bool = False,
                 mock_log_requests: bool = True, listen_address: str = "127.0.0.1",
                 managed: bool = False, xds_api_type: str = "GRPC",
                 control_plane_ports: tuple[int, int] | None = None,
                 admin_token: str = "test-admin-token", capture_dir: Path | None = None,
                 mock: "Mock | None" = None, shadow: dict | None = None,
                 wasm_remote: bool = False, push_keys: bool = False,
                 wasm_inline: bool = False, wasm: Path | None = None):
        """`mock`: share a running mock provider (e.g. a replaying one).
        `shadow`: {"config": ..., "wasm": Path, "percent": int} runs the
        online shadow layout (render_shadow_bootstrap). `wasm`: another build
        of the filter (static bootstrap only), e.g. to replay against it."""
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="sluice-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config = config if config is not None else demo_config(with_real=False)
        self.own_mock = mock is None
        self.mock = mock or Mock(self.workdir, chunk_delay_ms=chunk_delay_ms,
                                 log_requests=mock_log_requests)
        self.cp = None
        try:
            if managed:
                grpc, admin = control_plane_ports or (None, None)
                self.cp = ControlPlane(self.workdir, seed=self.config, grpc_port=grpc,
                                       admin_port=admin, token=admin_token,
                                       capture_dir=capture_dir, wasm_remote=wasm_remote,
                                       push_keys=push_keys, wasm_inline=wasm_inline)
            self.port = listen_port or free_port()
            admin_port = free_port()
            self.access_log = self.workdir / "access.log"
            if shadow is not None:
                bootstrap = render_shadow_bootstrap(
                    primary_config=self.config, shadow_config=shadow["config"],
                    listen_port=self.port, admin_port=admin_port, mock_port=self.mock.port,
                    access_log=self.access_log, shadow_wasm=shadow.get("wasm", WASM),
                    percent=shadow.get("percent", 100),
                    control_plane_port=self.cp.grpc_port if self.cp else None,
                    node_id=f"envoy-{admin_port}",
                    control_plane_token=self.cp.grpc_token if self.cp else None)
            else:
                bootstrap = render_bootstrap(
                    config=self.config, listen_port=self.port, admin_port=admin_port,
                    mock_port=self.mock.port, access_log=self.access_log,
                    real_clusters=real_clusters, listen_address=listen_address,
                    control_plane_port=self.cp.grpc_port if self.cp else None,
                    xds_api_type=xds_api_type, node_id=f"envoy-{admin_port}",
                    control_plane_admin_port=self.cp.admin_port if self.cp else None,
                    control_plane_token=self.cp.grpc_token if self.cp else None,
                    injected_mock_secret="SLUICE_MOCK_API_KEY" if push_keys else None,
                    wasm=wasm or WASM)
            self.envoy = Envoy(self.workdir, bootstrap, admin_port=admin_port,
                               concurrency=concurrency,
                               env={} if push_keys else
                               {"SLUICE_MOCK_API_KEY": MOCK_PROVIDER_SECRET})
        except BaseException:
            if self.own_mock:
                self.mock.stop()
            if self.cp:
                self.cp.stop()
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
            if self.own_mock:
                self.mock.stop()
            if self.cp and self.cp.proc.poll() is None:
                self.cp.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _missing_build() -> list[str]:
    return [str(p) for p in (WASM, MOCK, SLUICE) if not p.exists()]


def cmd_run(args) -> int:
    missing = _missing_build()
    if missing:
        print(f"missing build outputs: {missing}; run 'make run'", file=sys.stderr)
        return 1
    cfg = json.loads(Path(args.config).read_text()) if args.config else demo_config()
    workdir = Path(args.workdir) if args.workdir else ROOT / ".run"
    workdir.mkdir(parents=True, exist_ok=True)
    managed = not args.static
    if not port_is_free(args.port):
        print(f"sluice: port {args.port} is in use; choose another with SLUICE_PORT=…",
              file=sys.stderr)
        return 1
    # The control plane's ports move out of the way of the listener and of
    # anything already bound (one line says so), rather than failing.
    cp_ports = []
    for name, want in (("gRPC", args.cp_grpc_port), ("admin", args.cp_admin_port)):
        port = want
        if port == args.port or port in cp_ports or not port_is_free(port):
            port = free_port()
            if managed:
                print(f"sluice: control-plane {name} port {want} is taken; using {port}",
                      file=sys.stderr)
        cp_ports.append(port)
    try:
        stack = Stack(cfg, workdir=workdir, listen_port=args.port, concurrency=args.concurrency,
                      real_clusters=True, chunk_delay_ms=args.chunk_delay_ms, managed=managed,
                      control_plane_ports=(cp_ports[0], cp_ports[1]),
                      admin_token=os.environ.get("SLUICE_ADMIN_TOKEN") or secrets.token_hex(16))
    except KeyboardInterrupt:
        # Stack stops whatever it had started before re-raising.
        print("sluice: interrupted while starting", file=sys.stderr)
        return 130
    except (RuntimeError, OSError) as e:
        print(f"sluice: could not start: {e}", file=sys.stderr)
        return 1
    # From here Ctrl-C (or SIGTERM) only asks to stop: the set-up below
    # finishes, and the stack is always stopped on the way out.
    stop = {"now": False}

    def handler(*_):
        stop["now"] = True
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if stack.cp:
        # Demo prices for the mock models, so budgets work on them (a key
        # with a budget is refused on a model without a price).
        prices = workdir / "demo-prices.json"
        prices.write_text(json.dumps({m: {"input_cost_per_token": 1e-06,
                                          "output_cost_per_token": 2e-06, "mode": "chat"}
                                      for m in ("mock-gpt-upstream", "mock-claude-upstream",
                                                "mock-gemini-upstream")}))
        try:
            stack.cp.cli("prices", "import", str(prices))
            # A model with a fallback (docs/routing.md): the mock's OpenAI
            # API first, its Anthropic API if that fails — providers by URL,
            # their clusters pushed over CDS.
            mock_url = stack.mock.url
            key = ("--credential-env", "SLUICE_MOCK_API_KEY")
            stack.cp.cli("providers", "add", "--name", "mock-url-openai", "--kind", "openai",
                         "--base-url", mock_url + "/v1", *key)
            stack.cp.cli("providers", "add", "--name", "mock-url-anthropic", "--kind",
                         "anthropic", "--base-url", mock_url, "--auth", "header:x-api-key", *key)
            stack.cp.cli("models", "set", "mock-fallback",
                         "--target", "mock-url-openai:mock-gpt-upstream",
                         "--fallback", "mock-url-anthropic:mock-claude-upstream",
                         "--retry-attempts", "2", "--first-byte-timeout-ms", "10000")
        except BaseException:
            stack.stop()
            raise
    models = ", ".join([m["name"] for m in cfg.get("models", [])]
                       + (["mock-fallback"] if stack.cp else []))
    cp = ""
    if stack.cp:
        cp = f"""control plane: admin API {stack.cp.admin_url}, database {stack.cp.db}
  export SLUICE_ADMIN_URL={stack.cp.admin_url} SLUICE_ADMIN_TOKEN={stack.cp.token}
  {SLUICE.relative_to(ROOT)} keys create --name me --budget-usd 5 --period daily
  {SLUICE.relative_to(ROOT)} status ;  {SLUICE.relative_to(ROOT)} usage report --by model
"""
    print(f"""
Sluice is up: Envoy on {stack.url} (admin {stack.envoy.admin}), mock provider on {stack.mock.url}
models: {models}
access log (with usage records): {stack.access_log}
{cp}
Try it:

  curl -s {stack.url}/v1/chat/completions \\
    -H 'Authorization: Bearer {DEMO_KEY}' -H 'Content-Type: application/json' \\
    -d '{{"model": "mock-gpt", "messages": [{{"role": "user", "content": "Hello!"}}]}}'

  # streaming:
  curl -sN {stack.url}/v1/chat/completions \\
    -H 'Authorization: Bearer {DEMO_KEY}' -H 'Content-Type: application/json' \\
    -d '{{"model": "mock-gpt", "stream": true, "messages": [{{"role": "user", "content": "Hi"}}]}}'

  # fallback: the OpenAI primary fails (the mock is told to), Anthropic answers
  curl -si {stack.url}/v1/chat/completions \\
    -H 'Authorization: Bearer {DEMO_KEY}' -H 'Content-Type: application/json' \\
    -H 'x-mock-error: 500' -H 'x-mock-error-for: openai' \\
    -d '{{"model": "mock-fallback", "messages": [{{"role": "user", "content": "Hi"}}]}}'

Ctrl-C stops Envoy and the mock provider.
""", flush=True)
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
                           wasm=Path(args.wasm), control_plane_port=args.control_plane_port,
                           control_plane_token=os.environ.get("SLUICE_GRPC_TOKEN"))
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
    r.add_argument("--static", action="store_true",
                   help="config inline in the bootstrap instead of from the control plane")
    r.add_argument("--cp-grpc-port", type=int, default=18000)
    r.add_argument("--cp-admin-port", type=int, default=18001)
    r.add_argument("--workdir", help="state and logs (default .run/)")
    r.set_defaults(fn=cmd_run)
    d = sub.add_parser("render", help="print a bootstrap for a configuration")
    d.add_argument("--config")
    d.add_argument("--out")
    d.add_argument("--port", type=int, default=10000)
    d.add_argument("--admin-port", type=int, default=9901)
    d.add_argument("--mock-port", type=int, default=8081)
    d.add_argument("--access-log", default="/dev/stdout")
    d.add_argument("--wasm", default=str(WASM))
    d.add_argument("--control-plane-port", type=int,
                   help="managed mode: config over ECDS from the control plane on this port")
    d.set_defaults(fn=cmd_render)
    args = p.parse_args()
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
