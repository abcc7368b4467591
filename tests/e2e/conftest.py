"""Fixtures: a real Envoy with the built Sluice .wasm and the mock provider,
on free loopback ports, torn down at the end of the session."""
from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "envoy"))
import launch  # noqa: E402

TEST_KEY = "sk-test-all-models"
LIMITED_KEY = "sk-test-limited"
DISABLED_KEY = "sk-test-disabled"
BODY_LIMIT = 65536


def sha(k: str) -> str:
    return hashlib.sha256(k.encode()).hexdigest()


def wait_for(pred, timeout: float = 20.0, step: float = 0.02) -> float:
    """Polls `pred` until it is true; the seconds it took. Fails after
    `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if pred():
            return time.monotonic() - start
        time.sleep(step)
    raise AssertionError("condition not met in time")


def gateway_config() -> dict:
    return {
        "version": "e2e-1",
        "keys": [
            {"id": "key-all", "name": "all", "sha256": sha(TEST_KEY)},
            {"id": "key-limited", "sha256": sha(LIMITED_KEY), "models": ["mock-gpt"]},
            {"id": "key-off", "sha256": sha(DISABLED_KEY), "status": "disabled"},
        ],
        "providers": [
            {"name": "mock", "kind": "openai", "cluster": "mock_provider",
             "host": "mock-provider.local", "base_path": "/v1",
             "auth": {"type": "bearer"}, "api_key_env": "SLUICE_MOCK_API_KEY",
             "serves": ["openai-responses"]},
            {"name": "mock-responses", "kind": "openai-responses", "cluster": "mock_provider",
             "host": "mock-provider.local",
             "auth": {"type": "bearer"}, "api_key_env": "SLUICE_MOCK_API_KEY"},
            {"name": "mock-b", "kind": "openai", "cluster": "mock_provider",
             "host": "mock-b.local", "base_path": "/alt/v1",
             "auth": {"type": "bearer"}, "api_key_env": "SLUICE_MOCK_API_KEY"},
            {"name": "mock-anthropic", "kind": "anthropic", "cluster": "mock_provider",
             "host": "mock-provider.local",
             "auth": {"type": "header", "name": "x-api-key"}, "api_key_env": "SLUICE_MOCK_API_KEY"},
            {"name": "mock-gemini", "kind": "gemini", "cluster": "mock_provider",
             "host": "mock-provider.local",
             "auth": {"type": "header", "name": "x-goog-api-key"},
             "api_key_env": "SLUICE_MOCK_API_KEY"},
        ],
        "models": [
            {"name": "mock-gpt", "targets": [{"provider": "mock", "model": "mock-gpt-upstream"}]},
            {"name": "weighted", "targets": [
                {"provider": "mock", "model": "up-a", "weight": 3},
                {"provider": "mock-b", "model": "up-b", "weight": 1}]},
            {"name": "other", "targets": [{"provider": "mock", "model": "other-up"}]},
            {"name": "mock-claude",
             "targets": [{"provider": "mock-anthropic", "model": "mock-claude-upstream"}]},
            {"name": "mock-gemini",
             "targets": [{"provider": "mock-gemini", "model": "mock-gemini-upstream"}]},
            # An OpenAI provider that serves only Chat Completions (Responses
            # clients are translated), and one that serves only Responses.
            {"name": "mock-chat-only",
             "targets": [{"provider": "mock-b", "model": "chat-only-upstream"}]},
            {"name": "mock-responses",
             "targets": [{"provider": "mock-responses", "model": "mock-responses-upstream"}]},
        ],
        "limits": {"max_request_body_bytes": BODY_LIMIT},
        # Other OpenAI endpoints, passed through metered (test_endpoints.py).
        "endpoints": [
            {"path": "/v1/moderations", "provider": "mock"},
            {"path": "/v1/images/generations", "provider": "mock"},
            {"path": "/v1/audio/transcriptions", "provider": "mock",
             "max_body_bytes": 1048576},
            {"path": "/v1/audio/speech", "provider": "mock"},
            {"path": "/v1/files/*", "provider": "mock", "methods": ["GET", "POST", "DELETE"],
             "check_model": False},
        ],
    }


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    # One worker: "the next request on the same worker" is then guaranteed.
    s = launch.Stack(gateway_config(), workdir=tmp_path_factory.mktemp("stack"), concurrency=1)
    yield s
    s.stop()


@pytest.fixture()
def client(stack):
    with httpx.Client(base_url=stack.url, timeout=20) as c:
        yield c


def auth(key: str = TEST_KEY) -> dict:
    return {"Authorization": f"Bearer {key}"}
