//! The backend seam: what a provider *is* — its request wire, upstream path,
//! version headers, stream framing, response and error decoding, and how its
//! usage is read — behind one trait, with one registry.
//!
//! Adding a backend is one folder (its wire types and codecs, and an
//! `impl Backend`) plus one line in `registry::BACKENDS`; the
//! configuration's provider `kind` names it. Nothing else dispatches on the
//! kind of a provider. Below the dialects: imports only `canonical` and
//! `framing`.

use std::fmt;

use sluice_records::TokenUsage;

use crate::canonical::embeddings::{EmbedRequest, EmbedResponse};
use crate::canonical::{ProviderError, Request, Response, StreamEvent, Warnings};
use crate::framing::{Frame, Framing};

/// A backend's request wire. A client API with the same wire is passed
/// through (only `model` rewritten); any other is translated.
pub type Wire = &'static str;

pub trait Backend: Sync + fmt::Debug {
    /// The provider `kind` in configuration (`openai`, `anthropic`, …).
    fn kind(&self) -> &'static str;
    fn wire(&self) -> Wire;
    /// Base path when the provider's configuration gives none.
    fn default_base_path(&self) -> &'static str;
    fn framing(&self) -> Framing {
        Framing::Sse
    }
    /// The upstream `:path` for a request (`base_path` has no trailing `/`).
    fn upstream_path(&self, base_path: &str, upstream_model: &str, stream: bool) -> String;
    /// A header the backend needs on every request (an API version), set on
    /// translated requests and on passthrough ones whose client sent none.
    fn version_header(&self) -> Option<(&'static str, &'static str)> {
        None
    }
    /// Encodes a canonical request; what cannot be carried goes to `warnings`.
    fn encode_request(
        &self,
        req: &Request,
        upstream_model: &str,
        warnings: &mut Warnings,
    ) -> Vec<u8>;
    /// Decodes a whole (non-stream, 2xx) response; `None` if unreadable.
    fn decode_response(&self, body: &[u8]) -> Option<Response>;
    /// Decodes an error response (any body, any status).
    fn decode_error(&self, status: u16, body: &[u8]) -> ProviderError;
    /// A decoder for one streamed answer (frames → canonical events).
    fn stream_decoder(&self) -> Box<dyn StreamDecoder>;
    /// A meter for one passthrough stream (frames → usage, untouched).
    fn usage_meter(&self) -> Box<dyn UsageMeter>;
    /// Usage of a whole passthrough response body.
    fn body_usage(&self, body: &[u8]) -> Option<TokenUsage>;
    /// The provider's token-counting endpoint, if it has one.
    fn token_count(&self) -> Option<&'static dyn TokenCountBackend> {
        None
    }
    /// The provider's embeddings endpoint, if it has one.
    fn embeddings(&self) -> Option<&'static dyn EmbeddingsBackend> {
        None
    }
}

/// A provider's token-counting endpoint (same-wire clients only: another
/// API's request is counted by the gateway).
pub trait TokenCountBackend: Sync + fmt::Debug {
    fn upstream_path(&self, base_path: &str, upstream_model: &str) -> String;
}

/// A provider's embeddings endpoint.
pub trait EmbeddingsBackend: Sync + fmt::Debug {
    /// `single`: a same-API client's one-input call (Gemini
    /// `embedContent`); translated requests are always batches.
    fn upstream_path(&self, base_path: &str, upstream_model: &str, single: bool) -> String;
    /// The request body; `Err` names what this provider cannot embed.
    fn encode(
        &self,
        req: &EmbedRequest,
        upstream_model: &str,
        warnings: &mut Warnings,
    ) -> Result<Vec<u8>, String>;
    /// A whole (2xx) answer; `None` if unreadable.
    fn decode(&self, body: &[u8]) -> Option<EmbedResponse>;
}

/// Frames of one streamed answer → canonical events.
pub trait StreamDecoder: fmt::Debug {
    fn decode(&mut self, frame: &Frame<'_>, out: &mut Vec<StreamEvent>);
    /// The stream ended: flush what is pending (and a `Done` if the
    /// provider's own terminator never came).
    fn finish(&mut self, out: &mut Vec<StreamEvent>);
}

/// What one passthrough frame tells the meter.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FrameUsage {
    pub usage: Option<TokenUsage>,
    /// The frame carries only usage that the client did not ask for and may
    /// be dropped (OpenAI's `include_usage` chunk).
    pub usage_only: bool,
    /// The provider's error event: the stream failed mid-way (the record is
    /// then not `completed`).
    pub error: bool,
}

/// Whether a frame's JSON payload is an error object (`{"error": …}`, as
/// OpenAI and Gemini send a failure mid-stream).
pub fn is_error_payload(data: &[u8]) -> bool {
    let start = data
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(0);
    data.get(start..)
        .is_some_and(|d| d.starts_with(b"{\"error\""))
}

/// Reads usage from a passthrough stream without re-encoding it.
pub trait UsageMeter: fmt::Debug {
    fn inspect(&mut self, frame: &Frame<'_>) -> FrameUsage;
}
