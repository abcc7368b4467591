//! Anthropic Messages as a client API (`POST /v1/messages`).

use serde_json::{json, Value};

use crate::api::{
    ClientApi, Endpoint, EndpointMatch, Operation, RequestHead, StreamEncoder, TokenCountApi, Wire,
};
use crate::canonical::{ProviderError, Request, Response};
use crate::error::GatewayError;
use crate::request_probe::RequestProbe;

#[derive(Debug)]
pub struct Messages;

const PATH: &str = "/v1/messages";

impl ClientApi for Messages {
    fn name(&self) -> &'static str {
        "anthropic"
    }

    fn wire(&self) -> Wire {
        super::WIRE
    }

    /// Anthropic's SDKs always send `anthropic-version`.
    fn claims(&self, path: &str, head: &RequestHead<'_>) -> bool {
        path == PATH || path == super::count_tokens::PATH || head.anthropic_version.is_some()
    }

    fn paths(&self) -> &'static [&'static str] {
        &[PATH, super::count_tokens::PATH]
    }

    fn endpoint(
        &self,
        method: &str,
        path: &str,
        _full_path: &str,
    ) -> Option<Result<EndpointMatch, GatewayError>> {
        let op = match path {
            PATH => Operation::Generate,
            super::count_tokens::PATH => Operation::CountTokens,
            _ => return None,
        };
        (method == "POST").then_some(Ok(EndpointMatch {
            op,
            ..EndpointMatch::default()
        }))
    }

    fn decode_request(&self, body: &[u8], _ep: &Endpoint) -> Result<Request, GatewayError> {
        super::request::decode(body)
    }

    fn rewrite_passthrough(
        &self,
        body: &[u8],
        probe: Option<&RequestProbe<'_>>,
        upstream_model: &str,
    ) -> Vec<u8> {
        match probe {
            Some(p) => p.rewrite_with(upstream_model, false),
            None => body.to_vec(),
        }
    }

    fn encode_response(&self, r: &Response) -> Vec<u8> {
        super::response::encode(r)
    }

    fn encode_error(&self, e: &ProviderError) -> (u16, Vec<u8>) {
        super::response::encode_error(e)
    }

    fn render_error(&self, e: &GatewayError) -> Vec<u8> {
        super::response::error_body(e.kind.class(), &e.message)
    }

    fn stream_encoder(
        &self,
        model: &str,
        _created: u64,
        _include_usage: bool,
    ) -> Box<dyn StreamEncoder> {
        Box::new(super::stream::Encoder::new(model))
    }

    fn stream_error_event(&self) -> Option<&'static str> {
        Some("error")
    }

    fn model_object(&self, name: &str, families: &[crate::api::Family]) -> Value {
        json!({"type": "model", "id": name, "display_name": name,
            "created_at": "1970-01-01T00:00:00Z",
            "endpoints": crate::api::endpoint_paths(families)})
    }

    fn models_list(&self, models: Vec<Value>) -> Value {
        let first = models.first().map(|m| m["id"].clone());
        let last = models.last().map(|m| m["id"].clone());
        json!({"data": models, "has_more": false, "first_id": first, "last_id": last})
    }

    fn token_count(&self) -> Option<&'static dyn TokenCountApi> {
        Some(&super::count_tokens::Api)
    }
}
