//! Filter-state names. The filter sets `NAME` with `set_property`; Envoy
//! keeps it as `wasm.NAME`, which is what access-log formatters and the gRPC
//! access log's `filter_state_objects` see.

/// The usage record of every request (`UsageRecord`, JSON).
pub const USAGE: &str = "sluice_usage";
/// The capture record of a sampled request (`CaptureRecord`, JSON).
pub const CAPTURE: &str = "sluice_capture";

/// The key id of a request whose key has rpm/tpm limits or a budget: the
/// descriptor of Envoy's global rate limiting (docs/fleet.md).
pub const LIMIT_KEY: &str = "sluice_key";
/// The budget that request holds while in flight (micro-dollars, the
/// estimate at admission; "0" without a budget): reserved across Envoys at
/// request time, released at stream end.
pub const BUDGET_HOLD: &str = "sluice_budget_hold";
/// Set when the response ends, only for a request Envoy's global limits
/// admitted: the key id the stream-end charges are made under (a refused
/// request holds nothing to settle).
pub const SETTLE_KEY: &str = "sluice_settle";
/// The tokens billed for that request, set when the response ends: the
/// `hits_addend` of the tpm charge sent at stream end.
pub const LIMIT_TOKENS: &str = "sluice_tokens";
/// What that request cost (micro-dollars), set when the response ends: the
/// budget's charge sent at stream end.
pub const BUDGET_SPENT: &str = "sluice_budget_spent";

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
