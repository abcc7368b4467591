"""The official openai Python SDK, pointed at Envoy, used as its users would."""
from __future__ import annotations

import openai
import pytest

from conftest import TEST_KEY

EXPECTED_8 = "Hello from the Sluice mock provider. This"


@pytest.fixture()
def sdk(stack):
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0,
                         timeout=20)


def test_sdk_non_stream(sdk):
    r = sdk.chat.completions.create(model="mock-gpt",
                                    messages=[{"role": "user", "content": "Hello"}])
    assert r.choices[0].message.content == EXPECTED_8
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 8


def test_sdk_stream(sdk):
    stream = sdk.chat.completions.create(model="mock-gpt", stream=True,
                                         messages=[{"role": "user", "content": "Hello"}])
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == EXPECTED_8
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_sdk_stream_with_usage(sdk):
    stream = sdk.chat.completions.create(model="mock-gpt", stream=True,
                                         stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "Hello"}])
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_sdk_tool_call_stream(sdk):
    tools = [{"type": "function", "function": {
        "name": "get_weather", "parameters": {
            "type": "object", "properties": {"city": {"type": "string"}}}}}]
    stream = sdk.chat.completions.create(model="mock-gpt", stream=True, tools=tools,
                                         messages=[{"role": "user", "content": "Weather?"}])
    args, name, finish = "", None, None
    for c in stream:
        for tc in c.choices[0].delta.tool_calls or []:
            name = name or tc.function.name
            args += tc.function.arguments or ""
        finish = c.choices[0].finish_reason or finish
    assert (name, args, finish) == ("get_weather", '{"city":"Paris"}', "tool_calls")


def test_sdk_models_and_errors(sdk, stack):
    assert [m.id for m in sdk.models.list()] == ["mock-gpt", "weighted", "other", "mock-claude", "mock-gemini",
                   "mock-chat-only", "mock-responses"]
    with pytest.raises(openai.NotFoundError) as e:
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=stack.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="mock-gpt", messages=[{"role": "user", "content": "x"}])
