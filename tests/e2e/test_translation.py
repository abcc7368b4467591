"""All 9 client-dialect × provider-kind pairs through a real Envoy, with the
official SDKs used as their users use them: openai, anthropic, google-genai.

The mock provider answers every request with the same scripted content in
its own wire format, so every pair must surface exactly the same text, tool
calls and finish reason."""
from __future__ import annotations

import json
import uuid

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gt

from conftest import TEST_KEY, auth

EXPECTED_8 = "Hello from the Sluice mock provider. This"
# mock-gpt serves Chat Completions and Responses (both passed through);
# mock-chat-only only Chat Completions; mock-responses only Responses.
MODELS = ["mock-gpt", "mock-chat-only", "mock-claude", "mock-gemini", "mock-responses"]
WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}},
                  "required": ["city"]}
PROMPT = "What is the weather in Paris?"


# ---- one adapter per client dialect: (text, [(tool name, args)], finish) ----

def run_openai(stack, model, stream, tools, headers=None):
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0, timeout=20,
                      default_headers=headers or {})
    kw = {}
    if tools:
        kw["tools"] = [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather for a city",
            "parameters": WEATHER_SCHEMA}}]
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": PROMPT}]
    if not stream:
        r = c.chat.completions.create(model=model, messages=msgs, **kw)
        m = r.choices[0].message
        calls = [(t.function.name, json.loads(t.function.arguments)) for t in m.tool_calls or []]
        assert r.usage.completion_tokens > 0
        return m.content or "", calls, r.choices[0].finish_reason
    text, calls, finish, ids = "", {}, None, {}
    for ch in c.chat.completions.create(model=model, messages=msgs, stream=True, **kw):
        if not ch.choices:
            continue
        d = ch.choices[0].delta
        text += d.content or ""
        for tc in d.tool_calls or []:
            if tc.id:
                ids[tc.index] = tc.id
                calls[tc.index] = [tc.function.name, ""]
            calls[tc.index][1] += tc.function.arguments or ""
        finish = ch.choices[0].finish_reason or finish
    assert all(ids.get(i) for i in calls), "every streamed tool call has an id"
    return text, [(n, json.loads(a)) for n, a in calls.values()], finish


def run_anthropic(stack, model, stream, tools, headers=None):
    c = anthropic.Anthropic(base_url=stack.url, api_key=TEST_KEY, max_retries=0, timeout=20,
                            default_headers=headers or {})
    kw = {}
    if tools:
        kw["tools"] = [{"name": "get_weather", "description": "Weather for a city",
                        "input_schema": WEATHER_SCHEMA}]
    args = dict(model=model, max_tokens=256, system="Be brief.",
                messages=[{"role": "user", "content": PROMPT}], **kw)
    if stream:
        # The SDK's own accumulator validates the event sequence.
        with c.messages.stream(**args) as s:
            msg = s.get_final_message()
    else:
        msg = c.messages.create(**args)
    text = "".join(b.text for b in msg.content if b.type == "text")
    calls = [(b.name, b.input) for b in msg.content if b.type == "tool_use"]
    assert all(b.id for b in msg.content if b.type == "tool_use")
    assert msg.usage.output_tokens > 0
    return text, calls, msg.stop_reason


def run_gemini(stack, model, stream, tools, headers=None):
    c = genai.Client(api_key=TEST_KEY, http_options=gt.HttpOptions(
        base_url=stack.url, headers=headers or {}, timeout=20_000))
    cfg = gt.GenerateContentConfig(
        system_instruction="Be brief.",
        automatic_function_calling=gt.AutomaticFunctionCallingConfig(disable=True))
    if tools:
        cfg.tools = [gt.Tool(function_declarations=[gt.FunctionDeclaration(
            name="get_weather", description="Weather for a city",
            parameters_json_schema=WEATHER_SCHEMA)])]
    if not stream:
        r = c.models.generate_content(model=model, contents=PROMPT, config=cfg)
        chunks = [r]
    else:
        chunks = list(c.models.generate_content_stream(model=model, contents=PROMPT, config=cfg))
    text, calls, finish = "", [], None
    for r in chunks:
        for p in (r.candidates[0].content.parts if r.candidates[0].content else None) or []:
            if p.text and not p.thought:
                text += p.text
            if p.function_call:
                calls.append((p.function_call.name, dict(p.function_call.args or {})))
        finish = r.candidates[0].finish_reason or finish
    assert chunks[-1].usage_metadata.candidates_token_count > 0
    return text, calls, finish.value if finish else None


def run_responses(stack, model, stream, tools, headers=None):
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0, timeout=20,
                      default_headers=headers or {})
    kw = {}
    if tools:
        kw["tools"] = [{"type": "function", "name": "get_weather",
                        "description": "Weather for a city", "parameters": WEATHER_SCHEMA}]
    args = dict(model=model, instructions="Be brief.", input=PROMPT, **kw)
    if stream:
        # The SDK's own accumulator validates the event sequence.
        with c.responses.stream(**args) as s:
            events = list(s)
            r = s.get_final_response()
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert events[0].type == "response.created" and events[-1].type == "response.completed"
    else:
        r = c.responses.create(**args)
    calls = [(o.name, json.loads(o.arguments)) for o in r.output if o.type == "function_call"]
    assert all(o.call_id for o in r.output if o.type == "function_call")
    assert r.usage.output_tokens > 0 and r.usage.input_tokens > 0
    return r.output_text, calls, r.status


CLIENTS = {"openai": run_openai, "anthropic": run_anthropic, "gemini": run_gemini,
           "responses": run_responses}
STOP = {"openai": "stop", "anthropic": "end_turn", "gemini": "STOP", "responses": "completed"}
TOOL_STOP = {"openai": "tool_calls", "anthropic": "tool_use", "gemini": "STOP",
             "responses": "completed"}


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("client", list(CLIENTS))
def test_text(stack, client, model, stream):
    text, calls, finish = CLIENTS[client](stack, model, stream, tools=False)
    assert (text, calls, finish) == (EXPECTED_8, [], STOP[client])


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("client", list(CLIENTS))
def test_tool_calls(stack, client, model, stream):
    text, calls, finish = CLIENTS[client](stack, model, stream, tools=True)
    assert calls == [("get_weather", {"city": "Paris"})]
    assert finish == TOOL_STOP[client]


def test_parallel_tool_calls_keep_their_indices(stack):
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0,
                      default_headers={"x-mock-parallel-tools": "2"})
    tools = [{"type": "function", "function": {"name": n, "parameters": WEATHER_SCHEMA}}
             for n in ("get_weather", "get_time")]
    for model in MODELS:
        calls = {}
        for ch in c.chat.completions.create(model=model, stream=True, tools=tools,
                                            messages=[{"role": "user", "content": "both"}]):
            for tc in (ch.choices[0].delta.tool_calls if ch.choices else None) or []:
                calls.setdefault(tc.index, ["", ""])
                calls[tc.index][0] += tc.function.name or ""
                calls[tc.index][1] += tc.function.arguments or ""
        assert {i: (n, json.loads(a)) for i, (n, a) in calls.items()} == {
            0: ("get_weather", {"city": "Paris"}), 1: ("get_time", {"city": "Paris"})}, model


def test_tool_result_round_trip_in_history(stack):
    """A full tool turn: the provider sees the call and its result in its own
    shape (Gemini needs the function name, found from the call's id)."""
    stack.mock.clear()
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0)
    msgs = [{"role": "user", "content": PROMPT},
            {"role": "assistant", "content": None, "tool_calls": [{
                "id": "call_1", "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]
    for model in ("mock-claude", "mock-gemini"):
        r = c.chat.completions.create(model=model, messages=msgs, tools=[{
            "type": "function", "function": {"name": "get_weather", "parameters": WEATHER_SCHEMA}}])
        assert r.choices[0].message.content == EXPECTED_8  # no second call after a result
    claude, gem = [q["body"] for q in stack.mock.requests()]
    assert claude["messages"][1]["content"][0] == {
        "type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}
    assert claude["messages"][2]["content"][0]["type"] == "tool_result"
    assert claude["messages"][2]["content"][0]["tool_use_id"] == "call_1"
    fr = gem["contents"][2]["parts"][0]["functionResponse"]
    assert fr == {"name": "get_weather", "response": {"result": "sunny"}}


def test_images_translate_to_each_provider_shape(stack):
    stack.mock.clear()
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0)
    content = [{"type": "text", "text": "what is this?"},
               {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    for model in ("mock-claude", "mock-gemini"):
        c.chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
    claude, gem = [q["body"] for q in stack.mock.requests()]
    assert claude["messages"][0]["content"][1] == {"type": "image", "source": {
        "type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
    assert gem["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}


def test_dropped_fields_are_reported_in_a_header(stack):
    with httpx.Client(base_url=stack.url, timeout=20) as c:
        r = c.post("/v1/chat/completions", headers=auth(), json={
            "model": "mock-claude", "seed": 7, "logit_bias": {"1": 2},
            "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200
        w = r.headers["x-sluice-warnings"]
        assert "'seed'" in w and "'logit_bias'" in w and "anthropic" in w
        # Passthrough is untouched: no warnings.
        r = c.post("/v1/chat/completions", headers=auth(), json={
            "model": "mock-gpt", "seed": 7, "messages": [{"role": "user", "content": "hi"}]})
        assert "x-sluice-warnings" not in r.headers


def test_meaning_changing_drops_are_rejected(stack):
    with httpx.Client(base_url=stack.url, timeout=20) as c:
        r = c.post("/v1/chat/completions", headers=auth(), json={
            "model": "mock-claude", "n": 3, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 400 and r.json()["error"]["param"] == "n"


def test_provider_errors_in_the_clients_dialect(stack):
    # Anthropic's 529 overloaded → an OpenAI client sees 503.
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0,
                      default_headers={"x-mock-error": "529"})
    with pytest.raises(openai.InternalServerError) as e:
        c.chat.completions.create(model="mock-claude", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 503
    # OpenAI's 429 → the Anthropic SDK's RateLimitError, retry-after kept.
    a = anthropic.Anthropic(base_url=stack.url, api_key=TEST_KEY, max_retries=0,
                            default_headers={"x-mock-error": "429"})
    with pytest.raises(anthropic.RateLimitError) as e:
        a.messages.create(model="mock-gpt", max_tokens=10,
                          messages=[{"role": "user", "content": "x"}])
    assert e.value.response.headers["retry-after"] == "7"
    assert e.value.body["error"]["type"] == "rate_limit_error"
    # Anthropic's 529 stays 529 for Anthropic-shaped clients of a Gemini model.
    g = genai.Client(api_key=TEST_KEY, http_options=gt.HttpOptions(
        base_url=stack.url, headers={"x-mock-error": "401"}))
    with pytest.raises(genai_errors.ClientError) as e:
        g.models.generate_content(model="mock-claude", contents="x")
    assert e.value.code == 401 and e.value.status == "UNAUTHENTICATED"


def test_mid_stream_error_becomes_an_error_event(stack):
    a = anthropic.Anthropic(base_url=stack.url, api_key=TEST_KEY, max_retries=0,
                            default_headers={"x-mock-stream-error-after": "3"})
    with pytest.raises(anthropic.APIStatusError) as e:
        with a.messages.stream(model="mock-gpt", max_tokens=10,
                               messages=[{"role": "user", "content": "x"}]) as s:
            s.get_final_message()
    assert "mid-stream" in str(e.value)
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0,
                      default_headers={"x-mock-stream-error-after": "3"})
    with pytest.raises(openai.APIError) as e:
        list(c.chat.completions.create(model="mock-claude", stream=True,
                                       messages=[{"role": "user", "content": "x"}]))
    assert "mid-stream" in str(e.value)


def test_translated_requests_are_metered_like_passthrough(stack):
    rid = "tr-" + uuid.uuid4().hex
    with httpx.Client(base_url=stack.url, timeout=20) as c:
        with c.stream("POST", "/v1/messages", headers={**auth(), "x-request-id": rid}, json={
                "model": "mock-gemini", "max_tokens": 50, "stream": True,
                "messages": [{"role": "user", "content": "hi"}]}) as r:
            r.read()
    rec = stack.wait_usage(rid)
    assert rec["client_dialect"] == "anthropic"
    assert rec["provider"] == "mock-gemini" and rec["upstream_model"] == "mock-gemini-upstream"
    assert rec["completion_tokens"] == 8 and rec["prompt_tokens"] > 0
    assert rec["usage_source"] == "provider" and rec["completed"] is True


def test_recorded_anthropic_thinking_stream_reaches_an_openai_client(stack):
    c = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0,
                      default_headers={"x-mock-replay": "anthropic/anthropic-clear-thinking.1"})
    reasoning, text = "", ""
    for ch in c.chat.completions.create(model="mock-claude", stream=True,
                                        messages=[{"role": "user", "content": "x"}]):
        if ch.choices:
            d = ch.choices[0].delta
            reasoning += getattr(d, "reasoning_content", None) or ""
            text += d.content or ""
    assert len(reasoning) > 20 and len(text) > 5


def test_gemini_query_key_and_v1_paths(stack):
    with httpx.Client(base_url=stack.url, timeout=20) as c:
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        r = c.post(f"/v1/models/mock-gpt:generateContent?key={TEST_KEY}", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["candidates"][0]["content"]["parts"][0]["text"] == EXPECTED_8
        r = c.post("/v1beta/models/mock-gpt:generateContent?key=wrong", json=body)
        assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"
