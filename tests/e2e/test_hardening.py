"""Hostile requests against a real Envoy: each gets a clear error in the
client's dialect, and no worker VM is ever reloaded (Envoy's own wasm
stats say so)."""
from __future__ import annotations

import copy
import re
import urllib.request

import httpx
import pytest

import launch
from conftest import TEST_KEY, gateway_config

CARD = "4111 1111 1111 1111"


@pytest.fixture(scope="module")
def hardened(tmp_path_factory):
    cfg = copy.deepcopy(gateway_config())
    cfg["limits"] = {"max_request_body_bytes": 4 << 20}
    cfg["guardrails"] = {"rules": [
        {"name": "no-cards", "detector": "payment_card", "action": "block", "on": "both"}]}
    s = launch.Stack(cfg, workdir=tmp_path_factory.mktemp("hardening"), concurrency=2)
    yield s
    s.stop()


def vm_stats(stack) -> tuple[int, int]:
    st = stack.envoy.stats("wasm")
    return (st.get("wasm.sluice.vm_reload", 0) + st.get("wasm.sluice.vm_reload_failure", 0),
            st["wasm.envoy.wasm.runtime.v8.created"])


def post(stack, path: str, body, headers: dict) -> httpx.Response:
    with httpx.Client(timeout=30) as c:  # a new connection: both workers take requests
        return c.post(stack.url + path, content=body if isinstance(body, bytes) else None,
                      json=None if isinstance(body, bytes) else body,
                      headers={"connection": "close", **headers})


def test_hostile_requests_get_dialect_errors_and_never_reload_a_vm(hardened):
    before = vm_stats(hardened)
    chat = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(4):  # both workers
        # `Bearer` directly followed by a multi-byte character, no key.
        r = post(hardened, "/v1/chat/completions", chat,
                 {"authorization": b"Bearer\xc3\xa9sk-nothing"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        with httpx.Client(timeout=10) as c:
            r = c.get(hardened.url + "/v1/models",
                      headers={"authorization": b"Bearer\xc3\xa9x", "connection": "close"})
        assert r.status_code == 401
        r = post(hardened, "/v1/messages", {"model": "mock-gpt", "max_tokens": 5, "messages": []},
                 {"x-api-key": b"\xc3\xa9\xc3\xa9", "anthropic-version": "2023-06-01"})
        assert r.status_code == 401 and r.json()["type"] == "error"
        assert r.json()["error"]["type"] == "authentication_error"
    # Unique 1 MiB model names: refused, and never a metric label.
    for i in range(3):
        r = post(hardened, "/v1/chat/completions",
                 {**chat, "model": f"{i}" + "m" * (1 << 20)},
                 {"authorization": f"Bearer {TEST_KEY}"})
        assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    with urllib.request.urlopen(hardened.envoy.admin + "/stats/prometheus", timeout=10) as m:
        metrics = m.read().decode()
    assert "mmmmmmmm" not in metrics and len(metrics) < 1 << 20
    # A card 200 levels deep in a tool's parameters (past the JSON parser's
    # depth limit): the guardrail fails closed.
    deep = ('{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}],"tools":[{"type":'
            '"function","function":{"name":"f","parameters":' + "[" * 200 + f'"{CARD}"'
            + "]" * 200 + "}}]}")
    r = post(hardened, "/v1/chat/completions", deep.encode(),
             {"authorization": f"Bearer {TEST_KEY}", "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "guardrail_blocked", r.text
    # Broken JSON in the Gemini dialect: Gemini's error shape.
    r = post(hardened, "/v1beta/models/mock-gemini:generateContent", b'{"contents": [',
             {"x-goog-api-key": TEST_KEY, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["status"] == "INVALID_ARGUMENT", r.text
    # Still serving, on every worker, with the VMs it started with.
    for _ in range(4):
        assert post(hardened, "/v1/chat/completions", chat,
                    {"authorization": f"Bearer {TEST_KEY}"}).status_code == 200
    assert vm_stats(hardened) == before, "a worker VM was reloaded"
