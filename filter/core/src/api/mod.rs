//! The client-API seam: what a client *speaks* — which endpoints it calls,
//! how its requests decode, how answers, errors, streams and model lists are
//! written for it — behind one trait, with one registry.
//!
//! The trait is implemented in each dialect's folder (`openai/api.rs`, …)
//! and listed in `registry::APIS`; nothing else dispatches on the client's
//! API. Below the dialects: imports only `canonical`, `error` and
//! `request_probe`.

mod head;

use std::fmt;

use serde_json::Value;

use crate::canonical::embeddings::{EmbedRequest, EmbedResponse};
use crate::canonical::{ProviderError, Request, Response, StreamEvent};
use crate::error::GatewayError;
use crate::request_probe::RequestProbe;

pub use head::RequestHead;

/// A client API's request wire (compared with a backend's: equal means
/// passthrough).
pub type Wire = crate::backend::Wire;

/// An endpoint family a model serves (`GET /v1/models`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Answers: Chat Completions, Responses, Messages, generateContent.
    Generate,
    /// Token counting (the provider's, or the gateway's estimate).
    CountTokens,
    /// Embeddings: only when the model's provider has an embeddings
    /// endpoint.
    Embeddings,
}

impl Family {
    /// The OpenAI-style paths of the family (the `endpoints` field).
    pub fn openai_paths(self) -> &'static [&'static str] {
        match self {
            Family::Generate => &["/v1/chat/completions", "/v1/responses", "/v1/messages"],
            Family::CountTokens => &["/v1/messages/count_tokens", "/v1/responses/input_tokens"],
            Family::Embeddings => &["/v1/embeddings"],
        }
    }

    /// Gemini's method names of the family.
    pub fn gemini_methods(self) -> &'static [&'static str] {
        match self {
            Family::Generate => &["generateContent", "streamGenerateContent"],
            Family::CountTokens => &["countTokens"],
            Family::Embeddings => &["embedContent", "batchEmbedContents"],
        }
    }
}

/// The `endpoints` field of a model object: the paths of its families.
pub fn endpoint_paths(families: &[Family]) -> Vec<&'static str> {
    families
        .iter()
        .flat_map(|f| f.openai_paths().iter().copied())
        .collect()
}

/// What an endpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Operation {
    /// A model's answer (chat, messages, generateContent, responses).
    #[default]
    Generate,
    /// How many input tokens a request would have (Anthropic
    /// `count_tokens`, Gemini `countTokens`, OpenAI `input_tokens`).
    CountTokens,
    /// Embeddings of the inputs.
    Embed,
}

impl Operation {
    /// Its name in usage records (`operation`; generation has none).
    pub fn record_name(self) -> Option<&'static str> {
        match self {
            Operation::Generate => None,
            Operation::CountTokens => Some("count_tokens"),
            Operation::Embed => Some("embeddings"),
        }
    }
}

/// An endpoint a request hit.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub api: &'static dyn ClientApi,
    pub op: Operation,
    /// The model, when the API carries it in the URL (Gemini); otherwise it
    /// is in the body.
    pub model: Option<String>,
    /// Stream-ness, when the URL says it.
    pub stream: bool,
}

/// What an API's endpoint matcher reads from the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointMatch {
    pub model: Option<String>,
    pub stream: bool,
    pub op: Operation,
}

pub trait ClientApi: Sync + fmt::Debug {
    /// Its name in usage records and metrics (`client_dialect`).
    fn name(&self) -> &'static str;
    fn wire(&self) -> Wire;
    /// Whether a request looks like this API's before any endpoint matched
    /// (so an early error is rendered in a shape its SDK reads). The first
    /// API in `registry::APIS` is the default and need not claim anything.
    fn claims(&self, path: &str, head: &RequestHead<'_>) -> bool;
    /// The paths of this API's endpoints (other methods get a 405).
    fn paths(&self) -> &'static [&'static str];
    /// Matches a POST to one of this API's generation endpoints (`path`
    /// without the query; `full_path` with it). `Some(Err)` refuses it.
    fn endpoint(
        &self,
        method: &str,
        path: &str,
        full_path: &str,
    ) -> Option<Result<EndpointMatch, GatewayError>>;
    /// Decodes a request to the canonical model (translation, policy).
    fn decode_request(&self, body: &[u8], ep: &Endpoint) -> Result<Request, GatewayError>;
    /// The body for a backend of the same wire: `probe` is the body's probe
    /// when the model is in the body.
    fn rewrite_passthrough(
        &self,
        body: &[u8],
        probe: Option<&RequestProbe<'_>>,
        upstream_model: &str,
    ) -> Vec<u8>;
    fn encode_response(&self, r: &Response) -> Vec<u8>;
    /// A provider's error for this client: (status, body).
    fn encode_error(&self, e: &ProviderError) -> (u16, Vec<u8>);
    /// The gateway's own error for this client.
    fn render_error(&self, e: &GatewayError) -> Vec<u8>;
    /// An encoder for one streamed answer (`model`: the name the client
    /// asked for; `created`: unix seconds; `include_usage`: the client
    /// asked for a usage chunk).
    fn stream_encoder(
        &self,
        model: &str,
        created: u64,
        include_usage: bool,
    ) -> Box<dyn StreamEncoder>;
    /// The SSE event name of an error event in this API's streams.
    fn stream_error_event(&self) -> Option<&'static str> {
        None
    }
    /// One entry of `GET /v1/models` (and `GET /v1/models/{name}`).
    /// `families`: what the model serves (`Family`), in a shape this API's
    /// SDK reads where it has one (Gemini's `supportedGenerationMethods`),
    /// else as a Sluice field (`endpoints`).
    fn model_object(&self, name: &str, families: &[Family]) -> Value;
    /// The `GET /v1/models` body around its entries.
    fn models_list(&self, models: Vec<Value>) -> Value;
    /// Token counting in this API's shape, if it has the endpoint.
    fn token_count(&self) -> Option<&'static dyn TokenCountApi> {
        None
    }
    /// Embeddings in this API's shape, if it has the endpoint.
    fn embeddings(&self) -> Option<&'static dyn EmbeddingsApi> {
        None
    }
}

/// A client API's token-counting endpoint.
pub trait TokenCountApi: Sync + fmt::Debug {
    /// The request whose input is counted, as canonical (messages, system,
    /// tools).
    fn decode(&self, body: &[u8], ep: &Endpoint) -> Result<Request, GatewayError>;
    /// The answer for `input_tokens`.
    fn encode(&self, input_tokens: u64) -> Vec<u8>;
}

/// A client API's embeddings endpoint.
pub trait EmbeddingsApi: Sync + fmt::Debug {
    fn decode(&self, body: &[u8], ep: &Endpoint) -> Result<EmbedRequest, GatewayError>;
    /// The answer (`model`: the name the client asked for).
    fn encode(&self, r: &EmbedResponse, req: &EmbedRequest, model: &str) -> Vec<u8>;
}

/// Canonical events → one client's stream bytes.
pub trait StreamEncoder: fmt::Debug {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>);
}
