//! Criterion micro-benchmarks of the per-request and per-event hot paths,
//! native. `make bench-micro` runs them.

// Test, benchmark and profiling code may panic: the no-panic lints are for
// the filter itself (workspace Cargo.toml).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::string_slice,
    clippy::arithmetic_side_effects
)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::flow::{BodyStep, Flow, HeadersStep, RequestHead, ResponseBodyStep};
use sluice_core::gateway::Gateway;

mod fixtures;
use fixtures::{gateway, request_2kb, ANTHROPIC_RESPONSE, OPENAI_RESPONSE};
use sluice_core::framing::sse::SseParser;
use sluice_core::translate::stream::StreamTranslator;

fn one_request(gw: &Gateway, body: &[u8], response: &[u8]) -> usize {
    let mut f = Flow::new(0);
    let head = RequestHead {
        method: "POST",
        path: "/v1/chat/completions",
        authorization: Some("Bearer sk-bench"),
        request_id: Some("r"),
        ..Default::default()
    };
    assert_eq!(
        f.on_request_headers(gw, &sluice_core::budget::MemoryStore::default(), &head),
        HeadersStep::ReadBody
    );
    let fw = match f.on_request_body(
        gw,
        &sluice_core::budget::MemoryStore::default(),
        body.len(),
        true,
        || Some(body.to_vec()),
    ) {
        BodyStep::Forward(fw) => fw.body.len(),
        _ => unreachable!(),
    };
    f.on_response_headers(gw, 200, Some("application/json"));
    let r = f.on_response_body(gw, response.len(), true, 1, || Some(response.to_vec()));
    let n = match r {
        ResponseBodyStep::ReplaceWithStatus(_, b) | ResponseBodyStep::Replace(b) => b.len(),
        _ => 0,
    };
    fw + n
        + f.finish(2, &sluice_core::budget::MemoryStore::default())
            .len()
}

fn flows(c: &mut Criterion) {
    let gw = gateway();
    let mut g = c.benchmark_group("request");
    let gpt = request_2kb("gpt");
    let claude = request_2kb("claude");
    g.bench_function("passthrough openai→openai, 2 KB, whole request", |b| {
        b.iter(|| one_request(&gw, black_box(&gpt), OPENAI_RESPONSE))
    });
    g.bench_function("translate openai→anthropic, 2 KB, whole request", |b| {
        b.iter(|| one_request(&gw, black_box(&claude), ANTHROPIC_RESPONSE))
    });
    g.finish();
}

fn openai_stream(events: usize) -> Vec<u8> {
    let mut s = Vec::new();
    for i in 0..events {
        s.extend_from_slice(format!(
            "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\" word{i}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ).as_bytes());
    }
    s.extend_from_slice(b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":50}}\n\ndata: [DONE]\n\n");
    s
}

fn streams(c: &mut Criterion) {
    let stream = openai_stream(50);
    let events = 53u64;
    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Elements(events));
    g.bench_function("sse parse, per event", |b| {
        b.iter(|| {
            let mut p = SseParser::new(1 << 20);
            let mut n = 0;
            p.feed(black_box(&stream), true, |e| n += e.raw.len())
                .unwrap();
            n
        })
    });
    for (name, client) in [
        ("translate openai→anthropic, per event", "anthropic"),
        ("translate openai→gemini, per event", "gemini"),
        ("re-encode openai→openai, per event", "openai"),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut t = StreamTranslator::between(
                    sluice_core::registry::backend("openai").unwrap(),
                    sluice_core::registry::api(client).unwrap(),
                    1 << 20,
                    "gpt",
                    1,
                    false,
                );
                t.feed(black_box(&stream), true).len()
            })
        });
    }
    g.finish();
}

/// ~1 KB of chat body with prose in it.
fn body_1kb(with_pii: bool) -> Vec<u8> {
    let mut text = "Please summarise the quarterly report for the team. ".repeat(18);
    text.truncate(900);
    if with_pii {
        text.push_str(" Contact jane.doe@example.com or 4111 1111 1111 1111.");
    }
    serde_json::to_vec(&serde_json::json!({
        "model": "gpt", "messages": [{"role": "user", "content": text}]
    }))
    .unwrap()
}

fn guardrails(c: &mut Criterion) {
    use sluice_config::{GuardDirection, Guardrails};
    use sluice_core::guardrails::Policy;
    // The bench's policy: 10 custom regexes and 7 detectors, masking.
    let mut rules: Vec<serde_json::Value> = [
        r"\bproject-[a-z]{6}\b", r"\bACME-\d{6}\b", r"(?i)confidential", r"\binternal-only\b",
        r"\bTICKET-\d+\b", r"(?i)password\s*=\s*\S+", r"\b\d{3}-\d{3}-\d{3}\b",
        r"(?i)do not distribute", r"\bEMP\d{5}\b", r"\bhost-[0-9a-f]{8}\b",
    ]
    .iter()
    .enumerate()
    .map(|(i, rx)| serde_json::json!({"name": format!("c{i}"), "detector": {"regex": rx}, "action": "mask"}))
    .collect();
    for d in [
        "email",
        "phone",
        "us_ssn",
        "payment_card",
        "iban",
        "ip_address",
        "secret",
    ] {
        rules.push(serde_json::json!({"name": d, "detector": d, "action": "mask"}));
    }
    let g: Guardrails = serde_json::from_value(serde_json::json!({"rules": rules})).unwrap();
    let policy = Policy::new(&g, |_| None).unwrap();
    let mut grp = c.benchmark_group("guardrails");
    for (name, pii) in [
        ("scan 1 KB body, nothing found", false),
        ("scan 1 KB body, 2 PII masked", true),
    ] {
        let body = body_1kb(pii);
        grp.throughput(Throughput::Bytes(body.len() as u64));
        grp.bench_function(name, |b| {
            b.iter(|| {
                let mut hits = Vec::new();
                policy
                    .apply_json(
                        GuardDirection::Request,
                        "gpt",
                        "k",
                        black_box(&body),
                        &mut hits,
                    )
                    .map(|o| o.map_or(0, |v| v.len()))
                    .unwrap_or(0)
            })
        });
    }
    grp.finish();
}

fn tokens(c: &mut Criterion) {
    let text =
        "Please summarise the quarterly report for the team. ".repeat(20)[..1024].to_string();
    let mut grp = c.benchmark_group("tokens");
    grp.throughput(Throughput::Bytes(1024));
    // First use builds the encoding (once per VM); measured warm here.
    sluice_core::tokens::count("gpt-4o", "warm");
    sluice_core::tokens::count("claude", "warm");
    grp.bench_function("count 1 KB, o200k", |b| {
        b.iter(|| sluice_core::tokens::count("gpt-4o", black_box(&text)))
    });
    grp.bench_function("count 1 KB, cl100k", |b| {
        b.iter(|| sluice_core::tokens::count("claude", black_box(&text)))
    });
    grp.finish();
}

criterion_group!(benches, flows, streams, guardrails, tokens);
criterion_main!(benches);
