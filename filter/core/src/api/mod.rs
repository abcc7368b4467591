//! The client-API seam: what a client *speaks* — which endpoints it calls,
//! how its requests decode, how answers, errors, streams and model lists are
//! written for it — behind one trait, with one registry.
//!
//! Adding a client API is one folder plus one line in [`APIS`]. Nothing
//! else dispatches on the client's API. May import: `canonical`, `framing`,
//! `error`, `request_probe` and the dialect folders; imported by
//! `translate` and `flow` only.

mod head;

use std::fmt;

use serde_json::Value;

use crate::canonical::{ProviderError, Request, Response, StreamEvent};
use crate::error::GatewayError;
use crate::request_probe::RequestProbe;

pub use head::RequestHead;

/// A client API's request wire (compared with a backend's: equal means
/// passthrough).
pub type Wire = crate::backend::Wire;

/// An endpoint a request hit.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub api: &'static dyn ClientApi,
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
}

pub trait ClientApi: Sync + fmt::Debug {
    /// Its name in usage records and metrics (`client_dialect`).
    fn name(&self) -> &'static str;
    fn wire(&self) -> Wire;
    /// Whether a request looks like this API's before any endpoint matched
    /// (so an early error is rendered in a shape its SDK reads). The first
    /// API in [`APIS`] is the default and need not claim anything.
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
    fn model_object(&self, name: &str) -> Value;
    /// The `GET /v1/models` body around its entries.
    fn models_list(&self, models: Vec<Value>) -> Value;
}

/// Canonical events → one client's stream bytes.
pub trait StreamEncoder: fmt::Debug {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>);
}

/// Every client API; the first is the default for requests that match none.
/// Registration is one line here.
pub static APIS: &[&dyn ClientApi] = &[
    &crate::openai::api::ChatCompletions,
    &crate::anthropic::api::Messages,
    &crate::gemini::api::GenerateContent,
];

/// An API by name (`openai`, `anthropic`, `gemini`).
pub fn lookup(name: &str) -> Option<&'static dyn ClientApi> {
    APIS.iter().copied().find(|a| a.name() == name)
}

/// The API a request looks like (for errors before an endpoint matched).
pub fn guess(path: &str, head: &RequestHead<'_>) -> &'static dyn ClientApi {
    let claimed = APIS.iter().skip(1).find(|a| a.claims(path, head));
    match claimed.or(APIS.first()) {
        Some(a) => *a,
        None => &crate::openai::api::ChatCompletions,
    }
}

/// What a request asks of the gateway, from its method and path.
#[derive(Debug)]
pub enum Recognized<'p> {
    Generate(Endpoint),
    /// `GET /v1/models` (or `/v1beta/models`).
    ListModels,
    /// `GET /v1/models/{name}`.
    GetModel(&'p str),
    Refused(GatewayError),
}

/// Routes a request by method and path (`path` without query or fragment).
pub fn recognize<'p>(method: &str, path: &'p str, full_path: &str) -> Recognized<'p> {
    for api in APIS.iter().copied() {
        if let Some(found) = api.endpoint(method, path, full_path) {
            return match found {
                Ok(m) => Recognized::Generate(Endpoint {
                    api,
                    model: m.model,
                    stream: m.stream,
                }),
                Err(e) => Recognized::Refused(e),
            };
        }
    }
    match (method, path) {
        ("GET", "/v1/models" | "/v1beta/models") => Recognized::ListModels,
        ("GET", p) if p.starts_with("/v1/models/") || p.starts_with("/v1beta/models/") => {
            Recognized::GetModel(p.rsplit('/').next().unwrap_or_default())
        }
        (m, p) if p == "/v1/models" || APIS.iter().any(|a| a.paths().contains(&p)) => {
            Recognized::Refused(GatewayError::method_not_allowed(m, p))
        }
        (m, p) => Recognized::Refused(GatewayError::not_found(m, p)),
    }
}
