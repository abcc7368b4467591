//! Metering passthrough streams and bodies: read usage without re-encoding,
//! and without parsing events that cannot carry it.

use serde::Deserialize;

use crate::canonical::{Dialect, StreamEvent};
use crate::sse::SseEvent;
use crate::usage::TokenUsage;
use crate::{anthropic, gemini, openai};

#[derive(Deserialize)]
struct GeminiProbe {
    #[serde(default, rename = "usageMetadata")]
    usage: Option<gemini::types::UsageMetadata>,
}

#[derive(Deserialize)]
struct AnthropicProbe {
    #[serde(default)]
    usage: Option<anthropic::types::Usage>,
}

/// Per-stream metering state for a passthrough stream.
#[derive(Debug)]
pub enum StreamMeter {
    OpenAi,
    /// Anthropic splits usage over `message_start` and `message_delta`; the
    /// decoder already merges them (cumulative, set-not-add).
    Anthropic(anthropic::stream::Decoder),
    Gemini,
}

/// What one passthrough event tells the meter.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EventInfo {
    pub usage: Option<TokenUsage>,
    /// OpenAI's usage-only chunk (droppable when the client did not ask).
    pub usage_only: bool,
}

impl StreamMeter {
    pub fn new(d: Dialect) -> Self {
        match d {
            Dialect::OpenAi => StreamMeter::OpenAi,
            Dialect::Anthropic => StreamMeter::Anthropic(Default::default()),
            Dialect::Gemini => StreamMeter::Gemini,
        }
    }

    pub fn inspect(&mut self, ev: &SseEvent<'_>) -> EventInfo {
        let Some(data) = ev.data.as_deref() else {
            return EventInfo::default();
        };
        match self {
            StreamMeter::OpenAi => {
                let c = openai::usage::inspect_chunk(data);
                EventInfo {
                    usage: c.usage,
                    usage_only: c.usage_only,
                }
            }
            StreamMeter::Anthropic(dec) => {
                let name = ev.event.unwrap_or_default();
                if name != b"message_start" && name != b"message_delta" {
                    return EventInfo::default();
                }
                let mut evs = Vec::new();
                dec.decode(ev, &mut evs);
                EventInfo {
                    usage: evs.iter().rev().find_map(|e| match e {
                        StreamEvent::Usage(u) => Some(*u),
                        _ => None,
                    }),
                    usage_only: false,
                }
            }
            StreamMeter::Gemini => {
                if memchr::memmem::find(data, b"promptTokenCount").is_none() {
                    return EventInfo::default();
                }
                let usage = serde_json::from_slice::<GeminiProbe>(data)
                    .ok()
                    .and_then(|p| p.usage)
                    .map(|u| gemini::response::usage_from(&u));
                EventInfo {
                    usage,
                    usage_only: false,
                }
            }
        }
    }
}

/// Usage of a whole passthrough response body.
pub fn body_usage(d: Dialect, body: &[u8]) -> Option<TokenUsage> {
    // Only the usage member is parsed (found by a byte scan); the full
    // typed parse is the fallback for whatever the scan cannot place.
    let key: &[u8] = if d == Dialect::Gemini {
        b"usageMetadata"
    } else {
        b"usage"
    };
    if let Some(raw) = crate::json_splice::top_level_member(body, key) {
        let fast = match d {
            Dialect::OpenAi => openai::usage::from_usage_object(raw),
            Dialect::Anthropic => serde_json::from_slice(raw)
                .ok()
                .map(|u| anthropic::response::usage_from(&u)),
            Dialect::Gemini => serde_json::from_slice(raw)
                .ok()
                .map(|u| gemini::response::usage_from(&u)),
        };
        if fast.is_some() {
            return fast;
        }
    }
    match d {
        Dialect::OpenAi => openai::usage::from_response(body),
        Dialect::Anthropic => serde_json::from_slice::<AnthropicProbe>(body)
            .ok()
            .and_then(|p| p.usage)
            .map(|u| anthropic::response::usage_from(&u)),
        Dialect::Gemini => serde_json::from_slice::<GeminiProbe>(body)
            .ok()
            .and_then(|p| p.usage)
            .map(|u| gemini::response::usage_from(&u)),
    }
}

/// Decodes a provider's non-stream response.
pub fn decode_response(d: Dialect, body: &[u8]) -> Option<crate::canonical::Response> {
    match d {
        Dialect::OpenAi => openai::response::decode(body),
        Dialect::Anthropic => anthropic::response::decode(body),
        Dialect::Gemini => gemini::response::decode(body),
    }
}

/// Encodes a canonical response for a client.
pub fn encode_response(d: Dialect, r: &crate::canonical::Response) -> Vec<u8> {
    match d {
        Dialect::OpenAi => openai::response::encode(r),
        Dialect::Anthropic => anthropic::response::encode(r),
        Dialect::Gemini => gemini::response::encode(r),
    }
}

/// A provider error body, re-rendered for the client: (status, body).
pub fn translate_error(
    provider: Dialect,
    client: Dialect,
    status: u16,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let e = match provider {
        Dialect::OpenAi => openai::response::decode_error(status, body),
        Dialect::Anthropic => anthropic::response::decode_error(status, body),
        Dialect::Gemini => gemini::response::decode_error(status, body),
    };
    match client {
        Dialect::OpenAi => openai::response::encode_error(&e),
        Dialect::Anthropic => anthropic::response::encode_error(&e),
        Dialect::Gemini => gemini::response::encode_error(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_passthrough_meter_merges_start_and_delta() {
        let mut m = StreamMeter::new(Dialect::Anthropic);
        let start = br#"{"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":10,"cache_read_input_tokens":5,"output_tokens":1}}}"#;
        let delta = br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":42}}"#;
        let ev = |name: &'static [u8], data: &'static [u8]| SseEvent {
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
        assert_eq!(m.inspect(&ev(b"ping", b"{}")), EventInfo::default());
    }
}
