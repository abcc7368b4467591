//! Token counting and embeddings (`flow/operations.rs`): which side counts,
//! what each provider gets, how the answer comes back, and what is billed.

use serde_json::{json, Value};

use super::support::*;
use crate::budget::MemoryStore;
use crate::flow::*;

fn forwarded<'g>(step: BodyStep<'g>) -> Forward<'g> {
    match step {
        BodyStep::Forward(f) => f,
        other => panic!("not forwarded: {other:?}"),
    }
}

#[test]
fn token_counts_go_to_a_provider_of_the_clients_api_or_are_estimated() {
    let g = multi_gw();
    let body = r#"{"model":"claude","messages":[{"role":"user","content":"hello there"}]}"#;
    let mut f = Flow::new(0);
    let fw = forwarded(send(&g, &mut f, "POST", "/v1/messages/count_tokens", body));
    assert_eq!(header(&fw, ":path"), Some("/v1/messages/count_tokens"));
    let sent: Value = serde_json::from_slice(&fw.body).unwrap();
    assert_eq!(sent["model"], "claude-up");
    // The provider's answer passes as it is and bills nothing.
    f.on_response_headers(&g, 200, Some("application/json"));
    let answer = br#"{"input_tokens":12}"#.to_vec();
    let step = f.on_response_body(&g, answer.len(), true, 1, || Some(answer.clone()));
    assert_eq!(step, ResponseBodyStep::Pass);
    let rec = finish_json(&mut f, 2);
    assert_eq!(rec["operation"], "count_tokens");
    assert_eq!(
        (rec["prompt_tokens"].as_u64(), rec["usage_source"].as_str()),
        (Some(0), Some("none"))
    );

    // Another kind: counted here, labelled.
    let body = r#"{"model":"gpt","messages":[{"role":"user","content":"hello there"}]}"#;
    let mut f = Flow::new(0);
    let BodyStep::Reply(r) = send(&g, &mut f, "POST", "/v1/messages/count_tokens", body) else {
        panic!("not answered locally");
    };
    assert_eq!(r.status, 200);
    assert!(r.headers.contains(&(TOKEN_COUNT_HEADER, "estimate".into())));
    let n = serde_json::from_slice::<Value>(&r.body).unwrap()["input_tokens"]
        .as_u64()
        .unwrap();
    assert!((2..20).contains(&n), "{n}");
    // Gemini's shape, for a Gemini client of an Anthropic model.
    let mut f = Flow::new(0);
    let BodyStep::Reply(r) = send(
        &g,
        &mut f,
        "POST",
        "/v1beta/models/claude:countTokens",
        r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
    ) else {
        panic!("not answered locally");
    };
    assert!(serde_json::from_slice::<Value>(&r.body).unwrap()["totalTokens"].as_u64() > Some(0));
}

#[test]
fn embeddings_are_translated_both_ways_and_billed_by_input() {
    let g = multi_gw();
    let mut f = Flow::new(0);
    let body = r#"{"model":"gem","input":["a b c","d"],"dimensions":2,"encoding_format":"base64"}"#;
    let fw = forwarded(send(&g, &mut f, "POST", "/v1/embeddings", body));
    assert_eq!(
        header(&fw, ":path"),
        Some("/v1beta/models/gem-up:batchEmbedContents")
    );
    let sent: Value = serde_json::from_slice(&fw.body).unwrap();
    assert_eq!(sent["requests"][1]["model"], "models/gem-up");
    assert_eq!(sent["requests"][0]["outputDimensionality"], 2);
    f.on_response_headers(&g, 200, Some("application/json"));
    let answer = json!({"embeddings": [{"values": [1.0, 0.5]}, {"values": [0.0, -1.0]}]})
        .to_string()
        .into_bytes();
    let step = f.on_response_body(&g, answer.len(), true, 1, || Some(answer.clone()));
    let ResponseBodyStep::ReplaceWithStatus(200, out) = step else {
        panic!("not translated: {step:?}");
    };
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        out["data"][0]["embedding"],
        crate::canonical::embeddings::base64_f32(&[1.0, 0.5])
    );
    assert_eq!(out["model"], "gem");
    let rec = finish_json(&mut f, 2);
    assert_eq!(rec["operation"], "embeddings");
    assert_eq!(rec["usage_source"], "estimated");
    assert_eq!(rec["prompt_tokens"], out["usage"]["prompt_tokens"]);
    assert!(rec["prompt_tokens"].as_u64() > Some(0));

    // A Gemini client of an OpenAI model: one input, one answer.
    let mut f = Flow::new(0);
    let fw = forwarded(send(
        &g,
        &mut f,
        "POST",
        "/v1beta/models/gpt:embedContent",
        r#"{"content":{"parts":[{"text":"hey"}]}}"#,
    ));
    assert_eq!(header(&fw, ":path"), Some("/v1/embeddings"));
    f.on_response_headers(&g, 200, Some("application/json"));
    let answer = br#"{"data":[{"index":0,"embedding":[0.25]}],"usage":{"prompt_tokens":3,"total_tokens":3}}"#.to_vec();
    let ResponseBodyStep::ReplaceWithStatus(200, out) =
        f.on_response_body(&g, answer.len(), true, 1, || Some(answer.clone()))
    else {
        panic!("not translated");
    };
    assert_eq!(
        serde_json::from_slice::<Value>(&out).unwrap(),
        json!({"embedding": {"values": [0.25]}})
    );
    let rec = finish_json(&mut f, 2);
    assert_eq!(
        (rec["prompt_tokens"].as_u64(), rec["usage_source"].as_str()),
        (Some(3), Some("provider"))
    );

    // No embeddings at Anthropic.
    let mut f = Flow::new(0);
    let BodyStep::Reply(r) = send(
        &g,
        &mut f,
        "POST",
        "/v1/embeddings",
        r#"{"model":"claude","input":"x"}"#,
    ) else {
        panic!("not refused");
    };
    assert_eq!(r.status, 400);
}

#[test]
fn an_embeddings_budget_is_reserved_and_settled_at_the_input_price() {
    let g = budget_gw(true);
    let store = MemoryStore::default();
    let mut f = Flow::new(0);
    let h = head("POST", "/v1/embeddings", Some("Bearer sk-1"));
    forwarded(request(
        &g,
        &mut f,
        &store,
        &h,
        r#"{"model":"mock-gpt","input":"hello"}"#,
    ));
    f.on_response_headers(&g, 200, Some("application/json"));
    let answer =
        br#"{"data":[{"index":0,"embedding":[0.1]}],"usage":{"prompt_tokens":7,"total_tokens":7}}"#
            .to_vec();
    assert_eq!(
        f.on_response_body(&g, answer.len(), true, 1, || Some(answer.clone())),
        ResponseBodyStep::Pass
    );
    let rec = serde_json::from_slice::<Value>(&f.finish(5, &store)).unwrap();
    assert_eq!(rec["prompt_tokens"], 7);
    // 7 input tokens at $0.001, in micro-dollars.
    let (v, _) = crate::budget::SharedStore::get(&store, "sluice.budget.1.k1");
    let spent = u64::from_le_bytes(v.unwrap()[..8].try_into().unwrap());
    assert_eq!(spent, 7 * 1000);
}

#[test]
fn request_guardrails_apply_to_embedding_inputs() {
    let mut cfg: sluice_config::PluginConfig = serde_json::from_value(json!({
        "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
        "providers": [{"name": "ge", "kind": "gemini", "cluster": "c", "host": "h",
                       "auth": {"type": "none"}}],
        "models": [{"name": "gem", "targets": [{"provider": "ge", "model": "g"}]}]
    }))
    .unwrap();
    cfg.guardrails = serde_json::from_value(json!({"rules": [
        {"name": "mail", "detector": "email", "action": "mask", "on": "request"},
        {"name": "secret", "detector": {"regex": "top-secret"}, "action": "block",
         "on": "request"}]}))
    .unwrap();
    let g = crate::gateway::Gateway::new(cfg, |_| None).unwrap();
    // Blocked in an OpenAI body and in a Gemini batch.
    for (path, body) in [
        (
            "/v1/embeddings",
            r#"{"model":"gem","input":["fine","top-secret plan"]}"#,
        ),
        (
            "/v1beta/models/gem:batchEmbedContents",
            r#"{"requests":[{"content":{"parts":[{"text":"top-secret"}]}}]}"#,
        ),
    ] {
        let mut f = Flow::new(0);
        let BodyStep::Reply(r) = send(&g, &mut f, "POST", path, body) else {
            panic!("not blocked: {path}");
        };
        assert_eq!(r.status, 400, "{path}");
    }
    // Masked before the provider sees it.
    let mut f = Flow::new(0);
    let fw = forwarded(send(
        &g,
        &mut f,
        "POST",
        "/v1/embeddings",
        r#"{"model":"gem","input":"mail me at a@b.example"}"#,
    ));
    let sent = String::from_utf8(fw.body.clone()).unwrap();
    assert!(!sent.contains("a@b.example"), "{sent}");
}
