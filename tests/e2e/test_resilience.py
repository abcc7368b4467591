"""Resilience end to end (docs/routing.md): retries, fallback to a provider of
another kind with per-attempt translation, first-byte timeouts, the circuit,
providers added by URL at run time — a real Envoy, a control plane pushing
the clusters over CDS, and mock providers told to fail per request and per
wire format. Clients are the official SDKs where a user would use them."""
from __future__ import annotations

import json
import socket
import sqlite3
import time
import uuid

import httpx
import pytest

import launch
from conftest import TEST_KEY, sha
from test_translation import run_anthropic, run_gemini, run_openai

PRICES = {"mock-gpt-upstream": {"input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06,
                                "mode": "chat"},
          "mock-claude-upstream": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                                   "mode": "chat"},
          "mock-gemini-upstream": {"input_cost_per_token": 5e-07, "output_cost_per_token": 1e-06,
                                   "mode": "chat"}}


def providers(a: str, b: str, dead: str) -> list[dict]:
    key = {"api_key_env": "SLUICE_MOCK_API_KEY"}
    return [
        {"name": "oa", "kind": "openai", "base_url": a + "/v1", **key},
        {"name": "an", "kind": "anthropic", "base_url": a,
         "auth": {"type": "header", "name": "x-api-key"}, **key},
        {"name": "ge", "kind": "gemini", "base_url": a,
         "auth": {"type": "header", "name": "x-goog-api-key"}, **key},
        # A second mock: its request log shows only this provider's attempts.
        {"name": "oa-b", "kind": "openai", "base_url": b + "/v1", **key},
        # Nothing listens there: connection refused.
        {"name": "dead", "kind": "openai", "base_url": dead + "/v1", **key},
    ]


def target(p, m, prio=0):
    return {"provider": p, "model": m, "priority": prio}


GPT, CLAUDE, GEM = "mock-gpt-upstream", "mock-claude-upstream", "mock-gemini-upstream"


def models() -> list[dict]:
    return [
        # Each client dialect's primary fails over to another kind.
        {"name": "gpt-fb", "targets": [target("oa", GPT), target("an", CLAUDE, 1)],
         "retry": {"attempts": 3}},
        {"name": "claude-fb", "targets": [target("an", CLAUDE), target("ge", GEM, 1)],
         "retry": {"attempts": 3}},
        {"name": "gem-fb", "targets": [target("ge", GEM), target("oa", GPT, 1)],
         "retry": {"attempts": 3}},
        # One target, retried in place (429 + retry-after).
        {"name": "gpt-retry", "targets": [target("oa", GPT)],
         "retry": {"attempts": 3, "on": ["rate_limited", "server_error"]}},
        {"name": "gpt-refused", "targets": [target("dead", GPT), target("an", CLAUDE, 1)]},
        {"name": "gpt-slow", "targets": [target("oa", GPT), target("an", CLAUDE, 1)],
         "retry": {"attempts": 2, "on": ["timeout"]}, "timeouts": {"first_byte_ms": 400}},
        # Every attempt stalls: the count and the total time bound it.
        {"name": "gpt-bounded", "targets": [target("oa", GPT), target("an", CLAUDE, 1)],
         "retry": {"attempts": 3, "on": ["timeout"]},
         "timeouts": {"first_byte_ms": 300, "total_ms": 1000}},
        {"name": "gpt-circuit", "targets": [target("oa-b", GPT), target("an", CLAUDE, 1)],
         "retry": {"attempts": 2}, "cooldown": {"consecutive_failures": 2, "seconds": 3}},
        # No policy: one attempt, whatever the client asks.
        {"name": "gpt-plain", "targets": [target("oa", GPT)]},
    ]


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    wd = tmp_path_factory.mktemp("resilience")
    a, b, hole = launch.Mock(wd), None, None
    try:
        bdir = wd / "b"
        bdir.mkdir()
        b = launch.Mock(bdir)
        # A port bound but never listened on refuses connections, and no
        # process started later (Envoy, the control plane) can take it.
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{hole.getsockname()[1]}"
        cfg = {"keys": [{"id": "k-res", "sha256": sha(TEST_KEY)}],
               "providers": providers(a.url, b.url, dead), "models": models()}
        # Two workers: a plan lives in the VM of the worker that has the
        # request, and its attempts must find it there.
        s = launch.Stack(cfg, workdir=wd, managed=True, mock=a, concurrency=2)
    except BaseException:
        a.stop()
        if b:
            b.stop()
        if hole:
            hole.close()
        raise
    f = wd / "prices.json"
    f.write_text(json.dumps(PRICES))
    s.cp.cli("prices", "import", str(f))
    s.mock_b = b
    yield s
    s.stop()
    a.stop()
    b.stop()
    hole.close()


def post(s, model, headers=None, stream=False, path="/v1/chat/completions", timeout=20):
    rid = uuid.uuid4().hex
    body = {"model": model, "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        body["stream"] = True
    h = {"Authorization": f"Bearer {TEST_KEY}", "x-request-id": rid, **(headers or {})}
    with httpx.Client(timeout=timeout) as c:
        if stream:
            with c.stream("POST", s.url + path, json=body, headers=h) as r:
                r.read()
                return r, rid
        return c.post(s.url + path, json=body, headers=h), rid


def formats(mock, since: int = 0) -> list[str]:
    """The wire format of each request the mock got (after `since`)."""
    out = []
    for r in mock.requests()[since:]:
        p = r["path"]
        out.append("openai" if p.endswith("/chat/completions") else
                   "anthropic" if p.endswith("/messages") else "gemini")
    return out


def ledger_row(s, rid: str, timeout: float = 15) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{s.cp.db}?mode=ro", uri=True) as c:
            c.row_factory = sqlite3.Row
            rows = c.execute("SELECT * FROM usage WHERE request_id = ?", (rid,)).fetchall()
        if rows:
            assert len(rows) == 1, "one request, one charge"
            return dict(rows[0])
        time.sleep(0.1)
    status = s.cp.api("GET", "/v1/status")
    # What Envoy's access loggers did (written, dropped), to tell a record
    # never sent from one lost on the way.
    stats = httpx.get(s.envoy.admin + "/stats?filter=access_log", timeout=5).text
    raise AssertionError(f"no ledger row for {rid}: {json.dumps(status)[:1500]}\n{stats}")


FAIL_OPENAI = {"x-mock-error": "500", "x-mock-error-for": "openai"}
FAIL_ANTHROPIC = {"x-mock-error": "529", "x-mock-error-for": "anthropic"}
FAIL_GEMINI = {"x-mock-error": "503", "x-mock-error-for": "gemini"}


def test_clusters_are_pushed_over_cds(res):
    with urlopen(res.envoy.admin + "/clusters?format=json") as r:
        names = {c["name"] for c in json.loads(r.read())["cluster_statuses"]}
    assert {"sluice_model_gpt-fb", "sluice_provider_oa", "sluice_model_gpt-circuit"} <= names
    assert "sluice_model_gpt-plain" not in names, "no policy, no cluster of its own"


def urlopen(url):
    import urllib.request
    return urllib.request.urlopen(url, timeout=5)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openai_client_falls_back_to_anthropic(res, stream):
    n = len(res.mock.requests())
    rid = uuid.uuid4().hex
    text, _, finish = run_openai(res, "gpt-fb", stream, tools=False,
                                 headers={**FAIL_OPENAI, "x-request-id": rid})
    assert text.startswith("Hello from the Sluice mock provider")
    assert finish == "stop"
    assert formats(res.mock, n) == ["openai", "anthropic"]
    rec = res.wait_usage(rid)
    assert (rec["provider"], rec["upstream_model"], rec["status"]) == ("an", CLAUDE, 200)
    assert [(a["provider"], a["status"]) for a in rec["attempts"]] == [("oa", 500), ("an", 200)]
    assert rec["completion_tokens"] > 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_anthropic_client_falls_back_to_gemini(res, stream):
    n = len(res.mock.requests())
    rid = uuid.uuid4().hex
    text, _, stop = run_anthropic(res, "claude-fb", stream, tools=False,
                                  headers={**FAIL_ANTHROPIC, "x-request-id": rid})
    assert text.startswith("Hello from the Sluice mock provider")
    assert stop == "end_turn"
    assert formats(res.mock, n) == ["anthropic", "gemini"]
    rec = res.wait_usage(rid)
    assert rec["provider"] == "ge"
    assert [a["outcome"] for a in rec["attempts"]] == ["server_error", "ok"]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_gemini_client_falls_back_to_openai(res, stream):
    n = len(res.mock.requests())
    rid = uuid.uuid4().hex
    text, _, finish = run_gemini(res, "gem-fb", stream, tools=False,
                                 headers={**FAIL_GEMINI, "x-request-id": rid})
    assert text.startswith("Hello from the Sluice mock provider")
    assert finish == "STOP"
    assert formats(res.mock, n) == ["gemini", "openai"]
    assert res.wait_usage(rid)["provider"] == "oa"


def test_tools_survive_a_fallback_to_another_kind(res):
    text, calls, finish = run_openai(res, "gpt-fb", False, tools=True, headers=FAIL_OPENAI)
    assert calls and calls[0][0] == "get_weather" and "city" in calls[0][1]
    assert finish == "tool_calls"


def test_the_answer_names_its_provider_and_attempts_and_the_ledger_charges_it_once(res):
    r, rid = post(res, "gpt-fb", FAIL_OPENAI)
    assert r.status_code == 200, r.text
    assert (r.headers["x-sluice-provider"], r.headers["x-sluice-attempts"]) == ("an", "2")
    assert r.json()["object"] == "chat.completion"
    row = ledger_row(res, rid)
    assert (row["provider"], row["upstream_model"]) == ("an", CLAUDE)
    attempts = json.loads(row["attempts"])
    assert [(a["provider"], a["status"], a["outcome"]) for a in attempts] == [
        ("oa", 500, "server_error"), ("an", 200, "ok")]
    assert all(a["latency_ms"] >= 0 for a in attempts)
    # Charged what the answering provider bills: Claude's price, not GPT's.
    want = row["prompt_tokens"] * 3e-06 + row["completion_tokens"] * 1.5e-05
    assert row["cost_usd"] == pytest.approx(want)


def test_429_with_retry_after_then_success_on_the_same_target(res):
    key = uuid.uuid4().hex
    n = len(res.mock.requests())
    start = time.monotonic()
    r, rid = post(res, "gpt-retry", {"x-mock-error": "429", "x-mock-error-times": "1",
                                     "x-mock-error-key": key, "x-mock-retry-after": "1"})
    took = time.monotonic() - start
    assert r.status_code == 200, r.text
    assert r.headers["x-sluice-attempts"] == "2"
    assert formats(res.mock, n) == ["openai", "openai"]
    assert took >= 0.9, "the provider's retry-after was waited out"
    rec = res.wait_usage(rid)
    assert [a["outcome"] for a in rec["attempts"]] == ["rate_limited", "ok"]


def test_connection_refused_falls_back(res):
    for stream in (False, True):
        n = len(res.mock.requests())
        r, rid = post(res, "gpt-refused", stream=stream)
        assert r.status_code == 200
        assert formats(res.mock, n) == ["anthropic"]
        rec = res.wait_usage(rid)
        assert [(a["provider"], a["outcome"]) for a in rec["attempts"]] == [
            ("dead", "no_response"), ("an", "ok")]


def test_first_byte_timeout_falls_back(res):
    stall = {"x-mock-first-byte-delay-ms": "3000", "x-mock-first-byte-delay-for": "openai"}
    for stream in (False, True):
        start = time.monotonic()
        r, rid = post(res, "gpt-slow", stall, stream=stream)
        took = time.monotonic() - start
        assert r.status_code == 200
        assert r.headers["x-sluice-provider"] == "an"
        assert 0.35 < took < 2.5, took
        rec = res.wait_usage(rid)
        assert rec["attempts"][0]["outcome"] == "no_response"
        assert rec["attempts"][0]["latency_ms"] >= 350
    # A stream that started in time may take longer than the first-byte
    # timeout to finish (8 chunks 150 ms apart): it is not cut.
    n = len(res.mock.requests())
    r, rid = post(res, "gpt-slow", {"x-mock-delay-ms": "150"}, stream=True)
    assert r.status_code == 200 and r.headers["x-sluice-attempts"] == "1"
    assert b"[DONE]" in r.content
    assert formats(res.mock, n) == ["openai"]
    assert res.wait_usage(rid)["completed"] is True


def test_attempts_are_bounded_in_count_and_total_time(res):
    n = len(res.mock.requests())
    start = time.monotonic()
    r, rid = post(res, "gpt-bounded", {"x-mock-first-byte-delay-ms": "5000"})
    took = time.monotonic() - start
    # The total timeout (1 s) ends it before the third attempt's first byte.
    assert r.status_code == 504
    assert took < 2.0, took
    assert r.json()["error"]["message"].startswith("No provider of the model 'gpt-bounded'")
    assert len(res.mock.requests()) - n <= 3
    # A failure everywhere, quickly: the count bounds it (3 attempts).
    n = len(res.mock.requests())
    r, _ = post(res, "gpt-retry", {"x-mock-error": "500"})
    assert r.status_code == 500
    assert r.headers["x-sluice-attempts"] == "3"
    assert len(res.mock.requests()) - n == 3
    assert r.json()["error"]["message"]


def test_a_mid_stream_failure_is_not_retried(res):
    for header in ("x-mock-stream-error-after", "x-mock-stream-abort-after"):
        n = len(res.mock.requests())
        rid = uuid.uuid4().hex
        # Chunks 50 ms apart: the answer's headers reach Envoy before the
        # failure (a reset before them would be retried, rightly).
        h = {"Authorization": f"Bearer {TEST_KEY}", "x-request-id": rid, header: "3",
             "x-mock-delay-ms": "50"}
        body = {"model": "gpt-fb", "stream": True,
                "messages": [{"role": "user", "content": "hello"}]}
        got = b""
        with httpx.Client(timeout=20) as c:
            try:
                with c.stream("POST", res.url + "/v1/chat/completions", json=body,
                              headers=h) as r:
                    assert r.status_code == 200
                    for chunk in r.iter_raw():
                        got += chunk
            except httpx.HTTPError:
                pass  # the connection broke with the provider's
        assert b"Hello" in got
        assert formats(res.mock, n) == ["openai"], "no second attempt after the first byte"
        rec = res.wait_usage(rid)
        assert rec["completed"] is False
        assert len(rec["attempts"]) == 1
        if header == "x-mock-stream-error-after":
            # The provider's error event, in the client's dialect.
            assert b'"error"' in got


def test_the_circuit_opens_after_n_failures_and_closes_after_the_cooldown(res):
    b = res.mock_b
    b.clear()
    for _ in range(2):
        r, _ = post(res, "gpt-circuit", FAIL_OPENAI)
        assert r.status_code == 200 and r.headers["x-sluice-provider"] == "an"
    assert len(b.requests()) == 2
    # Open: the primary gets no attempt at all while it cools down.
    for _ in range(4):
        r, rid = post(res, "gpt-circuit")
        assert r.status_code == 200 and r.headers["x-sluice-provider"] == "an"
        assert r.headers["x-sluice-attempts"] == "1"
    assert len(b.requests()) == 2, "no attempts during the cooldown"
    ejected = res.envoy.stats("cluster.sluice_model_gpt-circuit.outlier_detection")
    assert ejected["cluster.sluice_model_gpt-circuit.outlier_detection.ejections_active"] == 1
    # Closed again after it (3 s; Envoy checks every second).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r, _ = post(res, "gpt-circuit")
        if r.headers["x-sluice-provider"] == "oa-b":
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the circuit never closed")
    assert len(b.requests()) == 3


def test_clients_cannot_buy_themselves_retries(res):
    n = len(res.mock.requests())
    r, _ = post(res, "gpt-plain", {"x-mock-error": "500", "x-envoy-max-retries": "5",
                                   "x-envoy-retry-on": "5xx"})
    assert r.status_code == 500
    assert len(res.mock.requests()) - n == 1
    seen = res.mock.requests()[-1]["headers"]
    assert not any(h.startswith("x-envoy-retry") or h == "x-envoy-max-retries" for h in seen)


def test_no_credential_of_another_provider_reaches_the_fallback(res):
    n = len(res.mock.requests())
    r, _ = post(res, "gpt-fb", FAIL_OPENAI)
    assert r.status_code == 200
    first, second = res.mock.requests()[n:n + 2]
    assert first["headers"]["authorization"] == f"Bearer {launch.MOCK_PROVIDER_SECRET}"
    assert "authorization" not in second["headers"], "the OpenAI key went to Anthropic"
    assert second["headers"]["x-api-key"] == launch.MOCK_PROVIDER_SECRET
    assert "x-sluice-credential" not in second["headers"]


def test_a_provider_added_by_url_while_traffic_runs_serves_the_next_request(res, tmp_path):
    extra = launch.Mock(tmp_path)
    try:
        stop, errors, done = False, [], [0]

        import threading

        def traffic():
            while not stop:
                r, _ = post(res, "gpt-plain")
                if r.status_code != 200:
                    errors.append(r.status_code)
                done[0] += 1
        t = threading.Thread(target=traffic)
        t.start()
        try:
            res.cp.cli("providers", "add", "--name", "vllm", "--kind", "openai",
                       "--base-url", extra.url + "/v1", "--credential-env", "SLUICE_MOCK_API_KEY")
            res.cp.cli("models", "set", "vllm-model", "--target", "vllm:served-model")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                r, _ = post(res, "vllm-model")
                if r.status_code == 200:
                    break
                time.sleep(0.05)
            assert r.status_code == 200, r.text
            assert extra.requests()[-1]["body"]["model"] == "served-model"
            assert extra.requests()[-1]["headers"]["authorization"].endswith(
                launch.MOCK_PROVIDER_SECRET)
        finally:
            stop = True
            t.join(timeout=30)
        assert done[0] > 0 and errors == [], errors
    finally:
        res.cp.cli("models", "delete", "vllm-model", check=False)
        res.cp.cli("providers", "delete", "vllm", check=False)
        extra.stop()


def test_attempt_metrics_per_provider(res):
    post(res, "gpt-fb", FAIL_OPENAI)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with urlopen(res.envoy.admin + "/stats/prometheus") as r:
            text = r.read().decode()
        lines = [ln for ln in text.splitlines() if ln.startswith("sluice_provider_attempts_total")]
        if any('provider="oa"' in ln and 'outcome="server_error"' in ln for ln in lines) and \
                any('provider="an"' in ln and 'outcome="ok"' in ln for ln in lines):
            return
        time.sleep(0.2)
    raise AssertionError(lines)


def test_keys_from_sds_are_injected_per_attempt_for_its_provider(tmp_path):
    """Provider keys the control plane serves over SDS (Kubernetes): each
    attempt gets only its own provider's key, added by Envoy."""
    mock = launch.Mock(tmp_path)
    try:
        cfg = {"keys": [{"id": "k", "sha256": sha(TEST_KEY)}],
               "providers": providers(mock.url, mock.url, mock.url)[:2],
               "models": [models()[0]]}
        with launch.Stack(cfg, workdir=tmp_path, managed=True, mock=mock, push_keys=True) as s:
            try:
                n = len(mock.requests())
                r, _ = post(s, "gpt-fb", FAIL_OPENAI)
                assert r.status_code == 200, r.text
                assert r.headers["x-sluice-provider"] == "an"
                first, second = mock.requests()[n:n + 2]
                secret = launch.MOCK_PROVIDER_SECRET
                assert first["headers"]["authorization"] == f"Bearer {secret}"
                assert second["headers"]["x-api-key"] == secret
                assert "authorization" not in second["headers"]
                assert "x-sluice-credential" not in first["headers"]
                # Nothing of the key in what Envoy shows of its config.
                with urlopen(s.envoy.admin + "/config_dump?include_eds") as d:
                    assert secret not in d.read().decode()
            finally:
                s.cp.stop()
    finally:
        mock.stop()
