//! Per-key rate limits: requests and tokens per minute, concurrent streams.
//!
//! Counters live in proxy-wasm shared data (one store per Envoy, shared by
//! its worker VMs) and change by compare-and-swap, so the limit holds across
//! workers. Windows are fixed minutes; each key has one slot holding its
//! current window, so old windows take no space. Tokens are charged with the
//! estimate at admission and corrected with the provider's count at the end.
//! With several Envoys each enforces its own share: see docs/limits.md.

use sluice_config::KeyLimits;

use crate::budget::SharedStore;

const CAS_RETRIES: usize = 16;

/// What the client is told in `x-ratelimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub limit_requests: Option<u64>,
    pub remaining_requests: u64,
    pub limit_tokens: Option<u64>,
    pub remaining_tokens: u64,
    /// Seconds until the window resets.
    pub reset_s: u64,
}

impl Status {
    /// OpenAI-style headers (only for the limits that are set).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::with_capacity(6);
        let reset = format!("{}s", self.reset_s);
        if let Some(l) = self.limit_requests {
            h.push(("x-ratelimit-limit-requests", l.to_string()));
            h.push((
                "x-ratelimit-remaining-requests",
                self.remaining_requests.to_string(),
            ));
            h.push(("x-ratelimit-reset-requests", reset.clone()));
        }
        if let Some(l) = self.limit_tokens {
            h.push(("x-ratelimit-limit-tokens", l.to_string()));
            h.push((
                "x-ratelimit-remaining-tokens",
                self.remaining_tokens.to_string(),
            ));
            h.push(("x-ratelimit-reset-tokens", reset));
        }
        h
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Requests,
    Tokens,
    Streams,
}

/// An admitted request: what to correct or release at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    key_id: String,
    window: u64,
    tokens_charged: u64,
    stream: bool,
}

fn slot(key_id: &str) -> String {
    format!("sluice.rl.{key_id}")
}

fn streams_slot(key_id: &str) -> String {
    format!("sluice.rs.{key_id}")
}

/// (window, requests, tokens)
fn decode(v: Option<Vec<u8>>) -> (u64, u64, u64) {
    let mut f = [0u64; 3];
    if let Some(b) = v.filter(|b| b.len() == 24) {
        for (x, word) in f.iter_mut().zip(b.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            *x = u64::from_le_bytes(w);
        }
    }
    (f[0], f[1], f[2])
}

fn encode(window: u64, req: u64, tok: u64) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..8].copy_from_slice(&window.to_le_bytes());
    b[8..16].copy_from_slice(&req.to_le_bytes());
    b[16..].copy_from_slice(&tok.to_le_bytes());
    b
}

fn status(l: &KeyLimits, req: u64, tok: u64, reset_s: u64) -> Status {
    Status {
        limit_requests: l.rpm,
        remaining_requests: l.rpm.map_or(0, |m| m.saturating_sub(req)),
        limit_tokens: l.tpm,
        remaining_tokens: l.tpm.map_or(0, |m| m.saturating_sub(tok)),
        reset_s,
    }
}

/// Admits a request or says which limit refuses it, with the status to
/// report either way. `now_s`: unix seconds.
pub fn admit(
    store: &dyn SharedStore,
    key_id: &str,
    l: &KeyLimits,
    estimated_tokens: u64,
    stream: bool,
    now_s: u64,
) -> (Result<Admission, Refusal>, Status) {
    let window = now_s / 60;
    let reset_s = 60u64.saturating_sub(now_s % 60);
    if stream {
        if let Some(max) = l.concurrent_streams {
            let ok = update_counter(store, &streams_slot(key_id), |n| {
                (n < max).then_some(n.saturating_add(1))
            });
            if !ok {
                return (Err(Refusal::Streams), status(l, 0, 0, reset_s));
            }
        }
    }
    let key = slot(key_id);
    for _ in 0..CAS_RETRIES {
        let (v, cas) = store.get(&key);
        let (w, mut req, mut tok) = decode(v);
        if w != window {
            req = 0;
            tok = 0;
        }
        // Counts saturate: client-supplied estimates are added here.
        let (req1, tok1) = (req.saturating_add(1), tok.saturating_add(estimated_tokens));
        if l.rpm.is_some_and(|m| req1 > m) {
            release_stream(store, key_id, l, stream);
            return (Err(Refusal::Requests), status(l, req, tok, reset_s));
        }
        // A request larger than the whole budget is still admitted into an
        // empty window, or it could never run.
        if l.tpm.is_some_and(|m| tok > 0 && tok1 > m) {
            release_stream(store, key_id, l, stream);
            return (Err(Refusal::Tokens), status(l, req, tok, reset_s));
        }
        if store.set(&key, &encode(window, req1, tok1), cas) {
            let adm = Admission {
                key_id: key_id.to_string(),
                window,
                tokens_charged: estimated_tokens,
                stream,
            };
            return (Ok(adm), status(l, req1, tok1, reset_s));
        }
    }
    // Persistent contention: fail open rather than refuse on our own fault.
    let adm = Admission {
        key_id: key_id.to_string(),
        window,
        tokens_charged: 0,
        stream,
    };
    (Ok(adm), status(l, 0, 0, reset_s))
}

fn release_stream(store: &dyn SharedStore, key_id: &str, l: &KeyLimits, stream: bool) {
    if stream && l.concurrent_streams.is_some() {
        update_counter(store, &streams_slot(key_id), |n| Some(n.saturating_sub(1)));
    }
}

fn update_counter(store: &dyn SharedStore, key: &str, f: impl Fn(u64) -> Option<u64>) -> bool {
    for _ in 0..CAS_RETRIES {
        let (v, cas) = store.get(key);
        let n = v
            .filter(|b| b.len() == 8)
            .map(|b| {
                let mut w = [0u8; 8];
                w.copy_from_slice(&b);
                u64::from_le_bytes(w)
            })
            .unwrap_or(0);
        let Some(next) = f(n) else {
            return false;
        };
        if store.set(key, &next.to_le_bytes(), cas) {
            return true;
        }
    }
    false
}

/// At the end of the request: the provider's token count replaces the
/// estimate (same window only), and the stream slot is released.
pub fn settle(store: &dyn SharedStore, l: &KeyLimits, a: &Admission, actual_tokens: Option<u64>) {
    release_stream(store, &a.key_id, l, a.stream);
    let Some(actual) = actual_tokens else {
        return;
    };
    if actual == a.tokens_charged || l.tpm.is_none() {
        return;
    }
    let key = slot(&a.key_id);
    for _ in 0..CAS_RETRIES {
        let (v, cas) = store.get(&key);
        let (w, req, tok) = decode(v);
        if w != a.window {
            return; // the window has moved on
        }
        let tok = tok.saturating_add(actual).saturating_sub(a.tokens_charged);
        if store.set(&key, &encode(w, req, tok), cas) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::MemoryStore;

    const L: KeyLimits = KeyLimits {
        rpm: Some(3),
        tpm: Some(1000),
        concurrent_streams: Some(1),
    };

    #[test]
    fn requests_per_minute_with_headers_and_reset() {
        let s = MemoryStore::default();
        for i in 0..3 {
            let (r, st) = admit(&s, "k", &L, 10, false, 120 + i);
            assert!(r.is_ok());
            assert_eq!(st.remaining_requests, 2 - i);
        }
        let (r, st) = admit(&s, "k", &L, 10, false, 150);
        assert_eq!(r, Err(Refusal::Requests));
        assert_eq!(st.reset_s, 30);
        assert!(st
            .headers()
            .contains(&("x-ratelimit-reset-requests", "30s".into())));
        // Next minute: a fresh window.
        assert!(admit(&s, "k", &L, 10, false, 180).0.is_ok());
    }

    #[test]
    fn tokens_are_estimated_then_corrected() {
        let s = MemoryStore::default();
        let l = KeyLimits {
            rpm: None,
            tpm: Some(100),
            concurrent_streams: None,
        };
        let (a, _) = admit(&s, "k", &l, 60, false, 0);
        let a = a.unwrap();
        assert_eq!(admit(&s, "k", &l, 60, false, 1).0, Err(Refusal::Tokens));
        settle(&s, &l, &a, Some(20)); // the provider counted fewer
        assert!(admit(&s, "k", &l, 60, false, 2).0.is_ok());
        assert_eq!(admit(&s, "k", &l, 60, false, 3).0, Err(Refusal::Tokens));
    }

    #[test]
    fn concurrent_streams_are_released_at_the_end() {
        let s = MemoryStore::default();
        let (a, _) = admit(&s, "k", &L, 1, true, 0);
        let a = a.unwrap();
        assert_eq!(admit(&s, "k", &L, 1, true, 0).0, Err(Refusal::Streams));
        assert!(
            admit(&s, "k", &L, 1, false, 0).0.is_ok(),
            "non-streams unaffected"
        );
        settle(&s, &L, &a, None);
        assert!(admit(&s, "k", &L, 1, true, 0).0.is_ok());
    }

    #[test]
    fn refused_requests_do_not_hold_a_stream_slot() {
        let s = MemoryStore::default();
        let l = KeyLimits {
            rpm: Some(1),
            tpm: None,
            concurrent_streams: Some(1),
        };
        let (a, _) = admit(&s, "k", &l, 1, true, 0);
        settle(&s, &l, &a.unwrap(), None);
        assert_eq!(admit(&s, "k", &l, 1, true, 0).0, Err(Refusal::Requests));
        // The refusal above gave its stream slot back.
        let (v, _) = s.get(&streams_slot("k"));
        assert_eq!(v, Some(0u64.to_le_bytes().to_vec()));
    }
}
