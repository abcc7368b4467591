//! Shared builders for the flow's tests: gateways from JSON, a request run
//! through both request phases, the record as JSON.

use serde_json::Value;

use crate::budget::MemoryStore;
use crate::flow::*;
use crate::gateway::Gateway;

/// A gateway from a JSON configuration; provider key variables resolve
/// through `env`.
pub(super) fn gateway_env(cfg: Value, env: impl Fn(&str) -> Option<String>) -> Gateway {
    Gateway::new(serde_json::from_value(cfg).unwrap(), env).unwrap()
}

/// Runs a request's two phases: the headers, then — if the flow asks for
/// it — the whole body. A reply to the headers is returned as the step.
pub(super) fn request<'g>(
    g: &'g Gateway,
    f: &mut Flow,
    store: &MemoryStore,
    h: &RequestHead<'_>,
    body: &str,
) -> BodyStep<'g> {
    match f.on_request_headers(g, store, h) {
        HeadersStep::ReadBody => {}
        HeadersStep::Reply(r) => return BodyStep::Reply(r),
        HeadersStep::Forward(f) => return BodyStep::Forward(f),
        HeadersStep::NotServed => panic!("not a served host"),
    }
    let b = body.as_bytes().to_vec();
    f.on_request_body(g, store, b.len(), true, || Some(b))
}

pub(super) fn gw() -> Gateway {
    Gateway::new(gw_config(), |_| Some("prov-secret".into())).unwrap()
}

pub(super) fn gw_config() -> sluice_config::PluginConfig {
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

pub(super) fn head<'a>(method: &'a str, path: &'a str, auth: Option<&'a str>) -> RequestHead<'a> {
    RequestHead {
        method,
        path,
        authorization: auth,
        request_id: Some("rid-1"),
        ..Default::default()
    }
}

pub(super) fn reply_json(step: HeadersStep) -> (u16, Value) {
    match step {
        HeadersStep::Reply(r) => (r.status, serde_json::from_slice(&r.body).unwrap()),
        other => panic!("expected a reply, got {other:?}"),
    }
}

pub(super) fn finish_json(f: &mut Flow, now: u64) -> Value {
    serde_json::from_slice(&f.finish(now, &MemoryStore::default())).unwrap()
}

/// An OpenAI chat request with `key` as its bearer.
pub(super) fn forward<'g>(g: &'g Gateway, f: &mut Flow, key: &str, body: &str) -> BodyStep<'g> {
    let auth = format!("Bearer {key}");
    let h = head("POST", "/v1/chat/completions", Some(&auth));
    request(g, f, &MemoryStore::default(), &h, body)
}

/// A gateway whose key `k1` has a budget; `priced` sets the target's price.
pub(super) fn budget_gw(priced: bool) -> Gateway {
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

/// The status admission gives key `sk-1`'s request (200: forwarded).
pub(super) fn admit(g: &Gateway, store: &MemoryStore, f: &mut Flow, body: &str) -> u16 {
    let h = head("POST", "/v1/chat/completions", Some("Bearer sk-1"));
    match request(g, f, store, &h, body) {
        BodyStep::Reply(r) => r.status,
        BodyStep::Forward(_) => 200,
        BodyStep::Wait | BodyStep::Pass => 0,
    }
}

pub(super) fn multi_gw() -> Gateway {
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

/// A request with key `sk-1` as `x-api-key` (any client API).
pub(super) fn send<'g>(
    g: &'g Gateway,
    f: &mut Flow,
    method: &str,
    path: &str,
    body: &str,
) -> BodyStep<'g> {
    let mut h = head(method, path, None);
    h.x_api_key = Some("sk-1");
    request(g, f, &MemoryStore::default(), &h, body)
}

pub(super) fn header<'a>(fw: &'a Forward<'_>, name: &str) -> Option<&'a str> {
    fw.set
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_ref())
}

pub(super) fn capturing_gw(shadow: bool) -> Gateway {
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
