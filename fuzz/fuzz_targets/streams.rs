//! The SSE parser and every stream translator (each provider kind to each
//! client dialect, with and without response guardrails), fed the same
//! bytes in arbitrary pieces: no panic, bounded output.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::registry::APIS;
use sluice_core::registry::BACKENDS;
use sluice_core::framing::sse::SseParser;
use sluice_core::translate::stream::StreamTranslator;

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let Some((&step, bytes)) = rest.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    // The parser alone: events must tile the input.
    let mut p = SseParser::new(4096);
    let mut seen = 0usize;
    let chunks: Vec<&[u8]> = bytes.chunks(step).collect();
    for (i, c) in chunks.iter().enumerate() {
        let eos = i + 1 == chunks.len();
        if p.feed(c, eos, |ev| seen += ev.raw.len()).is_err() {
            break;
        }
    }
    // Every registered backend to every registered client API.
    let from = BACKENDS[usize::from(sel) % BACKENDS.len()];
    let to = APIS[usize::from(sel / 3) % APIS.len()];
    let include_usage = sel & 0x80 != 0;
    let mut t =
        StreamTranslator::between(from, to, 4096, "public-model", 1_700_000_000, include_usage);
    let mut out = 0usize;
    for (i, c) in chunks.iter().enumerate() {
        out += t.feed(c, i + 1 == chunks.len()).len();
    }
    if chunks.is_empty() {
        out += t.feed(&[], true).len();
    }
    // Output is bounded by the input (plus framing per event).
    assert!(out <= 64 * 1024 + 64 * bytes.len());
});
