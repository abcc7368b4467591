//! The whole per-request `Flow`, driven like the glue drives it: arbitrary
//! method, path, headers, request body (in arbitrary pieces), provider
//! status, content type and response bytes (in arbitrary pieces), in every
//! dialect and to every provider kind. Nothing may panic, and every request
//! ends with a usage record that is valid JSON.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sluice_core::budget::MemoryStore;
use sluice_core::flow::attempt::{Attempt, AttemptHead, AttemptStep};
use sluice_core::flow::{BodyStep, Flow, HeadersStep, RequestHead, ResponseBodyStep};
use sluice_core::resilience::PLAN_HEADER;

#[path = "common.rs"]
mod common;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    endpoint: u8,
    model: u8,
    path: &'a str,
    key: u8,
    anthropic_version: bool,
    request_id: Option<&'a str>,
    body: &'a [u8],
    body_cuts: Vec<u16>,
    status: u16,
    content_type: u8,
    response: &'a [u8],
    response_cuts: Vec<u16>,
    /// A resilient model's attempts: (target, provider status; 0 = none).
    attempts: Vec<(u8, u16)>,
    /// Envoy's global rate limiting refused it: 1 a rate limit, 2 a budget.
    global_refusal: u8,
}

const MODELS: [&str; 7] = ["gpt", "claude", "gemini", "split", "fallback", "resp", "unknown-model"];
/// The resilient model's targets, as its endpoints' metadata names them.
const TARGETS: [(&str, &str); 4] = [("ou", "o-up"), ("au", "a-up"), ("gu", "g-up"), ("x", "y")];

fn cut<'a>(bytes: &'a [u8], cuts: &[u16]) -> Vec<&'a [u8]> {
    let mut at = 0usize;
    let mut out = Vec::new();
    for c in cuts.iter().take(64) {
        let n = usize::from(*c) % (bytes.len().saturating_sub(at).saturating_add(1));
        out.push(&bytes[at..at + n]);
        at += n;
    }
    out.push(&bytes[at..]);
    out
}

fuzz_target!(|inp: Input<'_>| {
    let model = MODELS[usize::from(inp.model) % MODELS.len()];
    let gemini_path;
    let (method, path) = match inp.endpoint % 16 {
        0 => ("POST", "/v1/chat/completions"),
        1 => ("POST", "/v1/messages"),
        2 => {
            gemini_path = format!("/v1beta/models/{model}:generateContent");
            ("POST", gemini_path.as_str())
        }
        3 => {
            gemini_path = format!("/v1beta/models/{model}:streamGenerateContent?alt=sse");
            ("POST", gemini_path.as_str())
        }
        4 => ("GET", "/v1/models"),
        5 => ("POST", inp.path),
        6 => ("POST", "/v1/responses"),
        7 => ("POST", "/v1/embeddings"),
        8 => ("POST", "/v1/messages/count_tokens"),
        9 => ("POST", "/v1/responses/input_tokens"),
        10 => {
            gemini_path = format!("/v1beta/models/{model}:batchEmbedContents");
            ("POST", gemini_path.as_str())
        }
        11 => {
            gemini_path = format!("/v1beta/models/{model}:countTokens");
            ("POST", gemini_path.as_str())
        }
        12 => ("POST", "/v1/moderations"),
        13 => ("POST", "/v1/audio/transcriptions"),
        14 => ("POST", "/v1/files/upload"),
        _ => ("GET", inp.path),
    };
    let auth = match inp.key % 3 {
        0 => Some(format!("Bearer {}", common::KEY)),
        1 => Some(format!("Bearer {}", common::LIMITED_KEY)),
        _ => None,
    };
    let store = MemoryStore::default();
    common::with_gateway(|gw| {
        let mut f = Flow::new(1_700_000_000_000);
        let head = RequestHead {
            authority: Some("gw.example"),
            method,
            path,
            authorization: auth.as_deref(),
            x_api_key: None,
            x_goog_api_key: None,
            anthropic_version: inp.anthropic_version.then_some("2023-06-01"),
            content_length: None,
            content_type: match inp.content_type % 3 {
                0 => Some("application/json"),
                1 => Some("multipart/form-data; boundary=XyZ"),
                _ => None,
            },
            request_id: inp.request_id,
            end_of_stream: inp.body.is_empty(),
        };
        let mut plan: Option<String> = None;
        let forwarded = match f.on_request_headers(gw, &store, &head) {
            HeadersStep::ReadBody => {
                let mut buffered = Vec::new();
                let pieces = cut(inp.body, &inp.body_cuts);
                let n = pieces.len();
                let mut forwarded = false;
                for (i, piece) in pieces.into_iter().enumerate() {
                    buffered.extend_from_slice(piece);
                    let eos = i + 1 == n;
                    let whole = buffered.clone();
                    match f.on_request_body(gw, &store, buffered.len(), eos, move || Some(whole)) {
                        BodyStep::Wait | BodyStep::Pass => continue,
                        BodyStep::Reply(_) => break,
                        BodyStep::Forward(fw) => {
                            let _ = fw.header_edits(&[]).len();
                            plan = fw
                                .set
                                .iter()
                                .find(|(k, _)| *k == PLAN_HEADER)
                                .map(|(_, v)| v.to_string());
                            forwarded = true;
                            break;
                        }
                    }
                }
                forwarded
            }
            HeadersStep::Forward(fw) => {
                let _ = fw.header_edits(&[]).len();
                true
            }
            HeadersStep::Reply(_) | HeadersStep::NotServed => false,
        };
        // Each attempt, as the attempt filter drives it (Envoy's retries).
        for (t, status) in inp.attempts.iter().take(4) {
            let (provider, model) = TARGETS[usize::from(*t) % TARGETS.len()];
            let ah = AttemptHead {
                plan: plan.as_deref(),
                provider: Some(provider),
                model: Some(model),
            };
            if let Ok(mut a) = Attempt::start(&ah, 1_700_000_000_001) {
                if let AttemptStep::Forward(fw) = a.on_request_body(true) {
                    let _ = fw.header_edits(&[("authorization", "x")]).len();
                }
                if *status != 0 {
                    a.on_response_headers(*status, 1_700_000_000_002);
                }
                a.on_done(1_700_000_000_003);
            }
        }
        if forwarded {
            let ct = match inp.content_type % 4 {
                0 => Some("application/json"),
                1 => Some("text/event-stream"),
                2 => Some("text/event-stream; charset=utf-8"),
                _ => None,
            };
            let _ = f.global_budget_hold();
            let _ = match inp.global_refusal % 3 {
                1 => f.on_global_rate_limit(false),
                2 => f.on_global_rate_limit(true),
                _ => f.on_response_headers(gw, inp.status, ct),
            };
            let pieces = cut(inp.response, &inp.response_cuts);
            let n = pieces.len();
            let mut pending: Vec<u8> = Vec::new();
            for (i, piece) in pieces.into_iter().enumerate() {
                pending.extend_from_slice(piece);
                let eos = i + 1 == n;
                let _ = f.needs_response_bytes(eos);
                let _ = f.needs_clock();
                let bytes = pending.clone();
                let step =
                    f.on_response_body(gw, pending.len(), eos, 1_700_000_000_005, move || {
                        Some(bytes)
                    });
                // Envoy keeps a paused body and hands it back, grown.
                if step != ResponseBodyStep::Wait {
                    pending.clear();
                }
            }
        }
        let _ = f.global_settlement();
        let record = f.finish(1_700_000_000_010, &store);
        assert!(serde_json::from_slice::<serde_json::Value>(&record).is_ok());
        let _ = f.take_capture();
        drop(f);
        // No plan outlives its request.
        assert_eq!(sluice_core::resilience::plans::alive(), 0);
    });
});
