"""An upstream that cannot be the bottleneck: a second Envoy answering every
request with `direct_response` from files (`make bench --upstream envoy`,
the default).

The files are captured once from the Rust mock provider, so they are the
real wire formats the gateway reads (an OpenAI chat completion, an
Anthropic message, each as JSON and as an SSE stream of N events with its
usage). A request selects the stream body with the `x-bench-stream` header
(the bench's clients set it on stream cases; a route cannot match on the
body's `stream` member) and the dialect by path.
"""
from __future__ import annotations

import http.client
import json
from pathlib import Path

# The captures: (file, path, stream, request body extras).
BODIES = (
    ("openai.json", "/v1/chat/completions", False, {}),
    ("openai.sse", "/v1/chat/completions", True, {"stream_options": {"include_usage": True}}),
    ("anthropic.json", "/v1/messages", False, {"max_tokens": 256}),
    ("anthropic.sse", "/v1/messages", True, {"max_tokens": 256}),
)


def capture(mock_port: int, work: Path, events: int) -> dict[str, Path]:
    """The four bodies from the mock, written under `work`."""
    out = {}
    for name, path, stream, extra in BODIES:
        body = {"model": "up", "messages": [{"role": "user", "content": "hello"}], **extra}
        if stream:
            body["stream"] = True
        c = http.client.HTTPConnection("127.0.0.1", mock_port, timeout=30)
        c.request("POST", path, body=json.dumps(body), headers={
            "content-type": "application/json", "x-mock-chunks": str(events)})
        r = c.getresponse()
        data = r.read()
        c.close()
        if r.status != 200:
            raise RuntimeError(f"mock answered {r.status} to {path}: {data[:200]!r}")
        f = work / f"upstream-{name}"
        f.write_bytes(data)
        out[name] = f
    return out


def render(*, listen_port: int, admin_port: int, files: dict[str, Path]) -> str:
    """The upstream Envoy's bootstrap (JSON, which Envoy reads as YAML)."""
    def answer(name: str, stream: bool) -> dict:
        ctype = "text/event-stream" if stream else "application/json"
        return {"direct_response": {"status": 200, "body": {"filename": str(files[name])}},
                "response_headers_to_add": [{"header": {"key": "content-type", "value": ctype},
                                             "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]}

    stream_header = [{"name": "x-bench-stream", "present_match": True}]
    routes = [
        {"match": {"prefix": "/v1/messages", "headers": stream_header},
         **answer("anthropic.sse", True)},
        {"match": {"prefix": "/v1/messages"}, **answer("anthropic.json", False)},
        {"match": {"prefix": "/", "headers": stream_header}, **answer("openai.sse", True)},
        {"match": {"prefix": "/"}, **answer("openai.json", False)},
    ]
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network."
                 "http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "upstream",
        "route_config": {"name": "upstream",
                         "max_direct_response_body_size_bytes": 4 * 1024 * 1024,
                         "virtual_hosts": [{"name": "all", "domains": ["*"],
                                            "routes": routes}]},
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    boot = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1",
                                                 "port_value": admin_port}}},
        "static_resources": {"listeners": [{
            "name": "upstream",
            "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen_port}},
            "filter_chains": [{"filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": hcm}]}]}]},
    }
    return json.dumps(boot, indent=1)
