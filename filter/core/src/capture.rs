//! Capture of one request's exchanges for replay baselines: the request the
//! client sent, what went to the provider and what came back, and what the
//! client received. Shipped as the `sluice_capture` filter state through the
//! access log; the control plane sanitizes it and appends it to a baseline
//! (docs/replay.md). Nothing is captured unless `capture` is configured.
//!
//! Bounded: a record that would exceed `max_record_bytes` is dropped whole
//! (a truncated record could not be replayed).

use std::collections::HashMap;

use sluice_config::CaptureConfig;
use sluice_records::{CaptureRecord, CaptureUpstream, CAPTURE_VERSION};

/// Strata tracked per VM; beyond this, new strata are sampled at the rate only.
const MAX_STRATA: usize = 4096;

/// Stratified systematic sampling: per stratum, the first `min_per_stratum`
/// requests, then every `round(1 / sample_rate)`-th. Deterministic (no
/// randomness in a VM), so tests can rely on it.
#[derive(Debug, Default)]
pub struct Sampler {
    seen: HashMap<String, u64>,
    overflow: u64,
}

impl Sampler {
    pub fn take(&mut self, cfg: &CaptureConfig, stratum: &str) -> bool {
        let min = u64::from(cfg.min_per_stratum);
        let full = self.seen.len() >= MAX_STRATA;
        let n = match self.seen.get_mut(stratum) {
            Some(n) => {
                *n = n.saturating_add(1);
                *n
            }
            None if !full => {
                self.seen.insert(stratum.to_string(), 1);
                1
            }
            None => {
                self.overflow = self.overflow.saturating_add(1);
                return every(cfg.sample_rate, self.overflow);
            }
        };
        n <= min || every(cfg.sample_rate, n.saturating_sub(min))
    }
}

fn every(rate: f64, n: u64) -> bool {
    if rate <= 0.0 {
        return false;
    }
    let k = (1.0 / rate).round().max(1.0) as u64;
    n.is_multiple_of(k)
}

/// The stratum of a request: public model, tools offered or not, stream.
pub fn stratum(model: &str, body: &[u8], stream: bool) -> (String, bool) {
    let tools = memchr::memmem::find(body, b"\"tools\"").is_some()
        || memchr::memmem::find(body, b"\"functionDeclarations\"").is_some();
    (format!("{model}|tools={tools}|stream={stream}"), tools)
}

#[derive(Debug)]
struct Upstream {
    provider: String,
    kind: &'static str,
    path: String,
    body: Vec<u8>,
    status: u16,
    content_type: Option<String>,
    response: Vec<u8>,
}

#[derive(Debug)]
pub struct Capture {
    max: usize,
    size: usize,
    dropped: bool,
    method: String,
    path: String,
    anthropic_version: Option<String>,
    stratum: String,
    tools: bool,
    request_body: Vec<u8>,
    upstream: Option<Upstream>,
    content_type: Option<String>,
    warnings: Option<String>,
    response: Vec<u8>,
}

/// `key=` query values never leave the filter.
fn redact_query_key(path: &str) -> String {
    let Some((p, q)) = path.split_once('?') else {
        return path.to_string();
    };
    let q: Vec<&str> = q
        .split('&')
        .map(|kv| {
            if kv.starts_with("key=") {
                "key=__redacted__"
            } else {
                kv
            }
        })
        .collect();
    format!("{p}?{}", q.join("&"))
}

impl Capture {
    pub fn new(
        cfg: &CaptureConfig,
        method: &str,
        path: &str,
        anthropic_version: Option<&str>,
        stratum: String,
        tools: bool,
        body: &[u8],
    ) -> Capture {
        let mut c = Capture {
            max: usize::try_from(cfg.max_record_bytes).unwrap_or(usize::MAX),
            size: 0,
            dropped: false,
            method: method.to_string(),
            path: redact_query_key(path),
            anthropic_version: anthropic_version.map(str::to_string),
            stratum,
            tools,
            request_body: Vec::new(),
            upstream: None,
            content_type: None,
            warnings: None,
            response: Vec::new(),
        };
        if c.grow(body.len()) {
            c.request_body = body.to_vec();
        }
        c
    }

    /// Accounts `n` more bytes; drops the whole record past the cap.
    fn grow(&mut self, n: usize) -> bool {
        if self.dropped {
            return false;
        }
        self.size = self.size.saturating_add(n);
        if self.size > self.max {
            self.dropped = true;
            self.request_body = Vec::new();
            self.upstream = None;
            self.response = Vec::new();
            return false;
        }
        true
    }

    /// A response chunk could not be read: the record would be incomplete.
    pub fn invalidate(&mut self) {
        self.dropped = true;
    }

    pub fn upstream_request(
        &mut self,
        provider: &str,
        kind: &'static str,
        path: &str,
        body: &[u8],
    ) {
        if self.grow(body.len()) {
            self.upstream = Some(Upstream {
                provider: provider.to_string(),
                kind,
                path: path.to_string(),
                body: body.to_vec(),
                status: 0,
                content_type: None,
                response: Vec::new(),
            });
        }
    }

    pub fn upstream_headers(&mut self, status: u16, content_type: Option<&str>) {
        if let Some(u) = &mut self.upstream {
            u.status = status;
            u.content_type = content_type.map(str::to_string);
        }
    }

    pub fn client_content_type(&mut self, content_type: Option<&str>) {
        self.content_type = content_type.map(str::to_string);
    }

    /// The `x-sluice-warnings` the client received.
    pub fn client_warnings(&mut self, warnings: Option<&str>) {
        self.warnings = warnings.map(str::to_string);
    }

    pub fn upstream_bytes(&mut self, bytes: &[u8]) {
        if self.grow(bytes.len()) {
            if let Some(u) = &mut self.upstream {
                u.response.extend_from_slice(bytes);
            }
        }
    }

    pub fn client_bytes(&mut self, bytes: &[u8]) {
        if self.grow(bytes.len()) {
            self.response.extend_from_slice(bytes);
        }
    }

    /// The record, unless it was dropped.
    pub fn finish(&self, rec: &sluice_records::UsageRecord, ts_ms: u64) -> Option<Vec<u8>> {
        if self.dropped {
            return None;
        }
        let s = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        CaptureRecord {
            v: CAPTURE_VERSION,
            request_id: rec.request_id.clone(),
            key_id: rec.key_id.clone(),
            ts_ms,
            filter_version: env!("CARGO_PKG_VERSION").to_string(),
            config_version: rec.config_version.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            anthropic_version: self.anthropic_version.clone(),
            request_body: s(&self.request_body),
            upstream: self.upstream.as_ref().map(|u| CaptureUpstream {
                provider: u.provider.clone(),
                kind: u.kind.to_string(),
                path: u.path.clone(),
                request_body: s(&u.body),
                status: u.status,
                content_type: u.content_type.clone(),
                response_body: s(&u.response),
            }),
            status: rec.status,
            content_type: self.content_type.clone(),
            warnings: self.warnings.clone(),
            response_body: s(&self.response),
            model: rec.model.clone(),
            upstream_model: rec.upstream_model.clone(),
            client_dialect: rec.client_dialect.to_string(),
            stream: rec.stream,
            tools: self.tools,
            stratum: self.stratum.clone(),
        }
        .to_json()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rate: f64, min: u32, max: u64) -> CaptureConfig {
        CaptureConfig {
            sample_rate: rate,
            min_per_stratum: min,
            max_record_bytes: max,
        }
    }

    #[test]
    fn sampling_keeps_the_minimum_of_every_stratum_then_the_rate() {
        let c = cfg(0.25, 2, 1 << 20);
        let mut s = Sampler::default();
        let common: Vec<bool> = (0..10).map(|_| s.take(&c, "gpt|tools=false")).collect();
        // 2 always, then every 4th of the rest (the 4th and 8th after).
        assert_eq!(
            common,
            [true, true, false, false, false, true, false, false, false, true]
        );
        // A rare stratum still gets its minimum.
        assert!(s.take(&c, "gpt|tools=true"));
        assert!(s.take(&c, "gpt|tools=true"));
        let none = cfg(0.0, 0, 1 << 20);
        assert!(!Sampler::default().take(&none, "x"));
    }

    #[test]
    fn oversize_records_are_dropped_whole_and_query_keys_redacted() {
        let rec = sluice_records::UsageRecord::default();
        let mut c = Capture::new(
            &cfg(1.0, 0, 100),
            "POST",
            "/v1beta/models/g:generateContent?key=AIzaSECRET&alt=sse",
            None,
            "s".into(),
            false,
            b"{}",
        );
        assert!(!String::from_utf8(c.finish(&rec, 0).unwrap())
            .unwrap()
            .contains("AIzaSECRET"));
        c.client_bytes(&[b'x'; 200]);
        assert!(c.finish(&rec, 0).is_none());
    }
}
