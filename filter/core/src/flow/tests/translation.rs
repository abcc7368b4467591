//! Between client APIs and backends of other wires, through the flow.

use super::support::*;
use crate::anthropic;
use crate::flow::upstream::UPSTREAM_REMOVE;
use crate::flow::*;
use crate::gateway::Gateway;

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
    let rec: serde_json::Value = finish_json(&mut f, 6);
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
    let HeadersStep::Reply(r) =
        f.on_request_headers(&g, &crate::budget::MemoryStore::default(), &h)
    else {
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
    let rec: serde_json::Value = finish_json(&mut f, 1_010);
    assert_eq!(rec["completion_tokens"], 1);
    assert_eq!(rec["ttft_ms"], 4);
    assert_eq!(rec["client_dialect"], "anthropic");
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
