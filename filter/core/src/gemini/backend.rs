//! Google Gemini as a backend (AI Studio; Vertex AI is the same bodies under
//! another base path).

use serde::Deserialize;
use sluice_records::TokenUsage;

use crate::backend::{
    Backend, EmbeddingsBackend, FrameUsage, StreamDecoder, TokenCountBackend, UsageMeter, Wire,
};
use crate::canonical::{ProviderError, Request, Response, Warnings};
use crate::framing::Frame;

#[derive(Debug)]
pub struct Gemini;

#[derive(Deserialize)]
struct UsageProbe {
    #[serde(default, rename = "usageMetadata")]
    usage: Option<super::types::UsageMetadata>,
}

fn probe_usage(bytes: &[u8]) -> Option<TokenUsage> {
    serde_json::from_slice::<UsageProbe>(bytes)
        .ok()
        .and_then(|p| p.usage)
        .map(|u| super::response::usage_from(&u))
}

impl Backend for Gemini {
    fn kind(&self) -> &'static str {
        "gemini"
    }

    fn wire(&self) -> Wire {
        super::WIRE
    }

    fn default_base_path(&self) -> &'static str {
        "/v1beta"
    }

    /// The model and stream-ness are in the URL.
    fn upstream_path(&self, base_path: &str, upstream_model: &str, stream: bool) -> String {
        if stream {
            format!("{base_path}/models/{upstream_model}:streamGenerateContent?alt=sse")
        } else {
            format!("{base_path}/models/{upstream_model}:generateContent")
        }
    }

    fn encode_request(
        &self,
        req: &Request,
        _upstream_model: &str,
        warnings: &mut Warnings,
    ) -> Vec<u8> {
        super::request::encode(req, warnings)
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
        crate::json_splice::top_level_member(body, b"usageMetadata")
            .and_then(|raw| serde_json::from_slice(raw).ok())
            .map(|u| super::response::usage_from(&u))
            .or_else(|| probe_usage(body))
    }

    fn token_count(&self) -> Option<&'static dyn TokenCountBackend> {
        Some(&super::count_tokens::Backend)
    }

    fn embeddings(&self) -> Option<&'static dyn EmbeddingsBackend> {
        Some(&super::embeddings::Backend)
    }
}

/// Every chunk may carry cumulative `usageMetadata`; only chunks that
/// mention it are parsed.
#[derive(Debug)]
struct Meter;

impl UsageMeter for Meter {
    fn inspect(&mut self, frame: &Frame<'_>) -> FrameUsage {
        let Some(data) = frame.data.as_deref() else {
            return FrameUsage::default();
        };
        static USAGE: crate::needle::Needle = crate::needle::Needle::new(b"promptTokenCount");
        if USAGE.find(data).is_none() {
            return FrameUsage {
                error: crate::backend::is_error_payload(data),
                ..FrameUsage::default()
            };
        }
        FrameUsage {
            usage: probe_usage(data),
            usage_only: false,
            error: false,
        }
    }
}
