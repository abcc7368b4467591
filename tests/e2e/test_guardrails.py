"""Guardrails through a real Envoy, in every client dialect."""
from __future__ import annotations

import json
import re
import time
import urllib.request

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as gt

import launch
from conftest import TEST_KEY, gateway_config

CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.com"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    cfg = gateway_config()
    cfg["guardrails"] = {"rules": [
        {"name": "no-cards", "detector": "payment_card", "action": "block"},
        {"name": "mask-email", "detector": "email", "action": "mask", "on": "both"},
        {"name": "hash-ssn", "detector": "us_ssn", "action": "hash"},
        {"name": "brand", "detector": {"regex": "Sluice"}, "action": "mask", "on": "response",
         "models": ["mock-gpt"]},
        {"name": "no-mock-word", "detector": {"regex": "mock provider"}, "action": "block",
         "on": "response", "models": ["mock-gemini"]},
    ]}
    s = launch.Stack(cfg, workdir=tmp_path_factory.mktemp("guard"))
    yield s
    s.stop()


def test_blocked_prompt_in_every_dialect(guarded):
    prompt = f"charge my card {CARD} please"
    o = openai.OpenAI(base_url=guarded.url + "/v1", api_key=TEST_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as e:
        o.chat.completions.create(model="mock-claude", messages=[{"role": "user", "content": prompt}])
    assert e.value.code == "guardrail_blocked" and "no-cards" in str(e.value)
    assert CARD not in json.dumps(e.value.body), "the matched text is never echoed"
    a = anthropic.Anthropic(base_url=guarded.url, api_key=TEST_KEY, max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as e:
        a.messages.create(model="mock-gpt", max_tokens=10, messages=[{"role": "user", "content": prompt}])
    assert "no-cards" in str(e.value)
    g = genai.Client(api_key=TEST_KEY, http_options=gt.HttpOptions(base_url=guarded.url))
    with pytest.raises(genai_errors.ClientError) as e:
        g.models.generate_content(model="mock-gemini", contents=prompt)
    assert e.value.code == 400 and "no-cards" in str(e.value)


def test_masked_prompt_reaches_the_provider_masked(guarded):
    guarded.mock.clear()
    o = openai.OpenAI(base_url=guarded.url + "/v1", api_key=TEST_KEY, max_retries=0)
    o.chat.completions.create(model="mock-claude", messages=[
        {"role": "user", "content": f"write to {EMAIL}, ssn 123-45-6789"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
            "function": {"name": "send", "arguments": json.dumps({"to": EMAIL})}}]},
        {"role": "tool", "tool_call_id": "c1", "content": f"sent to {EMAIL}"}])
    [seen] = guarded.mock.requests()
    text = json.dumps(seen["body"])
    assert EMAIL not in text and "123-45-6789" not in text
    assert "[EMAIL]" in text and "[SSN:" in text
    msgs = seen["body"]["messages"]
    assert msgs[1]["content"][0]["input"] == {"to": "[EMAIL]"}  # tool arguments
    assert msgs[2]["content"][0]["content"][0]["text"] == "sent to [EMAIL]"  # tool result


def test_masked_response_and_scoping(guarded):
    with httpx.Client(base_url=guarded.url, timeout=20) as c:
        h = {"Authorization": f"Bearer {TEST_KEY}"}
        body = {"messages": [{"role": "user", "content": "hi"}]}
        r = c.post("/v1/chat/completions", headers=h, json={**body, "model": "mock-gpt"})
        assert r.status_code == 200
        assert r.json()["choices"][0]["message"]["content"] == \
            "Hello from the [REDACTED] mock provider. This"
        # The rule is scoped to mock-gpt.
        r = c.post("/v1/chat/completions", headers=h, json={**body, "model": "mock-claude"})
        assert "Sluice" in r.json()["choices"][0]["message"]["content"]


def test_guardrail_hits_are_counted(guarded):
    with httpx.Client(base_url=guarded.url, timeout=20) as c:
        c.post("/v1/chat/completions", headers={"Authorization": f"Bearer {TEST_KEY}"},
               json={"model": "mock-gpt", "messages": [{"role": "user", "content": CARD}]})

    def hits():
        with urllib.request.urlopen(guarded.envoy.admin + "/stats/prometheus", timeout=5) as r:
            t = r.read().decode()
        m = re.search(r'sluice_guardrail_hits_total\{rule="no-cards",action="block"\} (\d+)', t)
        return int(m.group(1)) if m else 0
    deadline = time.monotonic() + 10
    while hits() < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert hits() >= 1


def test_masked_streamed_answer(guarded):
    o = openai.OpenAI(base_url=guarded.url + "/v1", api_key=TEST_KEY, max_retries=0)
    text = ""
    for ch in o.chat.completions.create(model="mock-gpt", stream=True,
                                        messages=[{"role": "user", "content": "hi"}]):
        if ch.choices:
            text += ch.choices[0].delta.content or ""
    # "Sluice" arrives as its own delta word (" Sluice"): caught and masked.
    assert text == "Hello from the [REDACTED] mock provider. This"


def test_blocked_stream_ends_with_an_error_event(guarded):
    o = openai.OpenAI(base_url=guarded.url + "/v1", api_key=TEST_KEY, max_retries=0)
    with pytest.raises(openai.APIError) as e:
        list(o.chat.completions.create(model="mock-gemini", stream=True,
                                       messages=[{"role": "user", "content": "hi"}]))
    assert "no-mock-word" in str(e.value)
    a = anthropic.Anthropic(base_url=guarded.url, api_key=TEST_KEY, max_retries=0)
    with pytest.raises(anthropic.APIStatusError) as e:
        with a.messages.stream(model="mock-gemini", max_tokens=20,
                               messages=[{"role": "user", "content": "x"}]) as s:
            s.get_final_message()
    assert "no-mock-word" in str(e.value)
