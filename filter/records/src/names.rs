//! Filter-state names. The filter sets `NAME` with `set_property`; Envoy
//! keeps it as `wasm.NAME`, which is what access-log formatters and the gRPC
//! access log's `filter_state_objects` see.

/// The usage record of every request (`UsageRecord`, JSON).
pub const USAGE: &str = "sluice_usage";
/// The capture record of a sampled request (`CaptureRecord`, JSON).
pub const CAPTURE: &str = "sluice_capture";

/// Envoy's prefix for filter state a wasm filter sets.
pub const WASM_PREFIX: &str = "wasm.";

/// `wasm.sluice_usage`, as the access log names it.
pub const USAGE_FILTER_STATE: &str = "wasm.sluice_usage";
/// `wasm.sluice_capture`, as the access log names it.
pub const CAPTURE_FILTER_STATE: &str = "wasm.sluice_capture";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_log_names_are_the_wasm_prefixed_property_names() {
        assert_eq!(USAGE_FILTER_STATE, format!("{WASM_PREFIX}{USAGE}"));
        assert_eq!(CAPTURE_FILTER_STATE, format!("{WASM_PREFIX}{CAPTURE}"));
    }
}
