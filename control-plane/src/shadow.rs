//! Online shadow comparison: Envoy mirrors a fraction of live traffic to a
//! shadow filter build; both sides report a digest of what they sent
//! upstream (or of their own answer) with the request id in their usage
//! records. Envoy discards the mirrored answer, so the comparison happens
//! here: records are paired by request id, and the live diff rate and
//! shadow error rate are kept for `sluice status`.
//!
//! The provider answers each side's call anew (and an LLM rarely answers
//! twice alike), so what is compared online is what each build *sent*
//! upstream and the status class it answered with; the answers themselves
//! are compared offline by `sluice-replay` against recorded upstreams.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sluice_records::UsageRecord as UsageIn;

/// An unpaired record is forgotten after this long.
const PAIR_TTL: Duration = Duration::from_secs(60);
const MAX_PENDING: usize = 100_000;
const RECENT_DIFFS: usize = 20;

#[derive(Debug, Clone)]
struct Seen {
    role: String,
    digest: String,
    status: i64,
    latency_ms: i64,
    at: Instant,
}

#[derive(Debug, Default)]
pub struct Pairs {
    pending: HashMap<String, Seen>,
    pub pairs: u64,
    pub diffs: u64,
    pub shadow_errors: u64,
    /// Shadow records whose primary never arrived (or the reverse is normal:
    /// only a fraction of traffic is mirrored).
    pub unpaired_shadow: u64,
    pub latency_delta_ms_sum: i64,
    recent: VecDeque<PairDiff>,
}

pub use crate::api::{PairDiff, ShadowSummary as Summary};

fn class(status: i64) -> i64 {
    status / 100
}

impl Pairs {
    /// Takes a record that carries a role; returns after pairing if its
    /// counterpart is already here.
    pub fn observe(&mut self, u: &UsageIn) {
        let (Some(role), Some(digest)) = (&u.role, &u.digest) else {
            return;
        };
        let now = Instant::now();
        let seen = Seen {
            role: role.to_string(),
            digest: digest.clone(),
            status: i64::from(u.status),
            latency_ms: i64::try_from(u.latency_ms).unwrap_or(i64::MAX),
            at: now,
        };
        match self.pending.remove(&u.request_id) {
            Some(other) if other.role != seen.role => {
                let (p, s) = if seen.role == "shadow" {
                    (other, seen)
                } else {
                    (seen, other)
                };
                self.pairs += 1;
                self.latency_delta_ms_sum += s.latency_ms - p.latency_ms;
                let shadow_error = class(s.status) == 5 && class(p.status) != 5;
                self.shadow_errors += u64::from(shadow_error);
                let same = p.digest == s.digest;
                if !same || class(p.status) != class(s.status) {
                    self.diffs += 1;
                    if self.recent.len() >= RECENT_DIFFS {
                        self.recent.pop_front();
                    }
                    self.recent.push_back(PairDiff {
                        request_id: u.request_id.clone(),
                        primary_status: p.status,
                        shadow_status: s.status,
                        same_upstream_request: same,
                    });
                }
            }
            _ => {
                if self.pending.len() < MAX_PENDING {
                    self.pending.insert(u.request_id.clone(), seen);
                }
            }
        }
    }

    /// Forgets records whose counterpart did not come.
    pub fn expire(&mut self) {
        let now = Instant::now();
        let mut lost = 0;
        self.pending.retain(|_, s| {
            let keep = now.duration_since(s.at) < PAIR_TTL;
            if !keep && s.role == "shadow" {
                lost += 1;
            }
            keep
        });
        self.unpaired_shadow += lost;
    }

    pub fn summary(&self) -> Summary {
        let rate = |n: u64| {
            if self.pairs == 0 {
                0.0
            } else {
                n as f64 / self.pairs as f64
            }
        };
        Summary {
            pairs: self.pairs,
            diffs: self.diffs,
            diff_rate: rate(self.diffs),
            shadow_errors: self.shadow_errors,
            shadow_error_rate: rate(self.shadow_errors),
            unpaired_shadow: self.unpaired_shadow,
            mean_latency_delta_ms: if self.pairs == 0 {
                0.0
            } else {
                self.latency_delta_ms_sum as f64 / self.pairs as f64
            },
            recent_diffs: self.recent.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, role: &str, digest: &str, status: i64) -> UsageIn {
        serde_json::from_value(serde_json::json!({
            "request_id": id, "role": role, "digest": digest, "status": status, "latency_ms": 5
        }))
        .unwrap()
    }

    #[test]
    fn pairs_by_request_id_in_either_order() {
        let mut p = Pairs::default();
        p.observe(&rec("a", "primary", "d1", 200));
        p.observe(&rec("a", "shadow", "d1", 200));
        p.observe(&rec("b", "shadow", "d2", 503));
        p.observe(&rec("b", "primary", "d2", 200));
        p.observe(&rec("c", "primary", "d3", 200));
        p.observe(&rec("c", "shadow", "dX", 200));
        let s = p.summary();
        assert_eq!((s.pairs, s.diffs, s.shadow_errors), (3, 2, 1));
        assert_eq!(s.recent_diffs[1].request_id, "c");
        assert!(!s.recent_diffs[1].same_upstream_request);
    }
}
