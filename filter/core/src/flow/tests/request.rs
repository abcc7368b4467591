//! The request phases: keys, endpoints, bodies, routing, what goes upstream.

use serde_json::Value;

use super::support::*;
use crate::budget::MemoryStore;
use crate::flow::*;
use crate::gateway::Gateway;

#[test]
fn missing_unknown_and_wrong_keys_get_openai_401() {
    let g = gw();
    for auth in [None, Some("Bearer sk-nope"), Some("Basic xyz")] {
        let mut f = Flow::new(0);
        let (status, v) = reply_json(f.on_request_headers(
            &g,
            &crate::budget::MemoryStore::default(),
            &head("POST", "/v1/chat/completions", auth),
        ));
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
    let (s, v) = reply_json(Flow::new(0).on_request_headers(
        &g,
        &crate::budget::MemoryStore::default(),
        &head("GET", "/v1/models", Some("Bearer sk-2")),
    ));
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["id"], "other");
    let (s, _) = reply_json(Flow::new(0).on_request_headers(
        &g,
        &crate::budget::MemoryStore::default(),
        &head("GET", "/v1/models/mock-gpt", Some("Bearer sk-2")),
    ));
    assert_eq!(s, 404);
}

#[test]
fn unknown_paths_and_methods() {
    let g = gw();
    let (s, v) = reply_json(Flow::new(0).on_request_headers(
        &g,
        &crate::budget::MemoryStore::default(),
        &head("POST", "/v1/images/edits", Some("Bearer sk-1")),
    ));
    assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
    let (s, _) = reply_json(Flow::new(0).on_request_headers(
        &g,
        &crate::budget::MemoryStore::default(),
        &head("GET", "/v1/chat/completions", Some("Bearer sk-1")),
    ));
    assert_eq!(s, 405);
}

#[test]
fn declared_or_actual_oversize_is_413() {
    let g = gw();
    let mut h = head("POST", "/v1/chat/completions", Some("Bearer sk-1"));
    h.content_length = Some("4096");
    let (s, v) =
        reply_json(Flow::new(0).on_request_headers(&g, &crate::budget::MemoryStore::default(), &h));
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );

    let mut f = Flow::new(0);
    let h = head("POST", "/v1/chat/completions", Some("Bearer sk-1"));
    assert_eq!(
        f.on_request_headers(&g, &crate::budget::MemoryStore::default(), &h),
        HeadersStep::ReadBody
    );
    assert_eq!(
        f.on_request_body(&g, &MemoryStore::default(), 1000, false, || None),
        BodyStep::Wait
    );
    match f.on_request_body(&g, &MemoryStore::default(), 3000, false, || None) {
        BodyStep::Reply(r) => assert_eq!(r.status, 413),
        other => panic!("{other:?}"),
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
    assert_eq!(
        f.on_request_headers(&g, &crate::budget::MemoryStore::default(), &h),
        HeadersStep::ReadBody
    );
    let b = format!(r#"{{"model":"{}","messages":[]}}"#, "m".repeat(1 << 20)).into_bytes();
    let store = MemoryStore::default();
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
fn other_hosts_on_a_shared_listener_are_not_touched() {
    let mut cfg = gw_config();
    cfg.hosts = vec!["llm.example.com".into()];
    let g = Gateway::new(cfg, |_| Some("s".into())).unwrap();
    let at = |authority| {
        let h = RequestHead {
            authority: Some(authority),
            ..head("POST", "/v1/chat/completions", None)
        };
        Flow::new(0).on_request_headers(&g, &crate::budget::MemoryStore::default(), &h)
    };
    // Another application's request: no 401, nothing read.
    assert_eq!(at("shop.example.com"), HeadersStep::NotServed);
    // The gateway's own host answers as always (here: no key → 401).
    assert!(matches!(at("llm.example.com:443"), HeadersStep::Reply(r) if r.status == 401));
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
        assert_eq!(
            f.on_request_headers(&g, &crate::budget::MemoryStore::default(), &h),
            HeadersStep::ReadBody
        );
        let b = body.as_bytes().to_vec();
        let store = MemoryStore::default();
        let step = f.on_request_body(&g, &store, b.len(), true, || Some(b));
        let status = match step {
            BodyStep::Reply(r) => r.status,
            BodyStep::Pass => panic!("passed"),
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
