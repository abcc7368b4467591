//! The per-request usage record, set as the `sluice_usage` filter state at the
//! end of every request and shipped by Envoy's access log (file or gRPC) to
//! the control plane's ledger.

use std::borrow::Cow;

use serde::Deserialize;

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's cache (a subset of prompt).
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (Anthropic).
    pub cache_creation_tokens: u64,
    /// Completion tokens spent on reasoning (a subset of completion).
    pub reasoning_tokens: u64,
}

/// One attempt of a request at a provider (models with a resilience policy:
/// Envoy retries, the next priority is the fallback). Serialize: the
/// ledger keeps a request's attempts as this JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(default)]
pub struct Attempt {
    pub provider: String,
    pub upstream_model: String,
    /// The provider's status; 0 when it never answered (connection refused,
    /// reset, first-byte timeout).
    pub status: u16,
    pub latency_ms: u64,
    /// `ok`, `rate_limited`, `server_error`, `client_error`, `no_response`.
    pub outcome: Cow<'static, str>,
}

impl Attempt {
    /// The outcome of a provider status (0: no answer).
    pub fn outcome_of(status: u16) -> &'static str {
        match status {
            0 => "no_response",
            200..=399 => "ok",
            429 => "rate_limited",
            500..=599 => "server_error",
            _ => "client_error",
        }
    }
}

/// Record format version; bump on incompatible changes.
pub const RECORD_VERSION: u8 = 1;

/// Written by hand below (`to_json`, flat, the token counts inline): once per
/// request, serde's derive (`flatten` goes through its map machinery, and
/// every key is escaped at run time) cost a sixth of the filter's own
/// instructions for a passthrough request. Read with serde's derive (the
/// control plane; not a hot path), from the same struct.
///
/// Strings the filter takes from a fixed vocabulary are `Cow<'static, str>`:
/// borrowed when written, owned when read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct UsageRecord {
    pub v: u8,
    pub request_id: String,
    pub key_id: Option<String>,
    /// Public model name the client asked for.
    pub model: Option<String>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub client_dialect: Cow<'static, str>,
    pub stream: bool,
    /// HTTP status the client received.
    pub status: u16,
    /// Gateway error code when the gateway answered itself.
    pub error: Option<Cow<'static, str>>,
    #[serde(flatten)]
    pub tokens: TokenUsage,
    /// `provider` when the provider reported usage; `estimated` when it did
    /// not and the gateway counted the text it sent (tiktoken); `none`.
    pub usage_source: Cow<'static, str>,
    pub latency_ms: u64,
    /// Streams: time until the first event reached the client.
    pub ttft_ms: Option<u64>,
    /// The response was delivered to the end (false: client went away, or
    /// the upstream stream broke off).
    pub completed: bool,
    pub config_version: String,
    /// Instance id of the VM root context that produced the record, and its
    /// sequence number there (1, 2, …): the control plane counts gaps to make
    /// access-log loss visible.
    pub vm: String,
    pub seq: u64,
    /// Online shadow comparison: this filter's role, and a digest of what
    /// it sent upstream (or of its own answer) for the control plane to
    /// pair with the other side's by `request_id`.
    pub role: Option<Cow<'static, str>>,
    pub digest: Option<String>,
    /// Models with a resilience policy: every attempt, in order; the last
    /// one with a status answered (`provider` names it). Empty otherwise
    /// (one attempt, at `provider`).
    pub attempts: Vec<Attempt>,
    /// What the request did besides generating: `count_tokens` or
    /// `embeddings` (absent: a model's answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation: Option<Cow<'static, str>>,
}

impl UsageRecord {
    /// Reads a record as the filter wrote it (fields it did not write take
    /// their defaults, so older records stay readable).
    pub fn from_json(bytes: &[u8]) -> Result<UsageRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// The sequence number, if the producing VM gave one (they start at 1).
    pub fn sequence(&self) -> Option<(&str, u64)> {
        (!self.vm.is_empty() && self.seq > 0).then_some((self.vm.as_str(), self.seq))
    }

    pub fn to_json(&self) -> Vec<u8> {
        let t = &self.tokens;
        // Sized for a typical record (~500 bytes) so it never regrows.
        let mut w = JsonObject::new(640);
        w.num("v", u64::from(self.v));
        w.str("request_id", &self.request_id);
        w.opt_str("key_id", self.key_id.as_deref());
        w.opt_str("model", self.model.as_deref());
        w.opt_str("provider", self.provider.as_deref());
        w.opt_str("upstream_model", self.upstream_model.as_deref());
        w.str("client_dialect", &self.client_dialect);
        w.bool("stream", self.stream);
        w.num("status", u64::from(self.status));
        w.opt_str("error", self.error.as_deref());
        w.num("prompt_tokens", t.prompt_tokens);
        w.num("completion_tokens", t.completion_tokens);
        w.num("cached_tokens", t.cached_tokens);
        w.num("cache_creation_tokens", t.cache_creation_tokens);
        w.num("reasoning_tokens", t.reasoning_tokens);
        w.str("usage_source", &self.usage_source);
        w.num("latency_ms", self.latency_ms);
        match self.ttft_ms {
            Some(n) => w.num("ttft_ms", n),
            None => w.null("ttft_ms"),
        }
        w.bool("completed", self.completed);
        w.str("config_version", &self.config_version);
        w.str("vm", &self.vm);
        w.num("seq", self.seq);
        if let Some(role) = &self.role {
            w.str("role", role);
        }
        if let Some(digest) = &self.digest {
            w.str("digest", digest);
        }
        if !self.attempts.is_empty() {
            w.attempts(&self.attempts);
        }
        if let Some(op) = &self.operation {
            w.str("operation", op);
        }
        w.finish()
    }
}

/// A JSON object written member by member. Keys are the caller's literals
/// (plain ASCII, never escaped); string values take a copy-through fast path
/// unless they hold a byte JSON must escape.
struct JsonObject(Vec<u8>);

impl JsonObject {
    fn new(capacity: usize) -> Self {
        let mut out = Vec::with_capacity(capacity);
        out.push(b'{');
        JsonObject(out)
    }

    fn key(&mut self, key: &str) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        self.0.push(b'"');
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn str(&mut self, key: &str, value: &str) {
        self.key(key);
        let plain = value.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\');
        if plain {
            self.0.push(b'"');
            self.0.extend_from_slice(value.as_bytes());
            self.0.push(b'"');
        } else if serde_json::to_writer(&mut self.0, value).is_err() {
            self.0.extend_from_slice(b"null");
        }
    }

    fn opt_str(&mut self, key: &str, value: Option<&str>) {
        match value {
            Some(v) => self.str(key, v),
            None => self.null(key),
        }
    }

    fn num(&mut self, key: &str, value: u64) {
        self.key(key);
        // serde_json's integer writer (itoa); writing to a Vec cannot fail.
        let _ = serde_json::to_writer(&mut self.0, &value);
    }

    fn bool(&mut self, key: &str, value: bool) {
        self.key(key);
        self.0
            .extend_from_slice(if value { b"true" } else { b"false" });
    }

    fn null(&mut self, key: &str) {
        self.key(key);
        self.0.extend_from_slice(b"null");
    }

    fn attempts(&mut self, attempts: &[Attempt]) {
        self.key("attempts");
        self.0.push(b'[');
        for (i, a) in attempts.iter().enumerate() {
            if i > 0 {
                self.0.push(b',');
            }
            let mut o = JsonObject::new(128);
            o.str("provider", &a.provider);
            o.str("upstream_model", &a.upstream_model);
            o.num("status", u64::from(a.status));
            o.num("latency_ms", a.latency_ms);
            o.str("outcome", &a.outcome);
            self.0.extend_from_slice(&o.finish());
        }
        self.0.push(b']');
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.push(b'}');
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_json_is_flat_with_every_field() {
        let mut r = UsageRecord {
            v: RECORD_VERSION,
            request_id: "r\"1".into(),
            key_id: Some("k".into()),
            model: Some("m".into()),
            provider: Some("p".into()),
            upstream_model: None,
            client_dialect: "openai".into(),
            stream: true,
            status: 200,
            error: None,
            tokens: TokenUsage {
                prompt_tokens: 1,
                completion_tokens: 2,
                cached_tokens: 3,
                cache_creation_tokens: 4,
                reasoning_tokens: 5,
            },
            usage_source: "provider".into(),
            latency_ms: 6,
            ttft_ms: Some(7),
            completed: true,
            config_version: "c\\\n\u{1}é".into(),
            vm: "vm".into(),
            seq: u64::MAX,
            role: None,
            digest: None,
            attempts: Vec::new(),
            operation: Some("embeddings".into()),
        };
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = [
            "v",
            "request_id",
            "key_id",
            "model",
            "provider",
            "upstream_model",
            "client_dialect",
            "stream",
            "status",
            "error",
            "prompt_tokens",
            "completion_tokens",
            "cached_tokens",
            "cache_creation_tokens",
            "reasoning_tokens",
            "usage_source",
            "latency_ms",
            "ttft_ms",
            "completed",
            "config_version",
            "vm",
            "seq",
            "operation",
        ];
        want.sort_unstable();
        assert_eq!(keys, want);
        assert_eq!(v["request_id"], "r\"1");
        assert_eq!(v["upstream_model"], serde_json::Value::Null);
        assert_eq!(v["reasoning_tokens"], 5);
        assert_eq!(v["config_version"], "c\\\n\u{1}é");
        assert_eq!(v["seq"], u64::MAX);
        assert_eq!(
            (v["ttft_ms"].as_u64(), v["stream"].as_bool()),
            (Some(7), Some(true))
        );
        assert_eq!(v["error"], serde_json::Value::Null);
        r.ttft_ms = None;
        r.status = 0;
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(
            (v["ttft_ms"].is_null(), v["status"].as_u64()),
            (true, Some(0))
        );
        r.role = Some("shadow".into());
        r.digest = Some("d".into());
        let v: serde_json::Value = serde_json::from_slice(&r.to_json()).unwrap();
        assert_eq!(
            (v["role"].as_str(), v["digest"].as_str()),
            (Some("shadow"), Some("d"))
        );
        r.attempts = vec![
            Attempt {
                provider: "p\"0".into(),
                upstream_model: "m0".into(),
                status: 500,
                latency_ms: 3,
                outcome: Attempt::outcome_of(500).into(),
            },
            Attempt {
                provider: "p1".into(),
                upstream_model: "m1".into(),
                status: 0,
                latency_ms: 9,
                outcome: Attempt::outcome_of(0).into(),
            },
        ];
        let back = UsageRecord::from_json(&r.to_json()).unwrap();
        assert_eq!(back.attempts, r.attempts);
        assert_eq!(back.attempts[1].outcome, "no_response");
    }

    /// What the filter writes is what the control plane reads, field for
    /// field (including escapes, `null`s and the extremes of each number).
    #[test]
    fn written_records_read_back_equal() {
        let mut r = UsageRecord {
            v: RECORD_VERSION,
            request_id: "r\"1\u{7f}é".into(),
            key_id: Some("k".into()),
            model: Some("m".into()),
            provider: None,
            upstream_model: Some("u".into()),
            client_dialect: "anthropic".into(),
            stream: true,
            status: 429,
            error: Some("rate_limit_exceeded".into()),
            tokens: TokenUsage {
                prompt_tokens: u64::MAX,
                completion_tokens: 2,
                cached_tokens: 3,
                cache_creation_tokens: 4,
                reasoning_tokens: 5,
            },
            usage_source: "estimated".into(),
            latency_ms: 6,
            ttft_ms: None,
            completed: false,
            config_version: "v\n1".into(),
            vm: "n/1".into(),
            seq: 9,
            role: Some("primary".into()),
            digest: Some("abc".into()),
            attempts: Vec::new(),
            operation: None,
        };
        assert_eq!(UsageRecord::from_json(&r.to_json()).unwrap(), r);
        assert_eq!(r.sequence(), Some(("n/1", 9)));
        r.role = None;
        r.digest = None;
        r.ttft_ms = Some(0);
        assert_eq!(UsageRecord::from_json(&r.to_json()).unwrap(), r);
        // A minimal (older) record reads with defaults.
        let old = UsageRecord::from_json(br#"{"request_id":"x","status":200}"#).unwrap();
        assert_eq!((old.status, old.sequence()), (200, None));
    }
}
