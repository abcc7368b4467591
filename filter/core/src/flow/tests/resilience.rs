//! A resilient model's request through both halves: the gateway half plans
//! and routes to the model's cluster, each attempt (the attempt filter)
//! encodes for the target Envoy picked, and the answer is read as the
//! answering target's.

use serde_json::{json, Value};

use super::support::*;
use crate::budget::MemoryStore;
use crate::flow::attempt::{Attempt, AttemptHead, AttemptStep};
use crate::flow::*;
use crate::gateway::Gateway;
use crate::resilience::{plans, ATTEMPTS_HEADER, PLAN_HEADER, PROVIDER_HEADER};

fn resilient_gw() -> Gateway {
    gateway_env(
        json!({
            "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1"),
                      "budget": {"remaining_usd": 10.0, "epoch": 1}}],
            "providers": [
                {"name": "oa", "kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                 "api_key_env": "OA_KEY"},
                {"name": "an", "kind": "anthropic", "base_url": "https://api.anthropic.example",
                 "auth": {"type": "header", "name": "x-api-key"}, "api_key_env": "AN_KEY"}
            ],
            "models": [{"name": "gpt", "targets": [
                {"provider": "oa", "model": "gpt-up", "price": {"input": 0.000001, "output": 0.000002}},
                {"provider": "an", "model": "claude-up", "priority": 1,
                 "price": {"input": 0.00001, "output": 0.00002}}],
                "retry": {"attempts": 3},
                "timeouts": {"first_byte_ms": 5000}}]
        }),
        |v| Some(format!("secret-{v}")),
    )
}

fn plan_id(fw: &Forward<'_>) -> String {
    header(fw, PLAN_HEADER).expect("plan header").to_string()
}

/// One attempt at (provider, model): its forward as (headers, body JSON).
fn attempt(
    plan: &str,
    provider: &str,
    model: &str,
    body: &str,
    status: u16,
) -> (Vec<(String, String)>, Value) {
    let head = AttemptHead {
        plan: Some(plan),
        provider: Some(provider),
        model: Some(model),
    };
    let _ = body;
    let mut a = Attempt::start(&head, 1_000).expect("attempt starts");
    let out = match a.on_request_body(true) {
        AttemptStep::Forward(f) => {
            let set = f
                .set
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (set, serde_json::from_slice(&f.body).unwrap())
        }
        other => panic!("expected a forward, got {other:?}"),
    };
    a.on_response_headers(status, 1_250);
    a.on_done(1_300);
    out
}

fn get<'a>(set: &'a [(String, String)], name: &str) -> Option<&'a str> {
    set.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

const BODY: &str = r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}],"max_tokens":50}"#;

#[test]
fn the_gateway_half_routes_to_the_model_cluster_with_the_router_policy() {
    let g = resilient_gw();
    let mut f = Flow::new(0);
    let BodyStep::Forward(fw) = forward(&g, &mut f, "sk-1", BODY) else {
        panic!("not forwarded")
    };
    assert_eq!(header(&fw, CLUSTER_HEADER), Some("sluice_model_gpt"));
    assert_eq!(header(&fw, "x-envoy-max-retries"), Some("2"));
    assert_eq!(
        header(&fw, "x-envoy-upstream-rq-per-try-timeout-ms"),
        Some("5000")
    );
    // The client's body goes as it came: each attempt encodes its own.
    assert_eq!(fw.body, BODY.as_bytes());
    assert!(header(&fw, ":path").is_none() && header(&fw, "authorization").is_none());
    assert_eq!(plans::alive(), 1);
    drop(fw);
    let rec = finish_json(&mut f, 10);
    assert_eq!(rec["attempts"], Value::Null);
    drop(f);
    assert_eq!(plans::alive(), 0, "the plan dies with its request");
}

#[test]
fn a_failed_primary_falls_back_to_another_kind_and_the_answer_is_translated() {
    let g = resilient_gw();
    let store = MemoryStore::default();
    let mut f = Flow::new(0);
    let h = head("POST", "/v1/chat/completions", Some("Bearer sk-1"));
    let BodyStep::Forward(fw) = request(&g, &mut f, &store, &h, BODY) else {
        panic!("not forwarded")
    };
    let plan = plan_id(&fw);
    let body = String::from_utf8(fw.body.clone()).unwrap();
    drop(fw);
    // Attempt 1: the OpenAI primary, passed through with its model name.
    let (set, sent) = attempt(&plan, "oa", "gpt-up", &body, 500);
    assert_eq!(get(&set, ":path"), Some("/v1/chat/completions"));
    assert_eq!(get(&set, ":authority"), Some("127.0.0.1:9"));
    assert_eq!(get(&set, "authorization"), Some("Bearer secret-OA_KEY"));
    assert!(get(&set, CLUSTER_HEADER).is_none());
    assert_eq!(sent["model"], "gpt-up");
    // Attempt 2: the Anthropic fallback, translated.
    let (set, sent) = attempt(&plan, "an", "claude-up", &body, 200);
    assert_eq!(get(&set, ":path"), Some("/v1/messages"));
    assert_eq!(get(&set, ":authority"), Some("api.anthropic.example"));
    assert_eq!(get(&set, "x-api-key"), Some("secret-AN_KEY"));
    assert!(get(&set, "anthropic-version").is_some());
    assert_eq!(sent["model"], "claude-up");
    assert_eq!(sent["messages"][0]["content"][0]["text"], "hi");

    // The answer is Anthropic's, read as such and given in OpenAI's shape.
    let edits = f.on_response_headers(&g, 200, Some("application/json"));
    let set: Vec<_> = edits
        .set
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(get(&set, PROVIDER_HEADER), Some("an"));
    assert_eq!(get(&set, ATTEMPTS_HEADER), Some("2"));
    let answer =
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-up",
        "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
        "usage": {"input_tokens": 10, "output_tokens": 5}})
        .to_string()
        .into_bytes();
    let n = answer.len();
    assert_eq!(
        f.on_response_body(&g, n, false, 0, || None),
        ResponseBodyStep::Wait
    );
    let ResponseBodyStep::ReplaceWithStatus(200, out) =
        f.on_response_body(&g, n, true, 0, move || Some(answer))
    else {
        panic!("not translated")
    };
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["choices"][0]["message"]["content"], "hello");
    let rec: Value = serde_json::from_slice(&f.finish(2_000, &store)).unwrap();
    assert_eq!(rec["provider"], "an");
    assert_eq!(rec["upstream_model"], "claude-up");
    assert_eq!(rec["prompt_tokens"], 10);
    let attempts = rec["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        (
            attempts[0]["provider"].as_str(),
            attempts[0]["status"].as_u64(),
            attempts[0]["outcome"].as_str()
        ),
        (Some("oa"), Some(500), Some("server_error"))
    );
    assert_eq!(attempts[0]["latency_ms"], 250);
    assert_eq!(
        (
            attempts[1]["provider"].as_str(),
            attempts[1]["outcome"].as_str()
        ),
        (Some("an"), Some("ok"))
    );
}

#[test]
fn the_budget_reserves_at_the_dearest_target_and_settles_at_the_answering_ones_price() {
    let g = resilient_gw();
    let store = MemoryStore::default();
    let mut f = Flow::new(0);
    let h = head("POST", "/v1/chat/completions", Some("Bearer sk-1"));
    let BodyStep::Forward(fw) = request(&g, &mut f, &store, &h, BODY) else {
        panic!("not forwarded")
    };
    let plan = plan_id(&fw);
    let body = String::from_utf8(fw.body.clone()).unwrap();
    drop(fw);
    attempt(&plan, "oa", "gpt-up", &body, 200);
    f.on_response_headers(&g, 200, Some("application/json"));
    let answer = json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-up",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "x"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000}})
    .to_string()
    .into_bytes();
    let n = answer.len();
    f.on_response_body(&g, n, true, 0, move || Some(answer));
    f.finish(10, &store);
    // Settled at the OpenAI price: 1000 × 1e-6 + 1000 × 2e-6 = $0.003
    // (3,000 micro-dollars) spent, none in flight.
    let (v, _) = crate::budget::SharedStore::get(&store, "sluice.budget.1.k1");
    let v = v.unwrap();
    let spent = u64::from_le_bytes(v[..8].try_into().unwrap());
    let inflight = u64::from_le_bytes(v[8..16].try_into().unwrap());
    assert_eq!((spent, inflight), (3000, 0));
}

#[test]
fn no_answer_from_any_target_is_an_error_in_the_clients_api() {
    let g = resilient_gw();
    let store = MemoryStore::default();
    let mut f = Flow::new(0);
    let mut h = head("POST", "/v1/messages", None);
    h.x_api_key = Some("sk-1");
    let body = r#"{"model":"gpt","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let BodyStep::Forward(fw) = request(&g, &mut f, &store, &h, body) else {
        panic!("not forwarded")
    };
    let plan = plan_id(&fw);
    drop(fw);
    // Both attempts: no answer (connection refused); Envoy replies 503.
    for (p, m) in [("oa", "gpt-up"), ("an", "claude-up")] {
        let head = AttemptHead {
            plan: Some(&plan),
            provider: Some(p),
            model: Some(m),
        };
        let mut a = Attempt::start(&head, 0).unwrap();
        a.on_done(30);
    }
    let edits = f.on_response_headers(&g, 503, Some("text/plain"));
    assert!(edits.hold && edits.remove_content_length);
    let envoy = b"upstream connect error or disconnect/reset before headers".to_vec();
    let n = envoy.len();
    let ResponseBodyStep::ReplaceWithStatus(503, out) =
        f.on_response_body(&g, n, true, 0, move || Some(envoy))
    else {
        panic!("not answered")
    };
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["type"], "error", "Anthropic's error shape: {out}");
    let msg = out["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("oa: no answer after 30 ms") && msg.contains("an: no answer"),
        "{msg}"
    );
    let rec: Value = serde_json::from_slice(&f.finish(100, &store)).unwrap();
    assert_eq!(rec["status"], 503);
    assert_eq!(rec["attempts"][1]["outcome"], "no_response");
}

#[test]
fn an_attempt_without_its_plan_is_refused_not_sent() {
    let head = AttemptHead {
        plan: Some("999999"),
        provider: Some("oa"),
        model: Some("m"),
    };
    let r = Attempt::start(&head, 0).unwrap_err();
    assert_eq!(r.status, 500);
    let head = AttemptHead {
        plan: None,
        provider: Some("oa"),
        model: Some("m"),
    };
    assert_eq!(Attempt::start(&head, 0).unwrap_err().status, 500);
}

#[test]
fn a_request_a_fallback_cannot_carry_is_refused_up_front() {
    let g = resilient_gw();
    let mut f = Flow::new(0);
    let body = r#"{"model":"gpt","n":2,"messages":[{"role":"user","content":"hi"}]}"#;
    let BodyStep::Reply(r) = forward(&g, &mut f, "sk-1", body) else {
        panic!("forwarded")
    };
    assert_eq!(r.status, 400);
    assert_eq!(plans::alive(), 0);
}

#[test]
fn clients_cannot_set_the_router_policy_or_a_plan() {
    // A model without a policy: the client's own router headers are removed.
    let g = gw();
    let mut f = Flow::new(0);
    let BodyStep::Forward(fw) =
        forward(&g, &mut f, "sk-1", r#"{"model":"mock-gpt","messages":[]}"#)
    else {
        panic!("not forwarded")
    };
    let present = [
        ("x-envoy-max-retries", "50"),
        ("x-envoy-upstream-rq-timeout-ms", "1"),
        (PLAN_HEADER, "1"),
    ];
    let edits = fw.header_edits(&present);
    for (name, _) in present {
        assert!(
            edits.contains(&(name, None)),
            "{name} not removed: {edits:?}"
        );
    }
}
