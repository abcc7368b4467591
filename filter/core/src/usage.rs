//! The per-request usage record, set as the `sluice_usage` filter state at the
//! end of every request and shipped by Envoy's access log (file or gRPC).

use serde::Serialize;

/// Token counts as the provider reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
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

/// Record format version; bump on incompatible changes.
pub const RECORD_VERSION: u8 = 1;

#[derive(Debug, Clone, Default, Serialize)]
pub struct UsageRecord {
    pub v: u8,
    pub request_id: String,
    pub key_id: Option<String>,
    /// Public model name the client asked for.
    pub model: Option<String>,
    pub provider: Option<String>,
    pub upstream_model: Option<String>,
    pub client_dialect: &'static str,
    pub stream: bool,
    /// HTTP status the client received.
    pub status: u16,
    /// Gateway error code when the gateway answered itself.
    pub error: Option<&'static str>,
    #[serde(flatten)]
    pub tokens: TokenUsage,
    /// `provider` when the provider reported usage; `estimated` when it did
    /// not and the gateway counted the text it sent (tiktoken); `none`.
    pub usage_source: &'static str,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

impl UsageRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
