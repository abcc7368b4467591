//! Anthropic Messages as a backend.

use serde::Deserialize;
use sluice_records::TokenUsage;

use crate::backend::{Backend, FrameUsage, StreamDecoder, TokenCountBackend, UsageMeter, Wire};
use crate::canonical::{ProviderError, Request, Response, StreamEvent, Warnings};
use crate::framing::Frame;

#[derive(Debug)]
pub struct Anthropic;

#[derive(Deserialize)]
struct UsageProbe {
    #[serde(default)]
    usage: Option<super::types::Usage>,
}

impl Backend for Anthropic {
    fn kind(&self) -> &'static str {
        "anthropic"
    }

    fn wire(&self) -> Wire {
        super::WIRE
    }

    fn default_base_path(&self) -> &'static str {
        "/v1"
    }

    fn upstream_path(&self, base_path: &str, _upstream_model: &str, _stream: bool) -> String {
        format!("{base_path}/messages")
    }

    fn version_header(&self) -> Option<(&'static str, &'static str)> {
        Some(("anthropic-version", super::API_VERSION))
    }

    fn encode_request(
        &self,
        req: &Request,
        upstream_model: &str,
        warnings: &mut Warnings,
    ) -> Vec<u8> {
        super::request::encode(req, upstream_model, warnings)
    }

    fn decode_response(&self, body: &[u8]) -> Option<Response> {
        super::response::decode(body)
    }

    fn decode_error(&self, status: u16, body: &[u8]) -> ProviderError {
        super::response::decode_error(status, body)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::<super::stream::Decoder>::default()
    }

    fn usage_meter(&self) -> Box<dyn UsageMeter> {
        Box::new(Meter(Default::default()))
    }

    fn body_usage(&self, body: &[u8]) -> Option<TokenUsage> {
        crate::json_splice::top_level_member(body, b"usage")
            .and_then(|raw| serde_json::from_slice(raw).ok())
            .map(|u| super::response::usage_from(&u))
            .or_else(|| {
                serde_json::from_slice::<UsageProbe>(body)
                    .ok()
                    .and_then(|p| p.usage)
                    .map(|u| super::response::usage_from(&u))
            })
    }

    fn token_count(&self) -> Option<&'static dyn TokenCountBackend> {
        Some(&super::count_tokens::Backend)
    }
}

/// Anthropic splits usage over `message_start` and `message_delta`; the
/// stream decoder already merges them (cumulative, set-not-add), and only
/// those two events are decoded.
#[derive(Debug)]
struct Meter(super::stream::Decoder);

impl UsageMeter for Meter {
    fn inspect(&mut self, frame: &Frame<'_>) -> FrameUsage {
        if frame.data.is_none() {
            return FrameUsage::default();
        }
        let name = frame.event.unwrap_or_default();
        if name == b"error" {
            return FrameUsage {
                error: true,
                ..FrameUsage::default()
            };
        }
        if name != b"message_start" && name != b"message_delta" {
            return FrameUsage::default();
        }
        let mut evs = Vec::new();
        self.0.decode(frame, &mut evs);
        FrameUsage {
            usage: evs.iter().rev().find_map(|e| match e {
                StreamEvent::Usage(u) => Some(*u),
                _ => None,
            }),
            usage_only: false,
            error: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_meter_merges_start_and_delta() {
        let mut m = Anthropic.usage_meter();
        let start = br#"{"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#;
        let delta = br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}"#;
        let ev = |name: &'static [u8], data: &'static [u8]| Frame {
            raw: b"",
            event: Some(name),
            data: Some(std::borrow::Cow::Borrowed(data)),
        };
        assert_eq!(
            m.inspect(&ev(b"message_start", start))
                .usage
                .unwrap()
                .prompt_tokens,
            15
        );
        let u = m.inspect(&ev(b"message_delta", delta)).usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.cached_tokens, u.completion_tokens),
            (15, 5, 42)
        );
        assert_eq!(m.inspect(&ev(b"ping", b"{}")), FrameUsage::default());
    }
}
