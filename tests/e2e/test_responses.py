"""The OpenAI Responses API through a real Envoy, with the official openai SDK:
passed through to providers that serve it (mock-gpt), translated to every
other kind (Chat Completions only, Anthropic, Gemini), and served to the other
client dialects by a provider that speaks only Responses (mock-responses).
The text × tool matrix over all dialects is in test_translation.py."""
from __future__ import annotations

import json
import uuid

import anthropic
import httpx
import openai
import pytest

from conftest import TEST_KEY, auth

EXPECTED_8 = "Hello from the Sluice mock provider. This"
KINDS = ["mock-gpt", "mock-chat-only", "mock-claude", "mock-gemini", "mock-responses"]
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
TOOLS = [{"type": "function", "name": "get_weather", "description": "Weather for a city",
          "parameters": WEATHER},
         {"type": "function", "name": "get_time", "parameters": WEATHER}]


def sdk(stack, headers=None):
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0,
                         timeout=20, default_headers=headers or {})


def run(c, stream, **args):
    """A response, streamed through the SDK's accumulator or not."""
    if not stream:
        return c.responses.create(**args)
    with c.responses.stream(**args) as s:
        events = list(s)
        final = s.get_final_response()
    assert [e.sequence_number for e in events] == list(range(len(events)))
    return final


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("model", KINDS)
def test_forced_function_tool(stack, model, stream):
    # Two tools offered, the second forced: the provider sees the choice.
    stack.mock.clear()
    r = run(sdk(stack), stream, model=model, input="What time is it in Paris?", tools=TOOLS,
            tool_choice={"type": "function", "name": "get_time"})
    calls = [o for o in r.output if o.type == "function_call"]
    assert len(calls) == 1 and calls[0].call_id and json.loads(calls[0].arguments) == {
        "city": "Paris"}
    sent = stack.mock.requests()[-1]["body"]
    forced = {
        "mock-gpt": lambda b: b["tool_choice"] == {"type": "function", "name": "get_time"},
        "mock-responses": lambda b: b["tool_choice"] == {"type": "function", "name": "get_time"},
        "mock-chat-only": lambda b: b["tool_choice"]["function"]["name"] == "get_time",
        "mock-claude": lambda b: b["tool_choice"] == {"type": "tool", "name": "get_time"},
        "mock-gemini": lambda b: b["toolConfig"]["functionCallingConfig"][
            "allowedFunctionNames"] == ["get_time"],
    }[model]
    assert forced(sent), sent


@pytest.mark.parametrize("stream", [False, True], ids=["unary", "stream"])
@pytest.mark.parametrize("model", KINDS)
def test_multi_turn_with_function_call_output(stack, model, stream):
    stack.mock.clear()
    history = [
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Paris"}'},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny, 21C"},
    ]
    r = run(sdk(stack), stream, model=model, instructions="Be brief.", input=history,
            tools=TOOLS[:1])
    assert r.output_text == EXPECTED_8 and r.status == "completed"
    sent = json.dumps(stack.mock.requests()[-1]["body"])
    # The call and its output reach every provider, in its own shape
    # (Gemini pairs them by name: it has no call ids).
    assert "sunny, 21C" in sent and "get_weather" in sent
    assert model == "mock-gemini" or "call_1" in sent


def test_a_cut_answer_is_incomplete(stack):
    for model in KINDS:
        r = sdk(stack).responses.create(model=model, input="hi", max_output_tokens=16,
                                        extra_headers={"x-mock-chunks": "40"})
        assert r.status == "incomplete", model
        assert r.incomplete_details.reason == "max_output_tokens", model


def test_stateful_features_pass_through_or_are_refused(stack):
    c = sdk(stack)
    # A provider serving Responses keeps state: passed through untouched.
    stack.mock.clear()
    r = c.responses.create(model="mock-gpt", input="more", previous_response_id="resp_1",
                           store=True, tools=[{"type": "web_search"}])
    assert r.output_text == EXPECTED_8
    body = stack.mock.requests()[-1]["body"]
    assert body["previous_response_id"] == "resp_1" and body["model"] == "mock-gpt-upstream"
    # Elsewhere: a 400 that names what cannot be served.
    cases = [
        ("mock-claude", dict(previous_response_id="resp_1"), "previous_response_id"),
        ("mock-gemini", dict(store=True), "store"),
        ("mock-chat-only", dict(tools=[{"type": "web_search"}]), "web_search"),
        ("mock-claude", dict(conversation="conv_1"), "conversation"),
    ]
    for model, extra, needle in cases:
        with pytest.raises(openai.BadRequestError) as e:
            c.responses.create(model=model, input="x", **extra)
        assert needle in e.value.message and "provider" in e.value.message, e.value.message


def test_file_inputs_are_refused_when_translated(stack):
    c = sdk(stack)
    item = [{"role": "user", "content": [
        {"type": "input_text", "text": "summarise"},
        {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}]}]
    with pytest.raises(openai.BadRequestError) as e:
        c.responses.create(model="mock-claude", input=item)
    assert "input_file" in e.value.message
    assert c.responses.create(model="mock-gpt", input=item).output_text == EXPECTED_8
    # Chat Completions file and audio parts: refused too (docs/translation.md).
    for part in ({"type": "file", "file": {"file_id": "file-1"}},
                 {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}):
        with pytest.raises(openai.BadRequestError) as e:
            c.chat.completions.create(model="mock-gemini", messages=[
                {"role": "user", "content": [{"type": "text", "text": "x"}, part]}])
        assert part["type"] in e.value.message
        r = c.chat.completions.create(model="mock-gpt", messages=[
            {"role": "user", "content": [{"type": "text", "text": "x"}, part]}])
        assert r.choices[0].message.content == EXPECTED_8


def test_usage_records_for_responses(stack):
    for model, stream in (("mock-gpt", True), ("mock-gpt", False), ("mock-claude", True),
                          ("mock-gemini", False)):
        rid = "resp-" + uuid.uuid4().hex
        with httpx.Client(base_url=stack.url, timeout=20) as h:
            with h.stream("POST", "/v1/responses", headers={**auth(), "x-request-id": rid},
                          json={"model": model, "input": "hi", "stream": stream}) as r:
                assert r.status_code == 200
                r.read()
        rec = stack.wait_usage(rid)
        assert rec["client_dialect"] == "openai-responses", rec
        assert rec["completion_tokens"] == 8 and rec["prompt_tokens"] > 0, rec
        assert rec["usage_source"] == "provider" and rec["completed"] is True, rec


def test_mid_stream_failure_ends_in_response_failed(stack):
    c = sdk(stack, {"x-mock-stream-error-after": "4"})
    for model in ("mock-claude", "mock-responses"):
        types = []
        with c.responses.create(model=model, input="x", stream=True) as s:
            for e in s:
                types.append(e.type)
        assert types[-2:] == ["error", "response.failed"], (model, types)


def test_recorded_responses_streams_reach_chat_and_anthropic_clients(stack):
    """Real OpenAI Responses streams (reasoning summaries, a function call,
    a text answer) from a Responses-only provider, translated for the Chat
    Completions and Anthropic SDKs."""
    for rec, want_call in (("openai/azure-tool-call.1", True), ("openai/openai-phase.1", False)):
        hdr = {"x-mock-replay": rec}
        o = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0,
                          default_headers=hdr)
        text, args = "", ""
        for ch in o.chat.completions.create(model="mock-responses", stream=True,
                                            messages=[{"role": "user", "content": "x"}]):
            if ch.choices:
                d = ch.choices[0].delta
                text += d.content or ""
                for tc in d.tool_calls or []:
                    args += tc.function.arguments or ""
        a = anthropic.Anthropic(base_url=stack.url, api_key=TEST_KEY, max_retries=0,
                                default_headers=hdr)
        with a.messages.stream(model="mock-responses", max_tokens=100,
                               messages=[{"role": "user", "content": "x"}]) as s:
            msg = s.get_final_message()
        if want_call:
            assert json.loads(args) == {"location": "San Francisco"}
            assert msg.stop_reason == "tool_use"
            assert [b.input for b in msg.content if b.type == "tool_use"] == [
                {"location": "San Francisco"}]
        else:
            # Two message items (commentary, final answer), kept apart; the
            # recording holds only some of the deltas.
            assert text == "Got it\n\nHere are a few **AI", text
            assert "".join(b.text for b in msg.content if b.type == "text") == text
    # The reasoning summary reaches a Chat Completions client as reasoning.
    o = openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0,
                      default_headers={"x-mock-replay":
                                       "openai/openai-reasoning-encrypted-content.1"})
    reasoning = ""
    for ch in o.chat.completions.create(model="mock-responses", stream=True,
                                        messages=[{"role": "user", "content": "x"}]):
        if ch.choices:
            reasoning += getattr(ch.choices[0].delta, "reasoning_content", None) or ""
    assert len(reasoning) > 20
    r = o.chat.completions.create(model="mock-responses",
                                  messages=[{"role": "user", "content": "x"}])
    assert "570" in r.choices[0].message.content
