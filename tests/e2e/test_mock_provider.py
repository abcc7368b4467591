"""The mock provider's failure controls, which the resilience tests stand on:
an injected error limited to one wire format, to the first N requests of a
key, with a chosen retry-after, and a first byte that does not come."""
from __future__ import annotations

import time

import httpx
import pytest

import launch
from conftest import ROOT  # noqa: F401  (puts envoy/ on the path)

OPENAI = ("/v1/chat/completions",
          {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
ANTHROPIC = ("/v1/messages",
             {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
GEMINI = ("/v1beta/models/m:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]})


@pytest.fixture(scope="module")
def mock(tmp_path_factory):
    m = launch.Mock(tmp_path_factory.mktemp("mock"), require_key=None)
    yield m
    m.stop()


def post(mock, target, **headers):
    path, body = target
    return httpx.post(mock.url + path, json=body, headers=headers, timeout=10)


def test_an_error_can_be_limited_to_some_wire_formats(mock):
    h = {"x-mock-error": "500", "x-mock-error-for": "openai,gemini"}
    assert post(mock, OPENAI, **h).status_code == 500
    assert post(mock, GEMINI, **h).status_code == 500
    r = post(mock, ANTHROPIC, **h)
    assert r.status_code == 200 and r.json()["type"] == "message"


def test_an_error_can_be_limited_to_the_first_requests_of_a_key(mock):
    h = {"x-mock-error": "429", "x-mock-error-times": "2", "x-mock-error-key": "k-first",
         "x-mock-retry-after": "1"}
    first = post(mock, OPENAI, **h)
    assert first.status_code == 429 and first.headers["retry-after"] == "1"
    assert first.json()["error"]["code"] == "rate_limit_exceeded"
    assert post(mock, OPENAI, **h).status_code == 429
    assert post(mock, OPENAI, **h).status_code == 200
    # Another key has a budget of its own; errors of any status take a retry-after.
    h2 = {**h, "x-mock-error-key": "k-other", "x-mock-error": "529"}
    r = post(mock, ANTHROPIC, **h2)
    assert r.status_code == 529 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["type"] == "overloaded_error"


def test_the_first_byte_can_be_held_back(mock):
    t = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(mock.url + OPENAI[0], json=OPENAI[1],
                   headers={"x-mock-first-byte-delay-ms": "2000"}, timeout=0.5)
    assert time.monotonic() - t < 1.9
    r = post(mock, OPENAI, **{"x-mock-first-byte-delay-ms": "300"})
    assert r.status_code == 200
