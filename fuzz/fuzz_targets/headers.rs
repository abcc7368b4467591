//! Envoy's serialized header map, as the glue reads it from the ABI buffer,
//! then key extraction and the request-headers phase: any bytes, no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::flow::{Flow, RequestHead};

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let headers = sluice_core::header_map::parse(data);
    let get = |n: &str| sluice_core::header_map::get(&headers, n);
    let _ = sluice_core::auth::presented_key(
        get("authorization"),
        get("x-api-key"),
        get("x-goog-api-key"),
    );
    // The same values anywhere a key can come from.
    for (_, v) in &headers {
        let _ = sluice_core::auth::presented_key(Some(v), Some(v), Some(v));
    }
    let head = RequestHead::from_headers(&headers, data.first().is_some_and(|b| b & 1 == 1));
    common::with_gateway(|gw| {
        let mut f = Flow::new(1_700_000_000_000);
        let _ = f.on_request_headers(gw, &sluice_core::budget::MemoryStore::default(), &head);
        let _ = f.finish(
            1_700_000_000_001,
            &sluice_core::budget::MemoryStore::default(),
        );
    });
});
