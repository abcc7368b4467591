//! Replay baselines for Sluice (docs/replay.md): the record format, the
//! sanitizer, canonical comparison under a versioned ruleset, attribution of
//! each difference to the module that produced it, the replay runner and
//! the release gate. `sluice-replay` (src/main.rs) is a thin CLI over it;
//! the control plane uses the record format and sanitizer for captures.

pub mod compare;
pub mod record;
pub mod report;
pub mod ruleset;
pub mod runner;
pub mod sanitize;
