"""Embeddings and token counting through a real Envoy, with the official
SDKs: OpenAI `embeddings.create` and `responses.input_tokens.count`,
Anthropic `messages.count_tokens`, google-genai `embed_content` and
`count_tokens` — passed through to a provider of the client's own API,
translated (embeddings) or counted by the gateway (token counts) otherwise.

The mock's vectors are deterministic in every wire format: input i of text
t has values (len(t) + i + j) / 100, so a translated answer must equal a
passed-through one."""
from __future__ import annotations

import uuid

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import types as gt

from conftest import TEST_KEY, auth


def expected(texts, dims):
    return [[(len(t) + i + j) / 100 for j in range(dims)] for i, t in enumerate(texts)]


def close(a, b):
    return len(a) == len(b) and all(
        len(x) == len(y) and all(abs(p - q) < 1e-6 for p, q in zip(x, y)) for x, y in zip(a, b))


def oa(stack, headers=None):
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=TEST_KEY, max_retries=0,
                         timeout=20, default_headers=headers or {})


def gg(stack, headers=None):
    return genai.Client(api_key=TEST_KEY, http_options=gt.HttpOptions(
        base_url=stack.url, headers=headers or {}, timeout=20_000))


@pytest.mark.parametrize("model", ["mock-gpt", "mock-gemini"])
@pytest.mark.parametrize("fmt", ["base64", "float"])
def test_openai_sdk_embeddings(stack, model, fmt):
    texts = ["hello", "a longer sentence"]
    # The SDK asks for base64 unless told otherwise, and decodes it.
    kw = {} if fmt == "base64" else {"encoding_format": "float"}
    r = oa(stack).embeddings.create(model=model, input=texts, dimensions=4, **kw)
    assert close([d.embedding for d in r.data], expected(texts, 4))
    assert [d.index for d in r.data] == [0, 1] and r.model
    assert r.usage.prompt_tokens > 0


def test_embeddings_usage_records(stack):
    for model, source in (("mock-gpt", "provider"), ("mock-gemini", "estimated")):
        rid = "emb-" + uuid.uuid4().hex
        oa(stack, {"x-request-id": rid}).embeddings.create(model=model, input="hello world")
        rec = stack.wait_usage(rid)
        assert rec["operation"] == "embeddings" and rec["client_dialect"] == "openai", rec
        assert rec["prompt_tokens"] > 0 and rec["completion_tokens"] == 0, rec
        assert rec["usage_source"] == source and rec["stream"] is False, rec


def test_embeddings_need_a_provider_that_embeds(stack):
    with pytest.raises(openai.BadRequestError) as e:
        oa(stack).embeddings.create(model="mock-claude", input="x")
    assert "embeddings" in e.value.message and "anthropic" in e.value.message
    # Token ids: only an OpenAI provider reads them.
    assert oa(stack).embeddings.create(model="mock-gpt", input=[[1, 2, 3]]).data
    with pytest.raises(openai.BadRequestError) as e:
        oa(stack).embeddings.create(model="mock-gemini", input=[[1, 2, 3]])
    assert "token" in e.value.message


@pytest.mark.parametrize("model", ["mock-gemini", "mock-gpt"])
def test_genai_embed_content(stack, model):
    texts = ["what is the meaning of life?", "how do I bake bread?"]
    g = gg(stack)
    stack.mock.clear()
    # One Content per embedding (a list of strings is one Content of parts).
    contents = [gt.Content(parts=[gt.Part(text=t)]) for t in texts]
    r = g.models.embed_content(
        model=model, contents=contents, config=gt.EmbedContentConfig(output_dimensionality=3))
    assert close([e.values for e in r.embeddings], expected(texts, 3))
    sent = stack.mock.requests()[-1]["body"]
    if model == "mock-gemini":
        # Every entry names the provider's model, not the public one.
        assert {q["model"] for q in sent["requests"]} == {"models/mock-gemini-upstream"}
    else:
        assert sent["input"] == texts and sent["model"] == "mock-gpt-upstream"


def test_gemini_single_embed_content_translated(stack):
    with httpx.Client(base_url=stack.url, timeout=20) as c:
        r = c.post("/v1beta/models/mock-gpt:embedContent", headers={"x-goog-api-key": TEST_KEY},
                   json={"content": {"parts": [{"text": "hey"}]}, "outputDimensionality": 2,
                         "taskType": "RETRIEVAL_QUERY"})
        assert r.status_code == 200, r.text
        assert close([r.json()["embedding"]["values"]], expected(["hey"], 2))
        # taskType has no place at OpenAI: said so.
        assert "taskType" in r.headers["x-sluice-warnings"]


def test_anthropic_sdk_count_tokens(stack):
    a = anthropic.Anthropic(base_url=stack.url, api_key=TEST_KEY, max_retries=0, timeout=20)
    args = dict(system="Be brief.", messages=[{"role": "user", "content": "Hello there, Claude"}])
    # Anthropic answers for itself; the gateway counts for other kinds.
    raw = a.messages.with_raw_response.count_tokens(model="mock-claude", **args)
    assert raw.parse().input_tokens > 0 and "x-sluice-token-count" not in raw.headers
    for model in ("mock-gpt", "mock-gemini"):
        raw = a.messages.with_raw_response.count_tokens(model=model, **args)
        assert raw.headers["x-sluice-token-count"] == "estimate"
        assert 5 <= raw.parse().input_tokens <= 30, raw.parse()


def test_genai_count_tokens(stack):
    g = gg(stack)
    r = g.models.count_tokens(model="mock-gemini", contents="Hello there, Gemini")
    assert r.total_tokens > 0
    r = g.models.count_tokens(model="mock-claude", contents="Hello there, Gemini")
    assert 3 <= r.total_tokens <= 20


def test_responses_input_tokens_count(stack):
    c = oa(stack)
    for model in ("mock-gpt", "mock-claude"):
        r = c.responses.input_tokens.count(model=model, input="Hello there")
        assert r.input_tokens > 0, model
    with pytest.raises(openai.BadRequestError):
        c.responses.input_tokens.count(model="mock-claude", input="x",
                                       previous_response_id="resp_1")


def test_count_tokens_records_are_free_and_keyed(stack):
    rid = "cnt-" + uuid.uuid4().hex
    with httpx.Client(base_url=stack.url, timeout=20) as c:
        r = c.post("/v1/messages/count_tokens", headers={**auth(), "x-request-id": rid},
                   json={"model": "mock-gemini", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200 and r.json()["input_tokens"] > 0
        # A key limited to mock-gpt may not count for another model.
        r = c.post("/v1/messages/count_tokens", headers=auth("sk-test-limited"),
                   json={"model": "mock-claude", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code in (403, 404), r.text
    rec = stack.wait_usage(rid)
    assert rec["operation"] == "count_tokens" and rec["prompt_tokens"] == 0, rec
    assert rec["status"] == 200 and rec["model"] == "mock-gemini", rec


def test_model_lists_say_what_each_model_serves(stack):
    with httpx.Client(base_url=stack.url, timeout=20) as h:
        data = {m["id"]: m for m in h.get("/v1/models", headers=auth()).json()["data"]}
        assert "/v1/embeddings" in data["mock-gpt"]["endpoints"]
        assert "/v1/embeddings" not in data["mock-claude"]["endpoints"]
        assert "/v1/responses" in data["mock-claude"]["endpoints"]
        models = h.get("/v1beta/models", headers={"x-goog-api-key": TEST_KEY}).json()["models"]
        by = {m["displayName"]: m["supportedGenerationMethods"] for m in models}
        assert {"embedContent", "countTokens", "generateContent"} <= set(by["mock-gemini"])
        assert "embedContent" not in by["mock-claude"]
