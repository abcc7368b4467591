//! A whole passthrough request through the `Flow` (plus the metric updates
//! the glue derives from it), N times: run under `valgrind --tool=callgrind`
//! to see where the filter's own instructions go (docs/benchmarks.md).
//!
//!     cargo build --release --example profile_flow -p sluice-core
//!     valgrind --tool=callgrind target/release/examples/profile_flow 2000 [translate|stream|translate-stream]
//!
//! `stream`: the answer is a 50-event OpenAI stream with the usage chunk the
//! gateway asked for (what `make bench`'s stream rows send), passed through;
//! `translate-stream`: a 50-event Anthropic stream translated for an OpenAI
//! client.

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

use sluice_core::flow::{BodyStep, Flow, HeadersStep, RequestHead, ResponseBodyStep};

#[path = "../benches/fixtures/mod.rs"]
mod fixtures;

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let mode = args.next();
    let translate = matches!(mode.as_deref(), Some("translate" | "translate-stream"));
    let stream = matches!(mode.as_deref(), Some("stream" | "translate-stream"));
    let gw = fixtures::gateway();
    let body = fixtures::request_2kb(if translate { "claude" } else { "gpt" });
    let sse = if translate {
        fixtures::anthropic_stream(50)
    } else {
        fixtures::openai_stream(50)
    };
    let response = if stream {
        &sse[..]
    } else if translate {
        fixtures::ANTHROPIC_RESPONSE
    } else {
        fixtures::OPENAI_RESPONSE
    };
    let body = if stream {
        let mut v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        v["stream"] = true.into();
        serde_json::to_vec(&v).unwrap()
    } else {
        body
    };
    let content_type = if stream {
        "text/event-stream"
    } else {
        "application/json"
    };
    let store = sluice_core::budget::MemoryStore::default();
    let mut total = 0usize;
    let mut ids = sluice_core::metrics::MetricIds::<u32>::default();
    let mut next = 0u32;
    for _ in 0..n {
        let mut f = Flow::new(0);
        let head = RequestHead {
            method: "POST",
            path: "/v1/chat/completions",
            authorization: Some("Bearer sk-bench"),
            request_id: Some("0b5c2f3e-1a2b-4c5d-8e9f-0a1b2c3d4e5f"),
            ..Default::default()
        };
        assert!(matches!(
            f.on_request_headers(&gw, &sluice_core::budget::MemoryStore::default(), &head),
            HeadersStep::ReadBody
        ));
        if let BodyStep::Forward(fw) =
            f.on_request_body(&gw, &store, body.len(), true, || Some(body.clone()))
        {
            total += fw.body.len();
        }
        f.on_response_headers(&gw, 200, Some(content_type));
        if let ResponseBodyStep::ReplaceWithStatus(_, b) | ResponseBodyStep::Replace(b) =
            f.on_response_body(&gw, response.len(), true, 1, || Some(response.to_vec()))
        {
            total += b.len();
        }
        total += f.finish(2, &store).len();
        ids.emit(
            f.record(),
            false,
            |_, _| {
                next += 1;
                Some(next)
            },
            |id, _, v| total += id as usize + v as usize,
        );
    }
    println!("{total}");
}
