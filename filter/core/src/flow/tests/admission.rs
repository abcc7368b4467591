//! Admission and accounting: budgets, estimates, what a request is charged.

use serde_json::Value;

use super::support::*;
use crate::budget::MemoryStore;
use crate::flow::*;

#[test]
fn a_budget_is_never_silently_skipped_on_an_unpriced_model() {
    let g = budget_gw(false);
    let mut f = Flow::new(0);
    let store = MemoryStore::default();
    let body = r#"{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(admit(&g, &store, &mut f, body), 403);
    assert_eq!(finish_json(&mut f, 1)["error"], "permission_denied");
}

#[test]
fn every_choice_counts_in_the_budget_estimate() {
    // $1 left at $0.001 a token: 100 output tokens fit once, not ×20.
    let g = budget_gw(true);
    let store = MemoryStore::default();
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
    let store = MemoryStore::default();
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
    let rec: serde_json::Value = finish_json(&mut f, 3);
    assert_eq!(rec["usage_source"], "estimated");
    assert_eq!(rec["completion_tokens"], 2);
    assert!(rec["prompt_tokens"].as_u64().unwrap() > 0);
}

/// A gateway whose key `k1` (`sk-1`) has an rpm limit and `k2` (`sk-2`)
/// none; `mock-gpt` is on an OpenAI provider.
fn limited_gw() -> crate::gateway::Gateway {
    gateway_env(
        serde_json::json!({
            "keys": [
                {"id": "k1", "sha256": sluice_config::hash_key("sk-1"), "limits": {"rpm": 5}},
                {"id": "k2", "sha256": sluice_config::hash_key("sk-2"),
                 "limits": {"concurrent_streams": 2}}
            ],
            "providers": [{"name": "mock", "kind": "openai", "cluster": "c", "host": "h",
                           "base_path": "/v1", "api_key_env": "MOCK_KEY"}],
            "models": [{"name": "mock-gpt", "targets": [{"provider": "mock", "model": "up"}]}]
        }),
        |_| Some("s".into()),
    )
}

#[test]
fn only_keys_with_rpm_or_tpm_are_marked_for_global_limits() {
    let g = limited_gw();
    let body = r#"{"model":"mock-gpt","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut f = Flow::new(0);
    assert!(matches!(
        forward(&g, &mut f, "sk-1", body),
        BodyStep::Forward(_)
    ));
    assert_eq!(f.globally_limited_key(), Some("k1"));
    // Concurrent streams stay per Envoy: nothing for the global service.
    let mut f = Flow::new(0);
    assert!(matches!(
        forward(&g, &mut f, "sk-2", body),
        BodyStep::Forward(_)
    ));
    assert_eq!(f.globally_limited_key(), None);
    // A refused request is never marked (it never leaves).
    let mut f = Flow::new(0);
    assert!(matches!(
        forward(&g, &mut f, "sk-nope", body),
        BodyStep::Reply(_)
    ));
    assert_eq!(f.globally_limited_key(), None);
}

#[test]
fn billed_tokens_are_what_the_record_charges() {
    let g = limited_gw();
    let body = r#"{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}"#;
    let mut f = Flow::new(0);
    assert!(matches!(
        forward(&g, &mut f, "sk-1", body),
        BodyStep::Forward(_)
    ));
    assert_eq!(f.billed_tokens(), None);
    f.on_response_headers(&g, 200, Some("application/json"));
    let answer = br#"{"id":"x","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#.to_vec();
    let n = answer.len();
    f.on_response_body(&g, n, true, 1, || Some(answer));
    assert_eq!(f.billed_tokens(), Some(18));
    let rec = finish_json(&mut f, 2);
    assert_eq!(
        (
            rec["prompt_tokens"].as_u64(),
            rec["completion_tokens"].as_u64()
        ),
        (Some(11), Some(7))
    );
}

#[test]
fn envoys_global_refusal_is_answered_in_the_clients_api() {
    // An Anthropic client on an OpenAI provider: the refusal of Envoy's
    // ratelimit filter must not be read as the provider's OpenAI error.
    let g = limited_gw();
    let mut f = Flow::new(0);
    let store = MemoryStore::default();
    let h = RequestHead {
        method: "POST",
        path: "/v1/messages",
        x_api_key: Some("sk-1"),
        ..Default::default()
    };
    let body = r#"{"model":"mock-gpt","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    assert!(matches!(
        request(&g, &mut f, &store, &h, body),
        BodyStep::Forward(_)
    ));
    let edits = f.on_global_rate_limit(false);
    assert!(edits.hold && edits.remove_content_length);
    let envoys = br#"{"error":{"code":"rate_limit_exceeded"}}"#.to_vec();
    let n = envoys.len();
    let out = match f.on_response_body(&g, n, true, 1, || Some(envoys)) {
        ResponseBodyStep::Replace(b) | ResponseBodyStep::ReplaceWithStatus(_, b) => b,
        other => panic!("expected the answer, got {other:?}"),
    };
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("all gateways"));
    let rec = finish_json(&mut f, 2);
    assert_eq!(
        (rec["status"].as_u64(), rec["error"].as_str()),
        (Some(429), Some("rate_limit_exceeded"))
    );
}

fn global_budget_gw() -> crate::gateway::Gateway {
    gateway_env(
        serde_json::json!({
            "keys": [
                {"id": "kb", "sha256": sluice_config::hash_key("sk-b"),
                 "budget": {"remaining_usd": 1.0, "epoch": 3}}
            ],
            "providers": [{"name": "mock", "kind": "openai", "cluster": "c", "host": "h",
                           "base_path": "/v1", "api_key_env": "MOCK_KEY"}],
            "models": [{"name": "mock-gpt", "targets": [{"provider": "mock", "model": "up",
                        "price": {"input": 0.001, "output": 0.002}}]}]
        }),
        |_| Some("s".into()),
    )
}

#[test]
fn a_budget_key_holds_its_estimate_across_envoys_and_settles_what_was_billed() {
    let g = global_budget_gw();
    let body =
        r#"{"model":"mock-gpt","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut f = Flow::new(0);
    assert!(matches!(
        forward(&g, &mut f, "sk-b", body),
        BodyStep::Forward(_)
    ));
    // A budget alone (no rpm/tpm) is counted across Envoys.
    assert_eq!(f.globally_limited_key(), Some("kb"));
    let hold = f.global_budget_hold();
    // At least the 10 completion tokens at $0.002, in micro-dollars.
    assert!(hold >= 20_000, "{hold}");
    f.on_response_headers(&g, 200, Some("application/json"));
    let answer = br#"{"id":"x","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}"#.to_vec();
    let n = answer.len();
    f.on_response_body(&g, n, true, 1, || Some(answer));
    // 11 × 0.001 + 7 × 0.002 = $0.025.
    assert_eq!(f.global_settlement(), Some((18, 25_000)));
    assert_eq!(f.globally_limited_key(), Some("kb"));
}

#[test]
fn a_request_envoy_refused_settles_nothing_and_says_budget() {
    let g = global_budget_gw();
    let body =
        r#"{"model":"mock-gpt","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut f = Flow::new(0);
    assert!(matches!(
        forward(&g, &mut f, "sk-b", body),
        BodyStep::Forward(_)
    ));
    let edits = f.on_global_rate_limit(true);
    assert!(edits.hold);
    let envoys = br#"{"error":{"code":"insufficient_quota"}}"#.to_vec();
    let n = envoys.len();
    let out = match f.on_response_body(&g, n, true, 1, || Some(envoys)) {
        ResponseBodyStep::Replace(b) | ResponseBodyStep::ReplaceWithStatus(_, b) => b,
        other => panic!("expected the answer, got {other:?}"),
    };
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["error"]["code"], "insufficient_quota", "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains("budget"));
    // Nothing was reserved across Envoys: nothing to release or charge.
    assert_eq!(f.global_settlement(), None);
}
