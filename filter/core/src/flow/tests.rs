use super::upstream::UPSTREAM_REMOVE;
use super::*;
use crate::anthropic;
use crate::gateway::Gateway;
use serde_json::Value;

fn gw() -> Gateway {
    Gateway::new(gw_config(), |_| Some("prov-secret".into())).unwrap()
}

fn gw_config() -> sluice_config::PluginConfig {
    serde_json::from_value(serde_json::json!({
        "version": "cfg-7",
        "keys": [
            {"id": "k1", "sha256": sluice_config::hash_key("sk-1")},
            {"id": "k2", "sha256": sluice_config::hash_key("sk-2"), "models": ["other"]}
        ],
        "providers": [{"name": "mock", "kind": "openai", "cluster": "mock_cluster",
                       "host": "mock.local", "base_path": "/v1",
                       "api_key_env": "MOCK_KEY"}],
        "models": [
            {"name": "mock-gpt", "targets": [{"provider": "mock", "model": "gpt-up"}]},
            {"name": "other", "targets": [{"provider": "mock", "model": "o"}]}
        ],
        "limits": {"max_request_body_bytes": 2048, "max_sse_event_bytes": 1024}
    }))
    .unwrap()
}

fn head<'a>(method: &'a str, path: &'a str, auth: Option<&'a str>) -> RequestHead<'a> {
    RequestHead {
        method,
        path,
        authorization: auth,
        request_id: Some("rid-1"),
        ..Default::default()
    }
}

fn reply_json(step: HeadersStep) -> (u16, Value) {
    match step {
        HeadersStep::Reply(r) => (r.status, serde_json::from_slice(&r.body).unwrap()),
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn finish_json(f: &mut Flow, now: u64) -> Value {
    serde_json::from_slice(&f.finish(now, &crate::budget::MemoryStore::default())).unwrap()
}

#[test]
fn missing_unknown_and_wrong_keys_get_openai_401() {
    let g = gw();
    for auth in [None, Some("Bearer sk-nope"), Some("Basic xyz")] {
        let mut f = Flow::new(0);
        let (status, v) =
            reply_json(f.on_request_headers(&g, &head("POST", "/v1/chat/completions", auth)));
        assert_eq!(status, 401);
        assert_eq!(v["error"]["code"], "invalid_api_key");
        let rec = finish_json(&mut f, 5);
        assert_eq!(rec["status"], 401);
        assert_eq!(rec["error"], "invalid_api_key");
        assert_eq!(rec["key_id"], Value::Null);
    }
}

#[test]
fn models_list_is_per_key() {
    let g = gw();
    let (s, v) = reply_json(
        Flow::new(0).on_request_headers(&g, &head("GET", "/v1/models", Some("Bearer sk-2"))),
    );
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["id"], "other");
    let (s, _) = reply_json(
        Flow::new(0)
            .on_request_headers(&g, &head("GET", "/v1/models/mock-gpt", Some("Bearer sk-2"))),
    );
    assert_eq!(s, 404);
}

#[test]
fn unknown_paths_and_methods() {
    let g = gw();
    let (s, v) = reply_json(
        Flow::new(0).on_request_headers(&g, &head("POST", "/v1/embeddings", Some("Bearer sk-1"))),
    );
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, _) = reply_json(Flow::new(0).on_request_headers(
        &g,
        &head("GET", "/v1/chat/completions", Some("Bearer sk-1")),
    ));
    assert_eq!(s, 405);
}

#[test]
fn declared_or_actual_oversize_is_413() {
    let g = gw();
    let mut h = head("POST", "/v1/chat/completions", Some("Bearer sk-1"));
    h.content_length = Some("4096");
    let (s, v) = reply_json(Flow::new(0).on_request_headers(&g, &h));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    let mut f = Flow::new(0);
    let h = head("POST", "/v1/chat/completions", Some("Bearer sk-1"));
    assert_eq!(f.on_request_headers(&g, &h), HeadersStep::ReadBody);
    assert_eq!(
        f.on_request_body(
            &g,
            &crate::budget::MemoryStore::default(),
            1000,
            false,
            || None
        ),
        BodyStep::Wait
    );
    match f.on_request_body(
        &g,
        &crate::budget::MemoryStore::default(),
        3000,
        false,
        || None,
    ) {
        BodyStep::Reply(r) => assert_eq!(r.status, 413),
        other => panic!("{other:?}"),
    }
}

fn forward<'g>(g: &'g Gateway, f: &mut Flow, key: &str, body: &str) -> BodyStep<'g> {
    let auth = format!("Bearer {key}");
    let h = head("POST", "/v1/chat/completions", Some(&auth));
    assert_eq!(f.on_request_headers(g, &h), HeadersStep::ReadBody);
    let b = body.as_bytes().to_vec();
    f.on_request_body(
        g,
        &crate::budget::MemoryStore::default(),
        b.len(),
        true,
        || Some(b),
    )
}

/// A gateway whose key `k1` has a budget; `priced` sets the target's price.
fn budget_gw(priced: bool) -> Gateway {
    let mut target = serde_json::json!({"provider": "mock", "model": "gpt-up"});
    if priced {
        target["price"] = serde_json::json!({"input": 0.001, "output": 0.001});
    }
    let cfg = serde_json::from_value(serde_json::json!({
        "version": "cfg-b",
        "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1"),
                  "budget": {"remaining_usd": 1.0, "epoch": 1}}],
        "providers": [{"name": "mock", "kind": "openai", "cluster": "mock_cluster",
                       "host": "mock.local", "base_path": "/v1", "api_key_env": "MOCK_KEY"}],
        "models": [{"name": "mock-gpt", "targets": [target]}]
    }))
    .unwrap();
    Gateway::new(cfg, |_| Some("prov-secret".into())).unwrap()
}

fn admit(g: &Gateway, store: &crate::budget::MemoryStore, f: &mut Flow, body: &str) -> u16 {
    let h = head("POST", "/v1/chat/completions", Some("Bearer sk-1"));
    assert_eq!(f.on_request_headers(g, &h), HeadersStep::ReadBody);
    let b = body.as_bytes().to_vec();
    match f.on_request_body(g, store, b.len(), true, || Some(b)) {
        BodyStep::Reply(r) => r.status,
        BodyStep::Forward(_) => 200,
        BodyStep::Wait => 0,
    }
}

#[test]
fn client_chosen_names_never_reach_the_record_unbounded() {
    let mut cfg: sluice_config::PluginConfig = serde_json::from_value(serde_json::json!({
        "version": "v", "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
        "providers": [{"name": "mock", "kind": "openai", "cluster": "c",
                       "host": "h", "base_path": "/v1", "api_key_env": "K"}],
        "models": [{"name": "mock-gpt", "targets": [{"provider": "mock", "model": "u"}]}]
    }))
    .unwrap();
    cfg.limits.max_request_body_bytes = 2 << 20;
    let g = Gateway::new(cfg, |_| Some("s".into())).unwrap();
    // A 1 MiB model name and a huge multi-byte request id.
    let rid = "r\u{e9}".repeat(100_000);
    let h = RequestHead {
        request_id: Some(&rid),
        ..head("POST", "/v1/chat/completions", Some("Bearer sk-1"))
    };
    let mut f = Flow::new(0);
    assert_eq!(f.on_request_headers(&g, &h), HeadersStep::ReadBody);
    let b = format!(r#"{{"model":"{}","messages":[]}}"#, "m".repeat(1 << 20)).into_bytes();
    let store = crate::budget::MemoryStore::default();
    match f.on_request_body(&g, &store, b.len(), true, || Some(b)) {
        BodyStep::Reply(r) => assert_eq!(r.status, 404),
        other => panic!("expected 404, got {other:?}"),
    }
    let out = f.finish(1, &store);
    assert!(out.len() < 2048, "{} bytes", out.len());
    let rec: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(rec["model"], Value::Null, "an unknown model is not a label");
    assert!(rec["request_id"].as_str().unwrap().len() <= MAX_REQUEST_ID);
}

#[test]
fn an_oversized_answer_is_an_error_and_nothing_of_the_raw_body() {
    // Translated (Anthropic client, OpenAI provider), and a passthrough
    // with response guardrails: neither may hand on unread bytes.
    for (path, guard) in [("/v1/messages", false), ("/v1/chat/completions", true)] {
        let mut cfg = serde_json::json!({
            "version": "v", "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
            "providers": [{"name": "mock", "kind": "openai", "cluster": "c",
                           "host": "h", "base_path": "/v1", "api_key_env": "K"}],
            "models": [{"name": "mock-gpt", "targets": [{"provider": "mock", "model": "u"}]}],
            "limits": {"max_response_body_bytes": 1024}
        });
        if guard {
            cfg["guardrails"] = serde_json::json!({"rules": [{"name": "e",
                "detector": "email", "action": "mask", "on": "response"}]});
        }
        let g = Gateway::new(serde_json::from_value(cfg).unwrap(), |_| Some("s".into())).unwrap();
        let mut f = Flow::new(0);
        let h = RequestHead {
            method: "POST",
            path,
            x_api_key: Some("sk-1"),
            anthropic_version: Some("2023-06-01"),
            request_id: Some("r"),
            ..Default::default()
        };
        assert_eq!(f.on_request_headers(&g, &h), HeadersStep::ReadBody);
        let b =
            br#"{"model":"mock-gpt","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#
                .to_vec();
        let store = crate::budget::MemoryStore::default();
        assert!(matches!(
            f.on_request_body(&g, &store, b.len(), true, || Some(b)),
            BodyStep::Forward(_)
        ));
        let hs = f.on_response_headers(&g, 200, Some("application/json"));
        assert!(hs.hold, "{path}");
        let raw = vec![b'x'; 2000];
        match f.on_response_body(&g, raw.len(), false, 1, || Some(raw.clone())) {
            ResponseBodyStep::ReplaceWithStatus(502, body) => {
                assert!(!body.windows(3).any(|w| w == b"xxx"));
            }
            other => panic!("{path}: expected a 502, got {other:?}"),
        }
        for eos in [false, true] {
            assert!(!f.needs_response_bytes(eos));
            assert_eq!(
                f.on_response_body(&g, 2000, eos, 2, || Some(vec![b'y'; 2000])),
                ResponseBodyStep::Replace(Vec::new()),
                "{path}: the rest of the provider's body is dropped"
            );
        }
        let rec = finish_json(&mut f, 3);
        assert_eq!(
            (rec["status"].as_u64(), rec["completed"].as_bool()),
            (Some(502), Some(false))
        );
    }
}

#[test]
fn other_hosts_on_a_shared_listener_are_not_touched() {
    let mut cfg = gw_config();
    cfg.hosts = vec!["llm.example.com".into()];
    let g = Gateway::new(cfg, |_| Some("s".into())).unwrap();
    let at = |authority| {
        let h = RequestHead {
            authority: Some(authority),
            ..head("POST", "/v1/chat/completions", None)
        };
        Flow::new(0).on_request_headers(&g, &h)
    };
    // Another application's request: no 401, nothing read.
    assert_eq!(at("shop.example.com"), HeadersStep::NotServed);
    // The gateway's own host answers as always (here: no key → 401).
    assert!(matches!(at("llm.example.com:443"), HeadersStep::Reply(r) if r.status == 401));
}

#[test]
fn a_budget_is_never_silently_skipped_on_an_unpriced_model() {
    let g = budget_gw(false);
    let mut f = Flow::new(0);
    let store = crate::budget::MemoryStore::default();
    let body = r#"{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(admit(&g, &store, &mut f, body), 403);
    assert_eq!(finish_json(&mut f, 1)["error"], "permission_denied");
}

#[test]
fn every_choice_counts_in_the_budget_estimate() {
    // $1 left at $0.001 a token: 100 output tokens fit once, not ×20.
    let g = budget_gw(true);
    let store = crate::budget::MemoryStore::default();
    let one = r#"{"model":"mock-gpt","max_tokens":100,"messages":[]}"#;
    let many = r#"{"model":"mock-gpt","max_tokens":100,"n":20,"messages":[]}"#;
    assert_eq!(admit(&g, &store, &mut Flow::new(0), many), 429);
    assert_eq!(admit(&g, &store, &mut Flow::new(0), one), 200);
    // Client integers that would wrap are saturated, not wrapped.
    let huge = format!(
        r#"{{"model":"mock-gpt","max_tokens":{},"n":{},"messages":[]}}"#,
        u64::MAX,
        u64::MAX
    );
    assert_eq!(admit(&g, &store, &mut Flow::new(0), &huge), 429);
}

#[test]
fn an_abandoned_passthrough_stream_is_charged_an_estimate() {
    let g = budget_gw(true);
    let store = crate::budget::MemoryStore::default();
    let mut f = Flow::new(0);
    let body = r#"{"model":"mock-gpt","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hello there"}]}"#;
    assert_eq!(admit(&g, &store, &mut f, body), 200);
    f.on_response_headers(&g, 200, Some("text/event-stream"));
    // Three content chunks, then the client goes away: no usage chunk.
    let chunk = br#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a"}}]}

"#
    .repeat(3);
    f.on_response_body(&g, chunk.len(), false, 1, || Some(chunk.clone()));
    let rec = serde_json::from_slice::<Value>(&f.finish(5, &store)).unwrap();
    assert_eq!(rec["usage_source"], "estimated");
    assert_eq!(rec["completion_tokens"], 3);
    assert!(rec["prompt_tokens"].as_u64().unwrap() > 0);
    // The budget was settled with that estimate, not $0: the spend is
    // in the shared counter (prompt + 3 completion tokens at $0.001).
    let spent = {
        let (v, _) = crate::budget::SharedStore::get(&store, "sluice.budget.1.k1");
        let v = v.unwrap();
        u64::from_le_bytes(v[..8].try_into().unwrap())
    };
    let want = (rec["prompt_tokens"].as_u64().unwrap() + 3) * 1000;
    assert_eq!(spent, want);
}

#[test]
fn a_masked_passthrough_body_is_still_rewritten_for_the_provider() {
    let cfg: sluice_config::PluginConfig = serde_json::from_value(serde_json::json!({
        "version": "cfg-m",
        "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
        "providers": [{"name": "mock", "kind": "openai", "cluster": "mock_cluster",
                       "host": "mock.local", "base_path": "/v1", "api_key_env": "MOCK_KEY"}],
        "models": [{"name": "mock-gpt", "targets": [{"provider": "mock", "model": "gpt-up"}]}],
        // A cap makes the policy decode the request (the canonical form)
        // even though the request passes through (an output cap: the
        // lite module refuses input-token caps).
        "guardrails": {"rules": [{"name": "pii", "detector": "email", "action": "mask"}],
                       "max_tokens": 100000}
    }))
    .unwrap();
    let g = Gateway::new(cfg, |_| Some("prov-secret".into())).unwrap();
    let mut f = Flow::new(0);
    let body = r#"{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"mail a@b.example"}]}"#;
    let BodyStep::Forward(fw) = forward(&g, &mut f, "sk-1", body) else {
        panic!("expected forward")
    };
    let up: Value = serde_json::from_slice(&fw.body).unwrap();
    assert!(!up.to_string().contains("a@b.example"), "masked");
    assert_eq!(
        up["model"], "gpt-up",
        "the provider's model name, masked or not"
    );
    assert_eq!(up["stream_options"]["include_usage"], true);
}

#[test]
fn translated_body_is_parsed_once_and_still_checked() {
    let g = gw();
    let send = |body: &str| {
        let mut f = Flow::new(0);
        let h = RequestHead {
            method: "POST",
            path: "/v1/messages",
            x_api_key: Some("sk-1"),
            anthropic_version: Some("2023-06-01"),
            request_id: Some("r"),
            ..Default::default()
        };
        assert_eq!(f.on_request_headers(&g, &h), HeadersStep::ReadBody);
        let b = body.as_bytes().to_vec();
        let store = crate::budget::MemoryStore::default();
        let step = f.on_request_body(&g, &store, b.len(), true, || Some(b));
        let status = match step {
            BodyStep::Reply(r) => r.status,
            BodyStep::Forward(fw) => {
                let up: Value = serde_json::from_slice(&fw.body).unwrap();
                assert_eq!(
                    (up["model"].as_str(), up["stream"].as_bool()),
                    (Some("gpt-up"), Some(true))
                );
                200
            }
            BodyStep::Wait => 0,
        };
        (status, finish_json(&mut f, 1))
    };
    // Anthropic client → OpenAI provider: `stream` from the one decode.
    let (status, rec) = send(
        r#"{"model":"mock-gpt","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!((status, rec["stream"].as_bool()), (200, Some(true)));
    // Duplicate `model` keys are refused whichever parse runs.
    let (status, _) = send(r#"{"model":"mock-gpt","model":"other","max_tokens":5,"messages":[]}"#);
    assert_eq!(status, 400);
    // Broken JSON after a readable model: refused by the decode.
    let (status, _) = send(r#"{"model":"mock-gpt","messages":[{"#);
    assert_eq!(status, 400);
    // An unknown model is refused before any parse; the record still
    // says it was a stream.
    let (status, rec) = send(r#"{"model":"nope","max_tokens":5,"messages":[],"stream":true}"#);
    assert_eq!((status, rec["stream"].as_bool()), (404, Some(true)));
}

#[test]
fn clock_is_needed_only_until_a_streams_first_byte() {
    let g = gw();
    let mut f = Flow::new(0);
    let body = r#"{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}"#;
    assert!(matches!(
        forward(&g, &mut f, "sk-1", body),
        BodyStep::Forward(_)
    ));
    f.on_response_headers(&g, 200, Some("application/json"));
    assert!(
        !f.needs_clock(),
        "a buffered answer has no first byte to time"
    );

    let mut f = Flow::new(0);
    let body = r#"{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    assert!(matches!(
        forward(&g, &mut f, "sk-1", body),
        BodyStep::Forward(_)
    ));
    assert!(!f.needs_clock());
    f.on_response_headers(&g, 200, Some("text/event-stream"));
    assert!(f.needs_clock());
    let chunk = b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n".to_vec();
    f.on_response_body(&g, chunk.len(), false, 7, || Some(chunk));
    assert!(!f.needs_clock());
    let rec = finish_json(&mut f, 9);
    assert_eq!(rec["ttft_ms"], 7);
}

#[test]
fn malformed_and_unknown_model_bodies() {
    let g = gw();
    let mut f = Flow::new(0);
    match forward(&g, &mut f, "sk-1", "{not json") {
        BodyStep::Reply(r) => {
            assert_eq!(r.status, 400);
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["error"]["type"], "invalid_request_error");
        }
        other => panic!("{other:?}"),
    }
    let mut f = Flow::new(0);
    match forward(&g, &mut f, "sk-2", r#"{"model":"mock-gpt","messages":[]}"#) {
        BodyStep::Reply(r) => assert_eq!(r.status, 404),
        other => panic!("{other:?}"),
    }
    let rec = finish_json(&mut f, 1);
    assert_eq!(rec["model"], "mock-gpt");
    assert_eq!(rec["error"], "model_not_found");
}

#[test]
fn forward_rewrites_everything_the_provider_needs() {
    let g = gw();
    let mut f = Flow::new(0);
    let BodyStep::Forward(fw) = forward(
        &g,
        &mut f,
        "sk-1",
        r#"{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}"#,
    ) else {
        panic!("expected forward")
    };
    let get = |n: &str| {
        fw.set
            .iter()
            .find(|(k, _)| *k == n)
            .map(|(_, v)| v.to_string())
    };
    assert_eq!(get(":path").as_deref(), Some("/v1/chat/completions"));
    assert_eq!(get(":authority").as_deref(), Some("mock.local"));
    assert_eq!(get(CLUSTER_HEADER).as_deref(), Some("mock_cluster"));
    assert_eq!(get("authorization").as_deref(), Some("Bearer prov-secret"));
    assert_eq!(get("content-length"), Some(fw.body.len().to_string()));
    assert!(fw.remove.contains(&"x-api-key") && fw.remove.contains(&"accept-encoding"));
    let body: Value = serde_json::from_slice(&fw.body).unwrap();
    assert_eq!(body["model"], "gpt-up");

    // What the glue actually sends to Envoy: the client's key replaced
    // (not removed, then set), absent headers not removed, the unchanged
    // `:path` left alone, a duplicated header replaced whole.
    let h = |k: &'static str, v: &'static str| (k, v);
    let present = [
        h(":path", "/v1/chat/completions"),
        h(":authority", "127.0.0.1:10000"),
        h("authorization", "Bearer sk-1"),
        h("accept-encoding", "gzip"),
        h("content-length", "60"),
        h("x-sluice-cluster", "mock_cluster"),
        h("x-sluice-cluster", "other"),
    ];
    let len = fw.body.len().to_string();
    let edits = fw.header_edits(&present);
    assert_eq!(
        edits,
        vec![
            ("accept-encoding", None),
            (":authority", Some("mock.local")),
            (CLUSTER_HEADER, Some("mock_cluster")),
            ("authorization", Some("Bearer prov-secret")),
            ("content-length", Some(len.as_str())),
        ]
    );
    // Nothing present: every set is made, no removal is.
    let all = fw.header_edits(&[]);
    assert!(all.iter().all(|(_, v)| v.is_some()));
    assert_eq!(all.len(), fw.set.len());
}

#[test]
fn missing_provider_credential_is_503_not_a_leak() {
    let cfg = serde_json::from_value(serde_json::json!({
        "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
        "providers": [{"name": "p", "kind": "openai", "cluster": "c", "host": "h",
                       "api_key_env": "UNSET_KEY"}],
        "models": [{"name": "m", "targets": [{"provider": "p", "model": "u"}]}]
    }))
    .unwrap();
    let g = Gateway::new(cfg, |_| None).unwrap();
    let mut f = Flow::new(0);
    match forward(&g, &mut f, "sk-1", r#"{"model":"m"}"#) {
        BodyStep::Reply(r) => {
            assert_eq!(r.status, 503);
            assert!(String::from_utf8_lossy(&r.body).contains("UNSET_KEY"));
        }
        other => panic!("{other:?}"),
    }
}

const STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
    "data: [DONE]\n\n"
);

/// Runs STREAM through a flow split at `cut`; returns (client bytes, record).
fn run_stream(body: &str, cut: usize) -> (String, Value) {
    let g = gw();
    let mut f = Flow::new(100);
    assert!(matches!(
        forward(&g, &mut f, "sk-1", body),
        BodyStep::Forward(_)
    ));
    assert!(
        f.on_response_headers(&g, 200, Some("text/event-stream; charset=utf-8"))
            .remove_content_length
    );
    let mut client = Vec::new();
    let bytes = STREAM.as_bytes();
    let pieces = [&bytes[..cut], &bytes[cut..], &b""[..]];
    for (i, p) in pieces.iter().enumerate() {
        let v = p.to_vec();
        match f.on_response_body(&g, v.len(), i == 2, 150 + i as u64, || Some(v.clone())) {
            ResponseBodyStep::Pass => client.extend_from_slice(p),
            ResponseBodyStep::Replace(r) => client.extend_from_slice(&r),
            other => panic!("streams never wait or change status: {other:?}"),
        }
    }
    (String::from_utf8(client).unwrap(), finish_json(&mut f, 400))
}

#[test]
fn stream_usage_chunk_stripped_when_client_did_not_ask_at_any_split() {
    for cut in 0..=STREAM.len() {
        let (client, rec) = run_stream(r#"{"model":"mock-gpt","stream":true}"#, cut);
        assert!(!client.contains("\"choices\":[]"), "cut {cut}: {client}");
        assert!(client.ends_with("data: [DONE]\n\n"));
        assert_eq!(client.matches("data: ").count(), 3);
        assert_eq!(rec["prompt_tokens"], 11, "cut {cut}");
        assert_eq!(rec["completion_tokens"], 2);
        assert_eq!(rec["cached_tokens"], 4);
        assert_eq!(rec["usage_source"], "provider");
        assert_eq!(rec["stream"], true);
        assert_eq!(rec["completed"], true);
        assert_eq!(rec["latency_ms"], 300);
        assert_eq!(rec["config_version"], "cfg-7");
    }
}

#[test]
fn stream_usage_chunk_kept_when_client_asked() {
    let (client, rec) = run_stream(
        r#"{"model":"mock-gpt","stream":true,"stream_options":{"include_usage":true}}"#,
        40,
    );
    assert_eq!(client, STREAM);
    assert_eq!(rec["prompt_tokens"], 11);
}

#[test]
fn oversized_stream_event_ends_with_error_event() {
    let g = gw();
    let mut f = Flow::new(0);
    assert!(matches!(
        forward(&g, &mut f, "sk-1", r#"{"model":"mock-gpt","stream":true}"#),
        BodyStep::Forward(_)
    ));
    f.on_response_headers(&g, 200, Some("text/event-stream"));
    let big = format!("data: {}", "x".repeat(2000));
    let v = big.into_bytes();
    match f.on_response_body(&g, v.len(), false, 1, || Some(v.clone())) {
        ResponseBodyStep::Replace(out) => {
            let s = String::from_utf8(out).unwrap();
            assert!(s.starts_with("data: {\"error\""), "{s}");
        }
        other => panic!("{other:?}"),
    }
    let rec = finish_json(&mut f, 2);
    assert_eq!(rec["completed"], false);
}

#[test]
fn non_stream_usage_read_from_whole_body() {
    let g = gw();
    let mut f = Flow::new(0);
    assert!(matches!(
        forward(&g, &mut f, "sk-1", r#"{"model":"mock-gpt"}"#),
        BodyStep::Forward(_)
    ));
    assert_eq!(
        f.on_response_headers(&g, 200, Some("application/json")),
        ResponseHeaders::default()
    );
    let body = br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#.to_vec();
    assert_eq!(
        f.on_response_body(&g, 10, false, 1, || None),
        ResponseBodyStep::Wait
    );
    assert_eq!(
        f.on_response_body(&g, body.len(), true, 2, || Some(body.clone())),
        ResponseBodyStep::Pass
    );
    let rec = finish_json(&mut f, 3);
    assert_eq!(
        (
            rec["prompt_tokens"].as_u64(),
            rec["completion_tokens"].as_u64()
        ),
        (Some(5), Some(7))
    );
    assert_eq!(rec["provider"], "mock");
    assert_eq!(rec["upstream_model"], "gpt-up");
    assert_eq!(rec["ttft_ms"], Value::Null);
}

#[test]
fn local_reply_passes_through_response_callbacks_untouched() {
    let g = gw();
    let mut f = Flow::new(0);
    let _ = f.on_request_headers(&g, &head("GET", "/v1/models", Some("Bearer sk-1")));
    assert_eq!(
        f.on_response_headers(&g, 200, Some("application/json")),
        ResponseHeaders::default()
    );
    assert_eq!(
        f.on_response_body(&g, 5, true, 1, || panic!("must not read")),
        ResponseBodyStep::Pass
    );
}

// ---- translation through the flow ----

fn multi_gw() -> Gateway {
    let cfg = serde_json::from_value(serde_json::json!({
        "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
        "providers": [
            {"name": "oa", "kind": "openai", "cluster": "c_oa", "host": "oa", "auth": {"type": "none"}},
            {"name": "an", "kind": "anthropic", "cluster": "c_an", "host": "an",
             "auth": {"type": "header", "name": "x-api-key"}, "api_key_env": "AN_KEY"},
            {"name": "ge", "kind": "gemini", "cluster": "c_ge", "host": "ge",
             "auth": {"type": "header", "name": "x-goog-api-key"}, "api_key_env": "GE_KEY"}
        ],
        "models": [
            {"name": "gpt", "targets": [{"provider": "oa", "model": "gpt-up"}]},
            {"name": "claude", "targets": [{"provider": "an", "model": "claude-up"}]},
            {"name": "gem", "targets": [{"provider": "ge", "model": "gem-up"}]}
        ]
    }))
    .unwrap();
    Gateway::new(cfg, |v| Some(format!("secret-{v}"))).unwrap()
}

fn send<'g>(g: &'g Gateway, f: &mut Flow, method: &str, path: &str, body: &str) -> BodyStep<'g> {
    let mut h = head(method, path, None);
    h.x_api_key = Some("sk-1");
    match f.on_request_headers(g, &h) {
        HeadersStep::ReadBody => {}
        HeadersStep::Reply(r) => return BodyStep::Reply(r),
        HeadersStep::NotServed => panic!("every host is served here"),
    }
    let b = body.as_bytes().to_vec();
    f.on_request_body(
        g,
        &crate::budget::MemoryStore::default(),
        b.len(),
        true,
        || Some(b),
    )
}

fn header<'a>(fw: &'a Forward<'_>, name: &str) -> Option<&'a str> {
    fw.set
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_ref())
}

#[test]
fn openai_client_to_anthropic_provider() {
    let g = multi_gw();
    let mut f = Flow::new(0);
    let BodyStep::Forward(fw) = send(
        &g,
        &mut f,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"claude","messages":[{"role":"system","content":"S"},{"role":"user","content":"hi"}],"seed":3}"#,
    ) else {
        panic!()
    };
    assert_eq!(header(&fw, ":path"), Some("/v1/messages"));
    assert_eq!(header(&fw, "x-api-key"), Some("secret-AN_KEY"));
    assert_eq!(
        header(&fw, "anthropic-version"),
        Some(anthropic::API_VERSION)
    );
    let up: serde_json::Value = serde_json::from_slice(&fw.body).unwrap();
    assert_eq!(up["model"], "claude-up");
    assert_eq!(up["system"], "S");
    assert_eq!(up["max_tokens"], anthropic::DEFAULT_MAX_TOKENS);
    let rh = f.on_response_headers(&g, 200, Some("application/json"));
    assert!(rh.hold && rh.remove_content_length);
    assert!(rh
        .set
        .iter()
        .any(|(k, v)| *k == WARNINGS_HEADER && v.contains("seed")));
    let body = br#"{"id":"msg_1","model":"claude-up","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":2}}"#.to_vec();
    let ResponseBodyStep::ReplaceWithStatus(200, out) =
        f.on_response_body(&g, body.len(), true, 5, || Some(body.clone()))
    else {
        panic!()
    };
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello");
    assert_eq!(v["model"], "claude");
    assert_eq!(v["id"], "chatcmpl-msg_1");
    let rec: serde_json::Value =
        serde_json::from_slice(&f.finish(6, &crate::budget::MemoryStore::default())).unwrap();
    assert_eq!(
        (
            rec["prompt_tokens"].as_u64(),
            rec["completion_tokens"].as_u64()
        ),
        (Some(5), Some(2))
    );
    assert_eq!(rec["client_dialect"], "openai");
}

#[test]
fn anthropic_client_passthrough_touches_only_model() {
    let g = multi_gw();
    let mut f = Flow::new(0);
    let body = r#"{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let BodyStep::Forward(fw) = send(&g, &mut f, "POST", "/v1/messages", body) else {
        panic!()
    };
    assert_eq!(
        String::from_utf8(fw.body).unwrap(),
        body.replace("\"claude\"", "\"claude-up\"")
    );
    assert_eq!(fw.remove, UPSTREAM_REMOVE);
}

#[test]
fn gemini_client_paths_and_errors() {
    let g = multi_gw();
    // Passthrough: body untouched, model from the URL rewritten in the path.
    let mut f = Flow::new(0);
    let body = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
    let BodyStep::Forward(fw) = send(
        &g,
        &mut f,
        "POST",
        "/v1beta/models/gem:streamGenerateContent?alt=sse",
        body,
    ) else {
        panic!()
    };
    assert_eq!(
        header(&fw, ":path"),
        Some("/v1beta/models/gem-up:streamGenerateContent?alt=sse")
    );
    assert_eq!(fw.body, body.as_bytes());
    // Translated to OpenAI.
    let mut f = Flow::new(0);
    let BodyStep::Forward(fw) = send(&g, &mut f, "POST", "/v1/models/gpt:generateContent", body)
    else {
        panic!()
    };
    assert_eq!(header(&fw, ":path"), Some("/v1/chat/completions"));
    // Unknown model: Gemini-shaped 404.
    let mut f = Flow::new(0);
    let BodyStep::Reply(r) = send(
        &g,
        &mut f,
        "POST",
        "/v1beta/models/nope:generateContent",
        body,
    ) else {
        panic!()
    };
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(
        (r.status, v["error"]["status"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    // Stream without alt=sse is refused clearly.
    let mut f = Flow::new(0);
    let BodyStep::Reply(r) = send(
        &g,
        &mut f,
        "POST",
        "/v1beta/models/gem:streamGenerateContent",
        body,
    ) else {
        panic!()
    };
    assert_eq!(r.status, 400);
}

#[test]
fn anthropic_errors_for_anthropic_clients() {
    let g = multi_gw();
    let mut f = Flow::new(0);
    let h = RequestHead {
        method: "POST",
        path: "/v1/messages",
        x_api_key: Some("bad"),
        ..Default::default()
    };
    let HeadersStep::Reply(r) = f.on_request_headers(&g, &h) else {
        panic!()
    };
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");
}

#[test]
fn provider_overload_becomes_503_for_openai_clients() {
    let g = multi_gw();
    let mut f = Flow::new(0);
    assert!(matches!(
        send(
            &g,
            &mut f,
            "POST",
            "/v1/chat/completions",
            r#"{"model":"claude","messages":[]}"#
        ),
        BodyStep::Forward(_)
    ));
    f.on_response_headers(&g, 529, Some("application/json"));
    let body =
        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#.to_vec();
    let ResponseBodyStep::ReplaceWithStatus(s, out) =
        f.on_response_body(&g, body.len(), true, 1, || Some(body.clone()))
    else {
        panic!()
    };
    assert_eq!(s, 503);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["error"]["message"], "Overloaded");
}

#[test]
fn n_greater_than_one_and_server_tools_are_rejected_when_translating() {
    let g = multi_gw();
    let mut f = Flow::new(0);
    let BodyStep::Reply(r) = send(
        &g,
        &mut f,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"claude","n":2,"messages":[]}"#,
    ) else {
        panic!()
    };
    assert_eq!(r.status, 400);
    let mut f = Flow::new(0);
    let BodyStep::Reply(r) = send(
        &g,
        &mut f,
        "POST",
        "/v1/messages",
        r#"{"model":"gpt","max_tokens":5,"messages":[],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
    ) else {
        panic!()
    };
    assert_eq!(r.status, 400);
    assert!(String::from_utf8_lossy(&r.body).contains("invalid_request_error"));
}

#[test]
fn translated_stream_through_the_flow() {
    let g = multi_gw();
    let mut f = Flow::new(1_000);
    assert!(matches!(
        send(
            &g,
            &mut f,
            "POST",
            "/v1/messages",
            r#"{"model":"gpt","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#
        ),
        BodyStep::Forward(_)
    ));
    assert!(
        f.on_response_headers(&g, 200, Some("text/event-stream"))
            .remove_content_length
    );
    let up = concat!(
        "data: {\"id\":\"c\",\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
        "data: [DONE]\n\n").as_bytes().to_vec();
    let ResponseBodyStep::Replace(out) =
        f.on_response_body(&g, up.len(), true, 1_004, || Some(up.clone()))
    else {
        panic!()
    };
    let s = String::from_utf8(out).unwrap();
    assert!(s.starts_with("event: message_start"), "{s}");
    assert!(s.contains("\"text\":\"Hi\""));
    assert!(s.trim_end().ends_with("data: {\"type\":\"message_stop\"}"));
    let rec: serde_json::Value =
        serde_json::from_slice(&f.finish(1_010, &crate::budget::MemoryStore::default())).unwrap();
    assert_eq!(rec["completion_tokens"], 1);
    assert_eq!(rec["ttft_ms"], 4);
    assert_eq!(rec["client_dialect"], "anthropic");
}

fn capturing_gw(shadow: bool) -> Gateway {
    let cfg = serde_json::from_value(serde_json::json!({
        "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
        "providers": [{"name": "oa", "kind": "openai", "cluster": "c_oa", "host": "oa",
                       "auth": {"type": "bearer"}, "api_key_env": "OA_KEY"}],
        "models": [{"name": "gpt", "targets": [{"provider": "oa", "model": "gpt-up"}]}],
        "capture": {"sample_rate": 0.0, "min_per_stratum": 1},
        "shadow": if shadow { serde_json::json!({"role": "shadow"}) } else { serde_json::Value::Null }
    }))
    .unwrap();
    Gateway::new(cfg, |_| Some("provider-secret".to_string())).unwrap()
}

#[test]
fn captured_requests_carry_both_exchanges_and_never_credentials() {
    let g = capturing_gw(false);
    let body = r#"{"model":"gpt","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut f = Flow::new(1_000);
    assert!(matches!(
        send(&g, &mut f, "POST", "/v1/messages", body),
        BodyStep::Forward(_)
    ));
    f.on_response_headers(&g, 200, Some("text/event-stream"));
    let up = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
    // Split across callbacks: both sides are kept whole.
    let (a, b) = up.split_at(20);
    for (part, end) in [(a, false), (b, true)] {
        let bytes = part.as_bytes().to_vec();
        f.on_response_body(&g, bytes.len(), end, 1_002, || Some(bytes));
    }
    f.finish(1_003, &crate::budget::MemoryStore::default());
    let cap: serde_json::Value = serde_json::from_slice(&f.take_capture().unwrap()).unwrap();
    assert_eq!(cap["upstream"]["response_body"], up);
    assert_eq!(cap["upstream"]["kind"], "openai");
    assert_eq!(cap["upstream"]["path"], "/v1/chat/completions");
    let client = cap["response_body"].as_str().unwrap();
    assert!(client.starts_with("event: message_start"), "{client}");
    assert_eq!(cap["stratum"], "gpt|tools=false|stream=true");
    let text = cap.to_string();
    assert!(!text.contains("provider-secret") && !text.contains("sk-1"));
    // Sampling: the stratum's minimum (1) is spent; rate 0 takes no more.
    let mut f2 = Flow::new(1_000);
    send(&g, &mut f2, "POST", "/v1/messages", body);
    f2.finish(1_001, &crate::budget::MemoryStore::default());
    assert!(f2.take_capture().is_none());
    // A gateway-answered request is captured with its answer.
    let mut f3 = Flow::new(1_000);
    let BodyStep::Reply(r) = send(
        &g,
        &mut f3,
        "POST",
        "/v1/messages",
        r#"{"model":"nope","max_tokens":1,"messages":[]}"#,
    ) else {
        panic!()
    };
    f3.finish(1_001, &crate::budget::MemoryStore::default());
    let cap: serde_json::Value = serde_json::from_slice(&f3.take_capture().unwrap()).unwrap();
    assert!(cap["upstream"].is_null());
    assert_eq!(cap["status"], r.status);
    assert_eq!(
        cap["response_body"].as_str().unwrap().as_bytes(),
        &r.body[..]
    );
}

#[test]
fn shadow_digest_is_of_the_upstream_request_in_canonical_form() {
    let g = capturing_gw(true);
    let digest = |body: &str| {
        let mut f = Flow::new(1_000);
        send(&g, &mut f, "POST", "/v1/chat/completions", body);
        let rec: serde_json::Value =
            serde_json::from_slice(&f.finish(1_001, &crate::budget::MemoryStore::default()))
                .unwrap();
        assert_eq!(rec["role"], "shadow");
        rec["digest"].as_str().unwrap().to_string()
    };
    let a = digest(r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}]}"#);
    let b = digest(r#"{ "messages": [{"content": "hi", "role": "user"}], "model": "gpt" }"#);
    let c = digest(r#"{"model":"gpt","messages":[{"role":"user","content":"ho"}]}"#);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a, digest(r#"{"model":"nope","messages":[]}"#));
}

#[test]
fn vertex_ai_is_the_gemini_kind_under_another_base_path() {
    let cfg = serde_json::from_value(serde_json::json!({
        "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
        "providers": [{"name": "vx", "kind": "gemini", "cluster": "vertex",
            "host": "us-central1-aiplatform.googleapis.com",
            "base_path": "/v1/projects/p1/locations/us-central1/publishers/google",
            "auth": {"type": "bearer"}, "api_key_env": "VERTEX_TOKEN"}],
        "models": [{"name": "gem", "targets": [{"provider": "vx", "model": "gemini-2.5-pro"}]}]
    }))
    .unwrap();
    let g = Gateway::new(cfg, |_| Some("ya29.token".into())).unwrap();
    let mut f = Flow::new(0);
    let BodyStep::Forward(fw) = send(
        &g,
        &mut f,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"gem","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    ) else {
        panic!()
    };
    assert_eq!(
        header(&fw, ":path"),
        Some("/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse")
    );
    assert_eq!(header(&fw, "authorization"), Some("Bearer ya29.token"));
}

#[test]
fn response_guardrails_hold_and_block_translated_streams() {
    let mut cfg: sluice_config::PluginConfig = serde_json::from_value(serde_json::json!({
        "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
        "providers": [{"name": "ge", "kind": "gemini", "cluster": "c", "host": "h",
                       "auth": {"type": "none"}}],
        "models": [{"name": "gem", "targets": [{"provider": "ge", "model": "g"}]}]
    }))
    .unwrap();
    cfg.guardrails = serde_json::from_value(serde_json::json!({"rules": [
        {"name": "nope", "detector": {"regex": "mock provider"}, "action": "block",
         "on": "response", "models": ["gem"]}]}))
    .unwrap();
    let g = Gateway::new(cfg, |_| None).unwrap();
    let mut f = Flow::new(0);
    assert!(matches!(
        send(
            &g,
            &mut f,
            "POST",
            "/v1/chat/completions",
            r#"{"model":"gem","stream":true,"messages":[{"role":"user","content":"x"}]}"#
        ),
        BodyStep::Forward(_)
    ));
    f.on_response_headers(&g, 200, Some("text/event-stream"));
    let mut client = Vec::new();
    let mut all = Vec::new();
    for (i, w) in ["the", " mock", " provider"].iter().enumerate() {
        let finish = if i == 2 {
            r#","finishReason":"STOP""#
        } else {
            ""
        };
        // Gemini repeats usage in every chunk: it must not release text.
        all.extend(format!(
            "data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"text\":\"{w}\"}}]}}{finish}}}],\"usageMetadata\":{{\"promptTokenCount\":3}}}}\r\n\r\n"
        ).into_bytes());
    }
    // Everything in one callback, then the empty end-of-stream one.
    for (chunk, last) in [(all, false), (Vec::new(), true)] {
        match f.on_response_body(&g, chunk.len(), last, 1, || Some(chunk.clone())) {
            ResponseBodyStep::Replace(b) => client.extend(b),
            other => panic!("{other:?}"),
        }
    }
    let s = String::from_utf8(client).unwrap();
    assert!(!s.contains("mock"), "{s}");
    assert!(s.contains("nope"), "{s}");
}

#[test]
fn usage_is_estimated_when_the_provider_reports_none() {
    let g = multi_gw();
    let mut f = Flow::new(0);
    assert!(matches!(
        send(
            &g,
            &mut f,
            "POST",
            "/v1/messages",
            r#"{"model":"gpt","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#
        ),
        BodyStep::Forward(_)
    ));
    f.on_response_headers(&g, 200, Some("text/event-stream"));
    // An OpenAI-compatible provider that ignores include_usage.
    let up = concat!(
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello world\"}}]}\n\n",
        "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
        "data: [DONE]\n\n").as_bytes().to_vec();
    f.on_response_body(&g, up.len(), true, 2, || Some(up.clone()));
    let rec: serde_json::Value =
        serde_json::from_slice(&f.finish(3, &crate::budget::MemoryStore::default())).unwrap();
    assert_eq!(rec["usage_source"], "estimated");
    assert_eq!(rec["completion_tokens"], 2);
    assert!(rec["prompt_tokens"].as_u64().unwrap() > 0);
}
