"""Replay baselines end to end: the seed set through two real Envoys with the
built filter (primary = shadow: no diffs; an altered shadow: diffs found,
attributed, gate fails), capture through the control plane (sampled,
sanitized, replayable), and the online shadow (Envoy mirroring, digests
paired by the control plane)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from conftest import ROOT, launch

sys.path.insert(0, str(ROOT / "replay-baseline/seed"))
import make_seed  # noqa: E402

SEED = ROOT / "replay-baseline/baselines/seed-v1.jsonl"
REPLAY = ROOT / "target/release/sluice-replay"


def config(**changes) -> dict:
    cfg = make_seed.replay_config()
    del cfg["capture"]
    cfg.update(changes)
    return cfg


def altered(cfg: dict) -> dict:
    """A shadow that routes mock-claude elsewhere and masks a word in answers."""
    alt = copy.deepcopy(cfg)
    for m in alt["models"]:
        if m["name"] == "mock-claude":
            m["targets"][0]["model"] = "mock-claude-v2"
    alt["guardrails"]["rules"].append(
        {"name": "mask-sluice", "detector": {"regex": "Sluice"}, "action": "mask",
         "on": "response"})
    return alt


def replay(tmp: Path, *args: str) -> tuple[int, dict, str]:
    out = tmp / "report.json"
    p = subprocess.run([str(REPLAY), "run", "--api-key", make_seed.REPLAY_KEY,
                        "--json-out", str(out), "--max-seconds", "120", *args],
                       capture_output=True, text=True, timeout=180)
    assert p.returncode in (0, 1), p.stderr
    return p.returncode, json.loads(out.read_text()), p.stdout


@pytest.fixture(scope="module")
def replay_mock(tmp_path_factory):
    wd = tmp_path_factory.mktemp("replay-mock")
    mock = launch.Mock(wd, replay=[SEED])
    yield mock
    mock.stop()


@pytest.fixture(scope="module")
def primary(replay_mock, tmp_path_factory):
    with launch.Stack(config(), workdir=tmp_path_factory.mktemp("primary"),
                      mock=replay_mock) as st:
        yield st


def test_seed_covers_every_dialect_and_provider_pair():
    p = subprocess.run([str(REPLAY), "summary", "--baseline", str(SEED)],
                       capture_output=True, text=True, timeout=30, check=True)
    rows = [l.split() for l in p.stdout.splitlines()[1:-1]]
    pairs = {(r[0], r[1], r[2], r[3]) for r in rows}
    for d in ("openai", "anthropic", "gemini"):
        for k in ("openai", "anthropic", "gemini"):
            for stream in ("true", "false"):
                for tools in ("true", "false"):
                    assert (d, k, stream, tools) in pairs, (d, k, stream, tools)
    text = SEED.read_text()
    assert "jane.doe" not in text and "sk-sluice-replay" not in text
    assert "mock-provider-secret" not in text
    for tag in ("anthropic-clear-thinking", "google-tool-call-gemini3", "provider error 529",
                "guardrail block", "malformed body"):
        assert tag in text, tag


def test_same_build_replays_the_seed_with_no_diffs(primary, replay_mock, tmp_path):
    with launch.Stack(config(), workdir=tmp_path / "shadow", mock=replay_mock) as shadow:
        code, rep, out = replay(tmp_path, "--baseline", str(SEED), "--primary", primary.url,
                                "--shadow", shadow.url, "--upstream-log", replay_mock.url)
    assert code == 0, out
    assert rep["compared"] == rep["records"] > 100
    assert rep["diff_records"] == 0 and rep["shadow_errors"] == 0, out
    assert rep["gate"]["passed"]
    # The answers were real: streams, errors and gateway answers among them.
    statuses = {r["shadow_status"] for r in rep["results"]}
    assert {200, 400, 404, 429}.issubset(statuses), statuses


def test_altered_shadow_is_caught_attributed_and_gated(primary, replay_mock, tmp_path):
    with launch.Stack(altered(config()), workdir=tmp_path / "shadow",
                      mock=replay_mock) as shadow:
        code, rep, out = replay(tmp_path, "--baseline", str(SEED), "--primary", primary.url,
                                "--shadow", shadow.url, "--upstream-log", replay_mock.url)
    assert code == 1, out
    assert not rep["gate"]["passed"]
    assert any("diff rate" in f for f in rep["gate"]["failures"])
    by = rep["by_module"]
    assert by["routing"]["diffs"] > 0 and by["guardrail"]["diffs"] > 0, out
    # The re-routed model shows as a routing diff in what went upstream.
    claude = [r for r in rep["results"] if r["provider"] == "mock-anthropic"
              and r["primary_status"] == 200]
    assert claude and all("routing" in r["modules"] for r in claude)
    assert any(d["side"] == "upstream_request" and d["path"] == "model"
               and d["b"] == "mock-claude-v2" for r in claude for d in r["diffs"])
    # The mask shows as a guardrail diff with its path, stream and not.
    masked = [d for r in rep["results"] for d in r["diffs"] if d["module"] == "guardrail"]
    assert any(d["side"] == "content" for d in masked)
    assert any(d["side"] == "response" for d in masked)
    # Gateway-answered records (no upstream) did not change.
    local = [r for r in rep["results"] if r["provider"] is None]
    assert local and all(r["outcome"] == "match" for r in local)


def test_module_gate_and_recorded_answers_as_primary(replay_mock, tmp_path):
    with launch.Stack(config(), workdir=tmp_path / "shadow", mock=replay_mock) as shadow:
        # Against the recorded answers themselves, with a strict usage gate.
        code, rep, out = replay(tmp_path, "--baseline", str(SEED), "--shadow", shadow.url,
                                "--module-max", "usage=0", "--max-p95-delta-ms", "1000",
                                "--upstream-log", replay_mock.url)
    assert rep["latency_primary"] is None
    assert rep["by_module"]["usage"]["diffs"] == 0, out
    assert rep["by_module"]["streaming"]["diffs"] == 0, out
    # A build replayed against its own baseline passes the gate in this mode
    # too: the recorded upstream requests hold the gateway's masks, the
    # sanitized client requests the sanitizer's placeholders — the same
    # redacted values, not translation differences.
    assert rep["diff_records"] == 0 and code == 0 and rep["gate"]["passed"], out


def test_capture_is_sampled_sanitized_and_replays(tmp_path):
    cfg = config(capture={"sample_rate": 0.5, "min_per_stratum": 1, "max_record_bytes": 65536})
    capdir = tmp_path / "captures"
    with launch.Stack(cfg, workdir=tmp_path / "cap", managed=True, capture_dir=capdir) as st:
        hdr = {"authorization": f"Bearer {make_seed.REPLAY_KEY}"}
        body = {"model": "mock-claude", "messages": [
            {"role": "user", "content": "I am jane.doe@example.com, SSN 123-45-6789, "
                                        "key sk-proj-abcdefghijklmnopqrstuvwx"}]}
        with httpx.Client(timeout=10) as c:
            for _ in range(4):  # one stratum: the 1st and 3rd are kept
                assert c.post(st.url + "/v1/chat/completions", json=body,
                              headers=hdr).status_code == 200
            r = c.post(st.url + "/v1/chat/completions", headers=hdr,  # another stratum
                       json={**body, "stream": True})
            assert r.status_code == 200
            big = {**body, "model": "mock-gpt", "messages": [
                {"role": "user", "content": "x" * 70000}]}
            assert c.post(st.url + "/v1/chat/completions", json=big,
                          headers=hdr).status_code == 200  # over max_record_bytes
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            cap = st.cp.api("GET", "/v1/status")["capture"]
            if cap["written"] >= 3:
                break
            time.sleep(0.1)
        status = st.cp.cli("status").stdout
    assert cap["written"] == 3 and cap["received"] == 3, cap
    assert "capture: 3 received, 3 written" in status
    files = list(capdir.glob("capture-*.jsonl"))
    text = "".join(f.read_text() for f in files)
    for leak in ("jane.doe", "123-45-6789", "sk-proj", make_seed.REPLAY_KEY,
                 launch.MOCK_PROVIDER_SECRET):
        assert leak not in text, leak
    recs = [json.loads(l) for l in text.splitlines()]
    assert [r["meta"]["stream"] for r in recs] == [False, False, True]
    assert all(r["versions"]["sanitizer"] == "sanitize_v1" for r in recs)
    assert recs[2]["client_response"]["events"] and recs[2]["upstream"]["response"]["events"]
    assert recs[0]["upstream"]["kind"] == "anthropic"
    assert "[SSN sha256:" in json.dumps(recs[0]["client_request"]["body"])
    # A sanitized capture still replays through the build that made it.
    baseline = tmp_path / "captured.jsonl"
    baseline.write_text(text)
    mock = launch.Mock(tmp_path, replay=[baseline])
    try:
        with launch.Stack(config(), workdir=tmp_path / "p", mock=mock) as p, \
                launch.Stack(config(), workdir=tmp_path / "s", mock=mock) as s:
            code, rep, out = replay(tmp_path, "--baseline", str(baseline), "--primary", p.url,
                                    "--shadow", s.url, "--upstream-log", mock.url)
    finally:
        mock.stop()
    assert code == 0 and rep["compared"] == 3 and rep["diff_records"] == 0, out


def test_online_shadow_pairs_digests_and_counts_diffs(tmp_path):
    primary_cfg = config(shadow={"role": "primary"})
    shadow_cfg = altered(config(shadow={"role": "shadow"}))
    shadow_cfg["guardrails"]["rules"].pop()  # only the routing change
    with launch.Stack(primary_cfg, workdir=tmp_path, managed=True,
                      shadow={"config": shadow_cfg, "percent": 100}) as st:
        hdr = {"authorization": f"Bearer {make_seed.REPLAY_KEY}"}
        with httpx.Client(timeout=10) as c:
            for model in ["mock-gpt"] * 6 + ["mock-claude"] * 4:
                r = c.post(st.url + "/v1/chat/completions", headers=hdr, json={
                    "model": model, "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            s = st.cp.api("GET", "/v1/status")
            if s["shadow"]["pairs"] >= 10 and s["ledger_rows"] >= 10:
                break
            time.sleep(0.2)
        out = st.cp.cli("status").stdout
    sh = s["shadow"]
    assert sh["pairs"] == 10, s
    assert sh["diffs"] == 4 and sh["shadow_errors"] == 0, sh
    assert all(not d["same_upstream_request"] for d in sh["recent_diffs"])
    # Only the primary's calls are charged.
    assert s["ledger_rows"] == 10
    assert "shadow: 10 pairs, diff rate 40.00% (4)" in out
