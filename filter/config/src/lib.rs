//! The Sluice plugin configuration: one serde type, delivered to the filter as
//! the wasm plugin `configuration` (JSON), and produced by the control plane.
//!
//! This crate deliberately has no proxy-wasm dependency so that the control
//! plane, the CLI and tests can build, validate and serialise configurations
//! natively. `docs/configuration.md` documents the format field by field.

// Tests may do arithmetic and slice strings freely (clippy.toml covers the
// other no-panic lints for tests).
#![cfg_attr(test, allow(clippy::arithmetic_side_effects, clippy::string_slice))]

mod schema;
mod validate;

pub use schema::*;
pub use validate::ConfigError;

use sha2::{Digest, Sha256};

/// SHA-256 of a virtual key, as lowercase hex: the only form in which virtual
/// keys are ever stored or pushed.
pub fn hash_key(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

impl PluginConfig {
    /// Parses and validates a configuration. Every problem found is reported,
    /// not just the first, so an operator can fix a bad push in one go.
    pub fn from_json(bytes: &[u8]) -> Result<Self, Vec<ConfigError>> {
        let cfg: PluginConfig = serde_json::from_slice(bytes)
            .map_err(|e| vec![ConfigError::new("", format!("invalid JSON: {e}"))])?;
        cfg.validate()?;
        Ok(cfg)
    }
}
