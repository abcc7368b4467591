#!/usr/bin/env python3
"""Builds the seed baseline (replay-baseline/baselines/seed-v1.jsonl) the way
an operator builds one: a managed Sluice stack with capture on (every
request sampled), traffic through it, and the control plane's sanitized
capture files as the result.

The traffic covers every client dialect x provider kind, stream and not,
text and tools, the real provider recordings in
../shared/fixtures/provider-recordings (thinking, tool-call streams, Gemini 3
partial arguments, Azure, Groq, DeepSeek, provider errors), injected provider
errors, and the gateway's own answers (unknown model, guardrail block,
malformed body). PII in some prompts shows the sanitizer at work.

    python3 replay-baseline/seed/make_seed.py [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "envoy"))
import launch  # noqa: E402

REPLAY_KEY = "sk-sluice-replay"
OUT = ROOT / "replay-baseline/baselines/seed-v1.jsonl"

MODELS = {"openai": "mock-gpt", "anthropic": "mock-claude", "gemini": "mock-gemini"}
TOOL = {"name": "get_weather", "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}


def replay_config() -> dict:
    """The demo providers and models, a replay key, a guardrail policy (a
    block rule and an email mask on requests) and capture of everything."""
    cfg = launch.demo_config(with_real=False)
    cfg["version"] = "replay-seed"
    cfg["keys"].append({"id": "replay", "name": "replay",
                        "sha256": __import__("hashlib").sha256(REPLAY_KEY.encode()).hexdigest()})
    cfg["guardrails"] = {"rules": [
        {"name": "no-codeword", "detector": {"regex": "BLOCK-ME-[0-9]+"}, "action": "block",
         "on": "request"},
        {"name": "mask-email", "detector": "email", "action": "mask", "on": "request"},
    ]}
    cfg["capture"] = {"sample_rate": 1.0, "min_per_stratum": 1000, "max_record_bytes": 2 << 20}
    return cfg


def request(dialect: str, model: str, *, stream: bool, tools: bool, text: str) -> tuple:
    """(path, headers, body) in a client dialect."""
    if dialect == "openai":
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        if tools:
            body["tools"] = [{"type": "function", "function": TOOL}]
        return "/v1/chat/completions", {"authorization": f"Bearer {REPLAY_KEY}"}, body
    if dialect == "anthropic":
        body = {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": text}]}
        if stream:
            body["stream"] = True
        if tools:
            body["tools"] = [{"name": TOOL["name"], "description": TOOL["description"],
                              "input_schema": TOOL["parameters"]}]
        return "/v1/messages", {"x-api-key": REPLAY_KEY, "anthropic-version": "2023-06-01"}, body
    body = {"contents": [{"role": "user", "parts": [{"text": text}]}],
            "generationConfig": {"maxOutputTokens": 256}}
    if tools:
        body["tools"] = [{"functionDeclarations": [TOOL]}]
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"/v1beta/models/{model}:{action}", {"x-goog-api-key": REPLAY_KEY}, body


# (recording, provider kind, stream)
RECORDINGS = [
    ("openai/openai-text", "openai", False),
    ("openai/openai-text", "openai", True),
    ("openai/azure-model-router.1", "openai", True),
    ("openai-compatible/groq-tool-call", "openai", True),
    ("openai-compatible/deepseek-tool-call", "openai", True),
    ("anthropic/anthropic-text", "anthropic", False),
    ("anthropic/anthropic-text", "anthropic", True),
    ("anthropic/anthropic-clear-thinking.1", "anthropic", True),
    ("anthropic/anthropic-json-tool.1", "anthropic", False),
    ("anthropic/anthropic-json-tool.1", "anthropic", True),
    ("anthropic/anthropic-tool-no-args", "anthropic", False),
    ("anthropic/anthropic-tool-no-args", "anthropic", True),
    ("google/google-text", "gemini", False),
    ("google/google-text", "gemini", True),
    ("google/google-tool-call", "gemini", False),
    ("google/google-tool-call", "gemini", True),
    ("google/google-reasoning", "gemini", True),
    ("google/google-tool-call-gemini3", "gemini", True),
    ("google/google-stream-tool-call-arguments", "gemini", True),
    ("google/google-429-retry-info", "gemini", False),
]


def cases() -> list[dict]:
    out = []
    for dialect in ("openai", "anthropic", "gemini"):
        for kind, model in MODELS.items():
            for stream in (False, True):
                for tools in (False, True):
                    text = ("What is the weather in Paris?" if tools else
                            "Say hello. My email is jane.doe@example.com.")
                    out.append({"label": f"{dialect}>{kind} {'stream' if stream else 'json'}"
                                         f"{' tools' if tools else ''}",
                                "req": request(dialect, model, stream=stream, tools=tools,
                                               text=text), "headers": {}})
        for name, kind, stream in RECORDINGS:
            tools = "tool" in name
            out.append({"label": f"{dialect}>{kind} recording {name}{' stream' if stream else ''}",
                        "req": request(dialect, MODELS[kind], stream=stream, tools=tools,
                                       text="Replay a recorded answer."),
                        "headers": {"x-mock-replay": name}})
        for kind, status in (("openai", 429), ("openai", 500), ("anthropic", 529),
                             ("gemini", 503)):
            out.append({"label": f"{dialect}>{kind} provider error {status}",
                        "req": request(dialect, MODELS[kind], stream=False, tools=False,
                                       text="This call fails upstream."),
                        "headers": {"x-mock-error": str(status)}})
        out.append({"label": f"{dialect} unknown model",
                    "req": request(dialect, "no-such-model", stream=False, tools=False,
                                   text="Hi")
                    if dialect != "gemini" else request(dialect, "no-such-model", stream=False,
                                                        tools=False, text="Hi"),
                    "headers": {}})
        out.append({"label": f"{dialect} guardrail block",
                    "req": request(dialect, MODELS["openai"], stream=False, tools=False,
                                   text="The codeword is BLOCK-ME-42."), "headers": {}})
        path, headers, _ = request(dialect, MODELS["openai"], stream=False, tools=False, text="")
        out.append({"label": f"{dialect} malformed body", "req": (path, headers, "{not json"),
                    "headers": {}})
    return out


def send(base: str, case: dict) -> int:
    path, headers, body = case["req"]
    data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method="POST", headers={
        "content-type": "application/json", **headers, **case["headers"]})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def capture(out: Path) -> int:
    workdir = Path(__import__("tempfile").mkdtemp(prefix="sluice-seed-"))
    capdir = workdir / "captures"
    with launch.Stack(replay_config(), workdir=workdir, managed=True, capture_dir=capdir) as st:
        todo = cases()
        for c in todo:
            c["status"] = send(st.url, c)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            cap = st.cp.api("GET", "/v1/status")["capture"]
            if cap["written"] + cap["dropped"] >= len(todo):
                break
            time.sleep(0.2)
        if cap["dropped"]:
            raise SystemExit(f"{cap['dropped']} capture records dropped; see {workdir}")
    records = []
    for f in sorted(capdir.glob("capture-*.jsonl")):
        records += [json.loads(l) for l in f.read_text().splitlines() if l.strip()]
    if len(records) != len(todo):
        raise SystemExit(f"{len(records)} records captured for {len(todo)} requests")
    # Requests were sent one at a time to one worker: capture order is
    # request order (checked against each answer's status and route).
    lines = []
    for i, (r, c) in enumerate(zip(records, todo)):
        if (r["client_response"]["status"], r["route"]) != (c["status"], c["req"][0].split("?")[0]):
            raise SystemExit(f"capture {i} does not match request {c['label']}")
        r["id"] = f"seed-{i:03d}"
        r["meta"]["tags"] = sorted(set(r["meta"].get("tags", [])) | {c["label"]})
        lines.append(json.dumps(r, sort_keys=True))
    out.write_text("# sluice-replay/1 seed baseline, built by replay-baseline/seed/make_seed.py "
                   "(recordings: vercel/ai, Apache-2.0, see ../shared/fixtures/provider-"
                   "recordings/SOURCES.md)\n" + "\n".join(lines) + "\n")
    print(f"{len(lines)} records → {out}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT)
    return capture(p.parse_args().out)


if __name__ == "__main__":
    sys.exit(main())
