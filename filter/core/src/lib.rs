//! Sluice gateway logic, independent of any proxy host.
//!
//! The proxy-wasm filter (`sluice-filter`) is a thin layer that moves bytes
//! between Envoy and a [`flow::Flow`]; everything that decides anything lives
//! here and is tested natively (`cargo test`) and compiled to wasm32-wasip1.

// Tests may do arithmetic and slice strings freely (clippy.toml covers the
// other no-panic lints for tests).
#![cfg_attr(test, allow(clippy::arithmetic_side_effects, clippy::string_slice))]

pub mod anthropic;
pub mod api;
pub mod auth;
pub mod backend;
pub mod budget;
pub mod canonical;
pub mod capture;
pub mod error;
pub mod flow;
pub mod framing;
pub mod gateway;
pub mod gemini;
pub mod guardrails;
pub mod header_map;
pub mod json_splice;
pub mod limits;
pub mod metrics;
pub mod needle;
pub mod openai;
pub mod registry;
pub mod request_probe;
pub mod resilience;
pub mod retry_policy;
pub mod routing;
pub mod tokens;
pub mod translate;

pub use sluice_config as config;
pub use sluice_records as records;
