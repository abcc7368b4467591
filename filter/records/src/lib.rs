//! The records the filter writes and the control plane and replay tool read,
//! defined once: the per-request usage record, the capture record, and the
//! filter-state names that carry them through Envoy's access log.
//!
//! The filter (wasm, hot path) writes; everything else reads with the same
//! types, so a field added here is a field both sides know about, and the
//! round-trip tests below fail when the writer and the reader drift.

#![cfg_attr(test, allow(clippy::arithmetic_side_effects))]

pub mod capture;
pub mod names;
pub mod usage;

pub use capture::{CaptureRecord, CaptureUpstream, CAPTURE_VERSION};
pub use usage::{Attempt, TokenUsage, UsageRecord, RECORD_VERSION};
