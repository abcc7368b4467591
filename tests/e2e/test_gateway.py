"""The gateway in a real Envoy: auth, routing, limits, passthrough and usage."""
from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections import Counter

import httpx
import pytest

import launch
from conftest import BODY_LIMIT, DISABLED_KEY, LIMITED_KEY, TEST_KEY, auth

CHAT = "/v1/chat/completions"
EXPECTED_8 = "Hello from the Sluice mock provider. This"


def chat_body(model="mock-gpt", **extra):
    return {"model": model, "messages": [{"role": "user", "content": "Say hello"}], **extra}


def rid() -> str:
    return "e2e-" + uuid.uuid4().hex


def assert_openai_error(r: httpx.Response, status: int, code: str):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code
    assert isinstance(err["message"], str) and err["message"]
    assert "type" in err and "param" in err


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer sk-wrong"},
    {"Authorization": "Basic Zm9vOmJhcg=="},
    {"Authorization": f"Bearer {DISABLED_KEY}"},
])
def test_bad_keys_get_openai_401(client, headers):
    r = client.post(CHAT, json=chat_body(), headers=headers)
    assert_openai_error(r, 401, "invalid_api_key")


def test_x_api_key_header_is_accepted(client):
    r = client.post(CHAT, json=chat_body(), headers={"x-api-key": TEST_KEY})
    assert r.status_code == 200, r.text


def test_unknown_and_forbidden_models_are_404(client):
    assert_openai_error(client.post(CHAT, json=chat_body("nope"), headers=auth()),
                        404, "model_not_found")
    # Exists, but this key may not use it: indistinguishable from unknown.
    r = client.post(CHAT, json=chat_body("other"), headers=auth(LIMITED_KEY))
    assert_openai_error(r, 404, "model_not_found")


def test_models_list_is_local_and_per_key(stack, client):
    stack.mock.clear()
    r = client.get("/v1/models", headers=auth(LIMITED_KEY))
    assert r.status_code == 200
    assert [m["id"] for m in r.json()["data"]] == ["mock-gpt"]
    ids = [m["id"] for m in client.get("/v1/models", headers=auth()).json()["data"]]
    assert ids == ["mock-gpt", "weighted", "other", "mock-claude", "mock-gemini",
                   "mock-chat-only", "mock-responses"]
    assert stack.mock.requests() == [], "answered by the filter, not the provider"


def test_unknown_paths_are_openai_404(client):
    assert_openai_error(client.post("/v1/images/edits", json={}, headers=auth()), 404, "not_found")
    assert_openai_error(client.get("/", headers=auth()), 404, "not_found")


def test_non_stream_round_trip_and_what_the_provider_sees(stack, client):
    stack.mock.clear()
    body = chat_body(temperature=0.25)
    r = client.post(CHAT, json=body, headers={**auth(), "Accept-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    data = r.json()
    assert data["choices"][0]["message"]["content"] == EXPECTED_8
    assert data["choices"][0]["finish_reason"] == "stop"
    [seen] = stack.mock.requests()
    assert seen["path"] == "/v1/chat/completions"
    assert seen["body"]["model"] == "mock-gpt-upstream"
    assert seen["body"]["temperature"] == 0.25
    h = seen["headers"]
    assert h["authorization"] == f"Bearer {launch.MOCK_PROVIDER_SECRET}"
    assert TEST_KEY not in json.dumps(seen), "the virtual key must never reach the provider"
    assert h["host"] == "mock-provider.local"
    assert "accept-encoding" not in h
    assert "x-sluice-cluster" not in h


def test_weighted_routing_splits_three_to_one(stack, client):
    stack.mock.clear()
    for _ in range(40):
        r = client.post(CHAT, json=chat_body("weighted"), headers=auth())
        assert r.status_code == 200
    seen = Counter((q["path"], q["body"]["model"]) for q in stack.mock.requests())
    assert seen == {("/v1/chat/completions", "up-a"): 30,
                    ("/alt/v1/chat/completions", "up-b"): 10}


def parse_sse(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.split("\n") if line.startswith("data: ")]


def test_stream_round_trip_without_usage_chunk(stack, client):
    stack.mock.clear()
    with client.stream("POST", CHAT, json=chat_body(stream=True), headers=auth()) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    events = parse_sse(text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["choices"] for c in chunks), "usage-only chunk must be stripped"
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert content == EXPECTED_8
    # ...but the provider was asked for usage, so the request is metered.
    [seen] = stack.mock.requests()
    assert seen["body"]["stream_options"] == {"include_usage": True}


def test_stream_keeps_usage_chunk_when_client_asks(client):
    body = chat_body(stream=True, stream_options={"include_usage": True})
    with client.stream("POST", CHAT, json=body, headers=auth()) as r:
        events = parse_sse(r.read().decode())
    usage_chunks = [json.loads(e) for e in events[:-1] if json.loads(e)["choices"] == []]
    assert len(usage_chunks) == 1
    assert usage_chunks[0]["usage"]["completion_tokens"] == 8


def test_usage_records_in_access_log(stack, client):
    r1, r2 = rid(), rid()
    client.post(CHAT, json=chat_body(), headers={**auth(), "x-request-id": r1})
    with client.stream("POST", CHAT, json=chat_body(stream=True),
                       headers={**auth(), "x-request-id": r2}) as r:
        r.read()
    non_stream, stream = stack.wait_usage(r1), stack.wait_usage(r2)
    for rec in (non_stream, stream):
        assert rec["key_id"] == "key-all"
        assert rec["model"] == "mock-gpt"
        assert rec["provider"] == "mock"
        assert rec["upstream_model"] == "mock-gpt-upstream"
        assert rec["status"] == 200
        assert rec["completion_tokens"] == 8
        assert rec["prompt_tokens"] > 0
        assert rec["usage_source"] == "provider"
        assert rec["completed"] is True
        assert rec["config_version"] == "e2e-1"
        assert rec["latency_ms"] >= 0
    assert non_stream["stream"] is False and stream["stream"] is True
    assert stream["ttft_ms"] is not None


def test_usage_record_for_rejected_request(stack, client):
    r = rid()
    client.post(CHAT, json=chat_body("nope"), headers={**auth(), "x-request-id": r})
    rec = stack.wait_usage(r)
    assert rec["status"] == 404 and rec["error"] == "model_not_found"
    assert rec["key_id"] == "key-all"


def test_oversized_body_is_413(stack, client):
    big = chat_body(padding="x" * (BODY_LIMIT + 10))
    assert_openai_error(client.post(CHAT, json=big, headers=auth()), 413, "payload_too_large")

    # Chunked, so the filter only learns the size while reading.
    payload = json.dumps(big).encode()

    def gen():
        for i in range(0, len(payload), 8192):
            yield payload[i:i + 8192]
    r = client.post(CHAT, content=gen(), headers={**auth(), "content-type": "application/json"})
    assert_openai_error(r, 413, "payload_too_large")


@pytest.mark.parametrize("body", [b"{not json", b"[1,2]", b'{"model": 5}', b"\xff\xfe\x00",
                                  b'{"model":"mock-gpt","model":"other"}'])
def test_malformed_body_is_400_and_the_worker_survives(stack, client, body):
    r = client.post(CHAT, content=body, headers={**auth(), "content-type": "application/json"})
    assert_openai_error(r, 400, "invalid_request")
    # One worker (concurrency 1): this request runs in the same VM.
    ok = client.post(CHAT, json=chat_body(), headers=auth())
    assert ok.status_code == 200


def test_header_values_that_are_not_utf8_neither_crash_nor_leak(stack, client):
    """HTTP allows obs-text bytes in header values; the proxy-wasm SDK's
    header reader panics on them (killing the VM for every request on the
    worker), so the filter reads header maps itself."""
    stack.mock.clear()
    r = client.post(CHAT, json=chat_body(), headers={**auth(), "x-note": b"caf\xe9"})
    assert r.status_code == 200, r.text
    [seen] = stack.mock.requests()
    assert "x-note" in seen["headers"], "headers the filter does not edit pass untouched"
    r = client.post(CHAT, json=chat_body(), headers={"Authorization": b"Bearer sk-\xe9"})
    assert_openai_error(r, 401, "invalid_api_key")
    # Same worker, still alive.
    assert client.post(CHAT, json=chat_body(), headers=auth()).status_code == 200


def test_provider_errors_pass_through_with_retry_after(stack, client):
    r = rid()
    resp = client.post(CHAT, json=chat_body(),
                       headers={**auth(), "x-mock-error": "429", "x-request-id": r})
    assert resp.status_code == 429
    assert resp.headers["retry-after"] == "7"
    assert resp.json()["error"]["code"] == "rate_limit_exceeded"
    rec = stack.wait_usage(r)
    assert rec["status"] == 429 and rec["usage_source"] == "none"


def test_recorded_openai_stream_passes_through_and_is_metered(stack, client):
    """A real gpt-4.1-nano stream (shared/fixtures) through the filter."""
    recording = launch.RECORDINGS / "openai/openai-text.chunks.txt"
    lines = [json.loads(l) for l in recording.read_text().splitlines() if l.strip()]
    expected = "".join((c["choices"][0]["delta"].get("content") or "")
                       for c in lines if c["choices"])
    recorded_usage = [c["usage"] for c in lines if c.get("usage")][-1]
    r = rid()
    with client.stream("POST", CHAT, json=chat_body(stream=True),
                       headers={**auth(), "x-mock-replay": "openai/openai-text",
                                "x-request-id": r}) as resp:
        events = parse_sse(resp.read().decode())
    chunks = [json.loads(e) for e in events[:-1]]
    got = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks if c["choices"])
    assert got == expected and len(expected) > 500
    assert all(c["choices"] for c in chunks)
    rec = stack.wait_usage(r)
    assert rec["prompt_tokens"] == recorded_usage["prompt_tokens"]
    assert rec["completion_tokens"] == recorded_usage["completion_tokens"]


def test_mid_stream_provider_error_reaches_the_client(client):
    with client.stream("POST", CHAT, json=chat_body(stream=True),
                       headers={**auth(), "x-mock-stream-error-after": "3"}) as r:
        events = parse_sse(r.read().decode())
    assert json.loads(events[-1])["error"]["message"] == "mock: upstream failed mid-stream"


def test_demo_bootstrap_validates_with_real_provider_clusters(tmp_path):
    cfg = launch.demo_config(with_real=False)
    out = tmp_path / "bootstrap.yaml"
    out.write_text(launch.render_bootstrap(
        config=cfg, listen_port=10000, admin_port=9901, mock_port=8081,
        access_log=tmp_path / "a.log", real_clusters=True))
    p = subprocess.run(["envoy", "--mode", "validate", "-c", str(out), "--base-id", "4242"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr


def test_invalid_configuration_is_rejected_by_the_filter(tmp_path):
    """on_configure returns false: Envoy refuses the filter instead of serving
    with a broken configuration."""
    cfg = launch.demo_config(with_real=False)
    cfg["models"][0]["targets"][0]["provider"] = "no-such-provider"
    mock_port = launch.free_port()
    admin = launch.free_port()
    boot = tmp_path / "bad.yaml"
    boot.write_text(launch.render_bootstrap(
        config=cfg, listen_port=launch.free_port(), admin_port=admin, mock_port=mock_port,
        access_log=tmp_path / "a.log", real_clusters=False))
    p = subprocess.run(["envoy", "-c", str(boot), "--base-id", str(admin),
                        "--concurrency", "1", "--log-level", "error"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    assert "unknown provider 'no-such-provider'" in p.stdout + p.stderr


def test_prometheus_metrics_after_known_traffic(stack, client):
    import re
    import urllib.request

    def scrape() -> dict:
        with urllib.request.urlopen(stack.envoy.admin + "/stats/prometheus", timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r"^(sluice_\w+|gen_ai_\w+?)(_count|_sum)?\{([^}]*)\} (\S+)$", line)
            if m:
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3)))
                key = (m.group(1) + (m.group(2) or ""), labels.get("provider"), labels.get("model"),
                       labels.get("status_class") or labels.get("token_type"))
                out[key] = out.get(key, 0) + float(m.group(4))
        return out

    before = scrape()
    for _ in range(3):
        assert client.post(CHAT, json=chat_body("other"), headers=auth()).status_code == 200
    client.post(CHAT, json=chat_body("nope"), headers=auth())  # 404 before routing

    def delta(key):
        return scrape().get(key, 0) - before.get(key, 0)
    req = ("sluice_requests_total", "mock", "other", "2xx")
    deadline = time.monotonic() + 10
    while delta(req) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert delta(req) == 3
    assert delta(("sluice_tokens_total", "mock", "other", "output")) == 3 * 8
    assert delta(("sluice_tokens_total", "mock", "other", "input")) > 0
    # Histograms reach /stats/prometheus at Envoy's stats flush (5 s).
    hist = ("gen_ai_client_token_usage_count", "mock", "other", "output")
    deadline = time.monotonic() + 15
    while delta(hist) < 3 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert delta(hist) == 3
    # Envoy's histogram sums are approximate (log-linear buckets).
    assert abs(delta(("gen_ai_client_token_usage_sum", "mock", "other", "output")) - 24) < 1
    assert delta(("gen_ai_client_operation_duration_milliseconds_count", "mock", "other", None)) == 3
    # An unknown model is refused before routing, and its client-chosen name
    # is no label (one per name would grow without bound).
    assert delta(("sluice_requests_total", "none", "none", "4xx")) == 1
