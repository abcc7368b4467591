//! Capture for replay baselines and the online shadow digest.

use super::support::*;
use crate::budget::MemoryStore;
use crate::flow::*;

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
    f.finish(1_003, &MemoryStore::default());
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
    f2.finish(1_001, &MemoryStore::default());
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
    f3.finish(1_001, &MemoryStore::default());
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
        let rec: serde_json::Value = finish_json(&mut f, 1_001);
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
