//! The capture record: one sampled request's exchanges, as the filter saw
//! them (raw, unsanitized). Shipped as the `sluice_capture` filter state; the
//! control plane converts it to a replay record (`sluice-replay/1`,
//! replay-baseline/src/record.rs) and sanitizes it before anything is written.

use serde::{Deserialize, Serialize};

/// Capture record format version.
pub const CAPTURE_VERSION: u8 = 1;

/// What went to the provider and what came back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureUpstream {
    /// Provider name (configuration).
    pub provider: String,
    /// Provider kind (`openai`, `anthropic`, `gemini`, …).
    pub kind: String,
    pub path: String,
    pub request_body: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub response_body: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRecord {
    #[serde(default)]
    pub v: u8,
    pub request_id: String,
    pub key_id: Option<String>,
    pub ts_ms: u64,
    pub filter_version: String,
    pub config_version: String,
    pub method: String,
    /// With any `key=` query value redacted by the filter.
    pub path: String,
    pub anthropic_version: Option<String>,
    pub request_body: String,
    pub upstream: Option<CaptureUpstream>,
    /// What the client received.
    pub status: u16,
    pub content_type: Option<String>,
    #[serde(default)]
    pub warnings: Option<String>,
    pub response_body: String,
    pub model: Option<String>,
    pub upstream_model: Option<String>,
    pub client_dialect: String,
    pub stream: bool,
    pub tools: bool,
    pub stratum: String,
}

impl CaptureRecord {
    pub fn to_json(&self) -> Option<Vec<u8>> {
        serde_json::to_vec(self).ok()
    }

    pub fn from_json(bytes: &[u8]) -> Result<CaptureRecord, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_records_read_back_equal() {
        let r = CaptureRecord {
            v: CAPTURE_VERSION,
            request_id: "r1".into(),
            key_id: Some("k".into()),
            ts_ms: 17,
            filter_version: "0.1.0".into(),
            config_version: "c".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            anthropic_version: None,
            request_body: "{\"a\":\"é\\n\"}".into(),
            upstream: Some(CaptureUpstream {
                provider: "p".into(),
                kind: "anthropic".into(),
                path: "/v1/messages".into(),
                request_body: "{}".into(),
                status: 529,
                content_type: Some("application/json".into()),
                response_body: "{\"type\":\"error\"}".into(),
            }),
            status: 503,
            content_type: Some("application/json".into()),
            warnings: Some("dropped 'x'".into()),
            response_body: "{}".into(),
            model: Some("m".into()),
            upstream_model: Some("u".into()),
            client_dialect: "openai".into(),
            stream: false,
            tools: true,
            stratum: "m|tools=true|stream=false".into(),
        };
        let bytes = r.to_json().unwrap();
        assert_eq!(CaptureRecord::from_json(&bytes).unwrap(), r);
    }
}
