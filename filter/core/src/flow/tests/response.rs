//! The answer: buffered and streamed, metered, bounded, guarded.

use serde_json::Value;

use super::support::*;
use crate::budget::MemoryStore;
use crate::flow::*;
use crate::gateway::Gateway;

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
        let g = gateway_env(cfg, |_| Some("s".into()));
        let mut f = Flow::new(0);
        let h = RequestHead {
            method: "POST",
            path,
            x_api_key: Some("sk-1"),
            anthropic_version: Some("2023-06-01"),
            request_id: Some("r"),
            ..Default::default()
        };
        assert_eq!(
            f.on_request_headers(&g, &crate::budget::MemoryStore::default(), &h),
            HeadersStep::ReadBody
        );
        let b =
            br#"{"model":"mock-gpt","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#
                .to_vec();
        let store = MemoryStore::default();
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

/// A provider's error event mid-stream (passthrough): passed on as it is,
/// and the record says the stream did not complete.
#[test]
fn a_passthrough_streams_error_event_marks_it_incomplete() {
    let g = gw();
    let mut f = Flow::new(100);
    assert!(matches!(
        forward(&g, &mut f, "sk-1", r#"{"model":"mock-gpt","stream":true}"#),
        BodyStep::Forward(_)
    ));
    f.on_response_headers(&g, 200, Some("text/event-stream"));
    let body = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n",
        "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n"
    )
    .as_bytes()
    .to_vec();
    let n = body.len();
    assert_eq!(
        f.on_response_body(&g, n, true, 1, || Some(body)),
        ResponseBodyStep::Pass
    );
    assert_eq!(finish_json(&mut f, 9)["completed"], false);
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
    let _ = f.on_request_headers(
        &g,
        &crate::budget::MemoryStore::default(),
        &head("GET", "/v1/models", Some("Bearer sk-1")),
    );
    assert_eq!(
        f.on_response_headers(&g, 200, Some("application/json")),
        ResponseHeaders::default()
    );
    assert_eq!(
        f.on_response_body(&g, 5, true, 1, || panic!("must not read")),
        ResponseBodyStep::Pass
    );
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
