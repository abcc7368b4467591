//! OpenAI Chat Completions as a backend (any OpenAI-compatible provider).

use sluice_records::TokenUsage;

use crate::backend::{Backend, EmbeddingsBackend, FrameUsage, StreamDecoder, UsageMeter, Wire};
use crate::canonical::{ProviderError, Request, Response, Warnings};
use crate::framing::Frame;

#[derive(Debug)]
pub struct OpenAi;

impl Backend for OpenAi {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn wire(&self) -> Wire {
        super::WIRE
    }

    fn default_base_path(&self) -> &'static str {
        "/v1"
    }

    fn upstream_path(&self, base_path: &str, _upstream_model: &str, _stream: bool) -> String {
        format!("{base_path}/chat/completions")
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
        Box::new(Meter)
    }

    fn body_usage(&self, body: &[u8]) -> Option<TokenUsage> {
        // Only the usage member is parsed (found by a byte scan); the full
        // typed parse is the fallback for whatever the scan cannot place.
        crate::json_splice::top_level_member(body, b"usage")
            .and_then(super::usage::from_usage_object)
            .or_else(|| super::usage::from_response(body))
    }

    fn embeddings(&self) -> Option<&'static dyn EmbeddingsBackend> {
        Some(&super::embeddings::Backend)
    }
}

/// Usage arrives in one chunk (the last, with `include_usage`); chunks that
/// cannot hold it are not parsed.
#[derive(Debug)]
struct Meter;

impl UsageMeter for Meter {
    fn inspect(&mut self, frame: &Frame<'_>) -> FrameUsage {
        let Some(data) = frame.data.as_deref() else {
            return FrameUsage::default();
        };
        let c = super::usage::inspect_chunk(data);
        FrameUsage {
            usage: c.usage,
            usage_only: c.usage_only,
            error: crate::backend::is_error_payload(data),
        }
    }
}
