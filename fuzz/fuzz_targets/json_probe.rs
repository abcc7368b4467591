//! The byte-level JSON probe and splice used on passthrough bodies: the
//! top-level member scan, the request probe and the rewrite it produces.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sluice_core::json_splice::top_level_member;
use sluice_core::request_probe::RequestProbe;

fuzz_target!(|data: &[u8]| {
    for key in [&b"model"[..], b"usage", b"stream", b""] {
        if let Some(v) = top_level_member(data, key) {
            // A found member is inside the body.
            let start = v.as_ptr() as usize - data.as_ptr() as usize;
            assert!(start + v.len() <= data.len());
        }
    }
    // (The probe skips what it does not read without validating it — a lone
    // surrogate escape in an ignored string, say — so it accepts some bodies
    // a full parse refuses; those go to the provider as sent.)
    let valid = serde_json::from_slice::<serde_json::Value>(data).is_ok();
    if let Ok(req) = RequestProbe::parse(data) {
        for force in [false, true] {
            let out = req.rewrite_with("upstream-\"model\"", force);
            if valid {
                // The rewrite of a valid body is valid JSON with the new model.
                let v: serde_json::Value =
                    serde_json::from_slice(&out).expect("rewrite of valid JSON is JSON");
                assert_eq!(v["model"], "upstream-\"model\"");
            }
        }
    }
});
