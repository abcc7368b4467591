//! Budget prechecks between config pushes.
//!
//! The control plane pushes each key's remaining budget. Every request
//! reserves its estimated cost (prompt ≈ body bytes / 4 tokens, completion =
//! `max_tokens` or a default) against a per-Envoy counter in proxy-wasm shared
//! data, updated with compare-and-swap so all worker VMs see one total; the
//! actual cost replaces the reservation when the request ends. A request is
//! refused when spent + in-flight + its estimate would pass the remaining
//! budget. Counters are keyed by the budget epoch: only a push that (re)sets
//! the budget starts them from zero.

/// Per-Envoy shared storage (proxy-wasm shared data), the one host service
/// the core needs besides the request itself.
pub trait SharedStore {
    /// The value and its compare-and-swap token.
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>);
    /// Writes if `cas` still matches; false on a mismatch (retry). `None`
    /// (the key was absent when read) creates only: false if another VM
    /// created it in between, so concurrent first writes never overwrite
    /// each other.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool;
}

/// Completion tokens assumed when the request sets no `max_tokens`.
pub const DEFAULT_ESTIMATED_COMPLETION: u64 = 256;
const CAS_RETRIES: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    key: String,
    micros: u64,
}

impl Reservation {
    /// What it holds, in micro-dollars.
    pub fn micros(&self) -> u64 {
        self.micros
    }
}

/// Dollars as whole micro-dollars, rounded up (the unit of every budget
/// counter, in the VM and across Envoys).
pub fn micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        (usd * 1e6).ceil() as u64
    } else {
        0
    }
}

fn decode(v: Option<Vec<u8>>) -> (u64, u64) {
    match v {
        Some(b) if b.len() == 16 => {
            let mut s = [0u8; 8];
            let mut i = [0u8; 8];
            let (spent, inflight) = b.split_at(8);
            s.copy_from_slice(spent);
            i.copy_from_slice(inflight);
            (u64::from_le_bytes(s), u64::from_le_bytes(i))
        }
        _ => (0, 0),
    }
}

fn encode(spent: u64, inflight: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&spent.to_le_bytes());
    b[8..].copy_from_slice(&inflight.to_le_bytes());
    b
}

fn update(store: &dyn SharedStore, key: &str, f: impl Fn(u64, u64) -> Option<(u64, u64)>) -> bool {
    for _ in 0..CAS_RETRIES {
        let (v, cas) = store.get(key);
        let (spent, inflight) = decode(v);
        let Some((s, i)) = f(spent, inflight) else {
            return false;
        };
        if store.set(key, &encode(s, i), cas) {
            return true;
        }
    }
    false
}

/// Reserves `estimate_usd` against `remaining_usd`; `None` when it does not fit.
pub fn reserve(
    store: &dyn SharedStore,
    epoch: u64,
    key_id: &str,
    remaining_usd: f64,
    estimate_usd: f64,
) -> Option<Reservation> {
    let key = format!("sluice.budget.{epoch}.{key_id}");
    let limit = micros(remaining_usd);
    let est = micros(estimate_usd);
    let ok = update(store, &key, |spent, inflight| {
        (spent.saturating_add(inflight).saturating_add(est) <= limit)
            .then_some((spent, inflight.saturating_add(est)))
    });
    ok.then_some(Reservation { key, micros: est })
}

/// Replaces a reservation with the actual cost.
pub fn settle(store: &dyn SharedStore, r: &Reservation, actual_usd: f64) {
    let actual = micros(actual_usd);
    update(store, &r.key, |spent, inflight| {
        Some((
            spent.saturating_add(actual),
            inflight.saturating_sub(r.micros),
        ))
    });
}

/// An in-process store (tests, benchmarks, and hosts without shared data).
#[derive(Debug, Default)]
pub struct MemoryStore {
    map: std::cell::RefCell<std::collections::HashMap<String, (Vec<u8>, u32)>>,
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        match self.map.borrow().get(key) {
            Some((v, c)) => (Some(v.clone()), Some(*c)),
            None => (None, None),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        let mut m = self.map.borrow_mut();
        let cur = m.get(key).map(|(_, c)| *c);
        if cas != cur {
            return false;
        }
        m.insert(
            key.to_string(),
            (value.to_vec(), cur.unwrap_or(0).wrapping_add(1).max(1)),
        );
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_bound_concurrent_spend() {
        let s = MemoryStore::default();
        // $1 left, $0.30 per request estimated: three fit, the fourth not.
        let r: Vec<_> = (0..4).map(|_| reserve(&s, 7, "k", 1.0, 0.3)).collect();
        assert!(r[..3].iter().all(Option::is_some));
        assert!(r[3].is_none());
        // Actual cost lower than the estimate frees room.
        settle(&s, r[0].as_ref().unwrap(), 0.05);
        assert!(reserve(&s, 7, "k", 1.0, 0.3).is_some());
        // Another epoch starts from zero.
        assert!(reserve(&s, 8, "k", 1.0, 0.3).is_some());
    }

    #[test]
    fn concurrent_first_writes_never_overwrite_each_other() {
        // VM B reads the key absent, VM A creates it with its reservation,
        // then B writes: B's create must fail and retry on A's value.
        struct Racy<'a>(&'a MemoryStore, std::cell::Cell<bool>);
        impl SharedStore for Racy<'_> {
            fn get(&self, k: &str) -> (Option<Vec<u8>>, Option<u32>) {
                let got = self.0.get(k);
                if !self.1.replace(true) {
                    // A (another VM) gets in between B's read and write.
                    assert!(reserve(self.0, 1, "k", 1.0, 0.4).is_some());
                }
                got
            }
            fn set(&self, k: &str, v: &[u8], cas: Option<u32>) -> bool {
                self.0.set(k, v, cas)
            }
        }
        let shared = MemoryStore::default();
        let b = Racy(&shared, Default::default());
        assert!(reserve(&b, 1, "k", 1.0, 0.4).is_some());
        // Both reservations are in the counter: a third does not fit.
        assert!(reserve(&shared, 1, "k", 1.0, 0.4).is_none());
    }

    #[test]
    fn cas_mismatch_is_retried() {
        struct Flaky(MemoryStore, std::cell::Cell<u32>);
        impl SharedStore for Flaky {
            fn get(&self, k: &str) -> (Option<Vec<u8>>, Option<u32>) {
                self.0.get(k)
            }
            fn set(&self, k: &str, v: &[u8], cas: Option<u32>) -> bool {
                if self.1.get() < 3 {
                    self.1.set(self.1.get() + 1);
                    return false;
                }
                self.0.set(k, v, cas)
            }
        }
        let s = Flaky(MemoryStore::default(), Default::default());
        assert!(reserve(&s, 1, "k", 1.0, 0.5).is_some());
    }
}
