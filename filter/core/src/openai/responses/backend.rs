//! The OpenAI Responses API as a backend (kind `openai-responses`): a
//! provider that serves only `/responses`, or — declared with `serves` on an
//! `openai` provider — the same host's Responses endpoint, to which
//! Responses clients are passed through.

use sluice_records::TokenUsage;

use crate::backend::{Backend, StreamDecoder, TokenCountBackend, UsageMeter, Wire};
use crate::canonical::{ProviderError, Request, Response, Warnings};

#[derive(Debug)]
pub struct OpenAiResponses;

impl Backend for OpenAiResponses {
    fn kind(&self) -> &'static str {
        "openai-responses"
    }

    fn wire(&self) -> Wire {
        super::WIRE
    }

    fn default_base_path(&self) -> &'static str {
        "/v1"
    }

    fn upstream_path(&self, base_path: &str, _upstream_model: &str, _stream: bool) -> String {
        format!("{base_path}/responses")
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
        crate::openai::response::decode_error(status, body)
    }

    fn stream_decoder(&self) -> Box<dyn StreamDecoder> {
        Box::<super::stream::Decoder>::default()
    }

    fn usage_meter(&self) -> Box<dyn UsageMeter> {
        Box::new(super::stream::Meter)
    }

    fn body_usage(&self, body: &[u8]) -> Option<TokenUsage> {
        let raw = crate::json_splice::top_level_member(body, b"usage")?;
        let u: super::types::Usage = serde_json::from_slice(raw).ok()?;
        Some(super::response::usage_from(&u))
    }

    fn token_count(&self) -> Option<&'static dyn TokenCountBackend> {
        Some(&InputTokens)
    }
}

#[derive(Debug)]
struct InputTokens;

impl TokenCountBackend for InputTokens {
    fn upstream_path(&self, base_path: &str, _upstream_model: &str) -> String {
        format!("{base_path}/responses/input_tokens")
    }
}
