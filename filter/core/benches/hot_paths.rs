//! Criterion micro-benchmarks of the per-request and per-event hot paths,
//! native. `make bench-micro` runs them.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice_core::canonical::Dialect;
use sluice_core::flow::{BodyStep, Flow, HeadersStep, RequestHead, ResponseBodyStep};
use sluice_core::gateway::Gateway;
use sluice_core::sse::SseParser;
use sluice_core::translate::stream::{Decoder, Encoder, StreamTranslator};

fn gateway() -> Gateway {
    let cfg = serde_json::from_value(serde_json::json!({
        "keys": [{"id": "k", "sha256": sluice_config::hash_key("sk-bench")}],
        "providers": [
            {"name": "oa", "kind": "openai", "cluster": "c", "host": "h", "auth": {"type": "none"}},
            {"name": "an", "kind": "anthropic", "cluster": "c", "host": "h", "auth": {"type": "none"}}
        ],
        "models": [
            {"name": "gpt", "targets": [{"provider": "oa", "model": "up"}]},
            {"name": "claude", "targets": [{"provider": "an", "model": "up"}]}
        ]
    }))
    .unwrap();
    Gateway::new(cfg, |_| None).unwrap()
}

fn request_2kb(model: &str) -> Vec<u8> {
    let text = "Summarise the following paragraph about gateways and meshes. ".repeat(32);
    serde_json::to_vec(&serde_json::json!({
        "model": model, "temperature": 0.2,
        "messages": [{"role": "user", "content": &text[..1900]}]
    }))
    .unwrap()
}

const OPENAI_RESPONSE: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"up","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the Sluice mock provider. This"},"finish_reason":"stop"}],"usage":{"prompt_tokens":480,"completion_tokens":8,"total_tokens":488}}"#;
const ANTHROPIC_RESPONSE: &[u8] = br#"{"id":"msg_1","type":"message","role":"assistant","model":"up","content":[{"type":"text","text":"Hello from the Sluice mock provider. This"}],"stop_reason":"end_turn","usage":{"input_tokens":480,"output_tokens":8}}"#;

fn one_request(gw: &Gateway, body: &[u8], response: &[u8]) -> usize {
    let mut f = Flow::new(0);
    let head = RequestHead {
        method: "POST",
        path: "/v1/chat/completions",
        authorization: Some("Bearer sk-bench"),
        request_id: Some("r"),
        ..Default::default()
    };
    assert_eq!(f.on_request_headers(gw, &head), HeadersStep::ReadBody);
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
        ("translate openai→anthropic, per event", Dialect::Anthropic),
        ("translate openai→gemini, per event", Dialect::Gemini),
        ("re-encode openai→openai, per event", Dialect::OpenAi),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut t = StreamTranslator::new(
                    1 << 20,
                    Decoder::for_provider(Dialect::OpenAi),
                    Encoder::for_client(client, "gpt", 1, false),
                );
                t.feed(black_box(&stream), true).len()
            })
        });
    }
    g.finish();
}

criterion_group!(benches, flows, streams);
criterion_main!(benches);
