"""Other OpenAI endpoints, configured under `endpoints` and passed through
metered: the official openai SDK's moderations, images, audio and files
calls through a real Envoy. Anything not configured stays a 404."""
from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from conftest import LIMITED_KEY, TEST_KEY, auth


def sdk(stack, key=TEST_KEY, rid=None):
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=key, max_retries=0, timeout=20,
                         default_headers={"x-request-id": rid} if rid else {})


def test_moderations_and_what_the_provider_sees(stack):
    stack.mock.clear()
    r = sdk(stack).moderations.create(model="omni-moderation-latest", input="hello")
    assert r.results[0].flagged is False
    seen = stack.mock.requests()[-1]
    assert seen["path"] == "/v1/moderations" and seen["body"]["input"] == "hello"
    # The provider's credential, never the client's key.
    assert TEST_KEY not in str(seen["headers"])
    assert seen["headers"]["authorization"].startswith("Bearer ")


def test_images_are_metered_from_the_reported_usage(stack):
    rid = "img-" + uuid.uuid4().hex
    r = sdk(stack, rid=rid).images.generate(model="gpt-image-1", prompt="a lighthouse")
    assert r.data[0].b64_json
    rec = stack.wait_usage(rid)
    assert rec["operation"] == "passthrough /v1/images/generations", rec
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (12, 272), rec
    assert rec["provider"] == "mock" and rec["usage_source"] == "provider", rec


def test_audio_multipart_and_binary(stack):
    rid = "aud-" + uuid.uuid4().hex
    t = sdk(stack, rid=rid).audio.transcriptions.create(
        model="whisper-1", file=("a.wav", b"RIFF" + b"\0" * 2000, "audio/wav"))
    assert t.text.startswith("mock transcript")
    rec = stack.wait_usage(rid)
    assert (rec["prompt_tokens"], rec["completion_tokens"]) == (40, 6), rec
    speech = sdk(stack).audio.speech.create(model="tts-1", voice="alloy", input="hi")
    assert speech.content.startswith(b"ID3")


def test_the_keys_model_list_applies_where_the_body_names_a_model(stack):
    limited = sdk(stack, key=LIMITED_KEY)
    with pytest.raises(openai.NotFoundError):
        limited.moderations.create(model="omni-moderation-latest", input="x")
    # In a multipart form too.
    with pytest.raises(openai.NotFoundError):
        limited.audio.transcriptions.create(model="whisper-1", file=("a.wav", b"RIFF", "audio/wav"))
    with pytest.raises(openai.AuthenticationError):
        sdk(stack, key="sk-wrong").moderations.create(model="m", input="x")


def test_files_stream_through_unread(stack):
    c = sdk(stack)
    assert [f.id for f in c.files.list()] == ["file-mock"]
    payload = b'{"custom_id": "1"}\n' * 5000  # larger than the JSON body limit
    f = c.files.create(file=("batch.jsonl", payload, "application/jsonl"), purpose="batch")
    assert f.id == "file-mock" and f.bytes > len(payload)


def test_unconfigured_endpoints_and_methods(stack):
    with httpx.Client(base_url=stack.url, timeout=20) as h:
        r = h.post("/v1/batches", headers=auth(), json={})
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
        r = h.delete("/v1/moderations", headers=auth())
        assert r.status_code == 405
        r = h.post("/v1/audio/transcriptions", headers={**auth(), "content-type": "multipart/form-data; boundary=x"},
                   content=b"x" * 1_100_000)
        assert r.status_code == 413
