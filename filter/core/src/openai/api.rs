//! OpenAI Chat Completions as a client API (`POST /v1/chat/completions`).

use serde_json::{json, Value};

use crate::api::Endpoint;
use crate::api::{
    ClientApi, EmbeddingsApi, EndpointMatch, Operation, RequestHead, StreamEncoder, Wire,
};
use crate::canonical::{ProviderError, Request, Response};
use crate::error::GatewayError;
use crate::request_probe::RequestProbe;

#[derive(Debug)]
pub struct ChatCompletions;

const PATH: &str = "/v1/chat/completions";

impl ClientApi for ChatCompletions {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn wire(&self) -> Wire {
        super::WIRE
    }

    /// The default API: claims nothing, answers what no other claims.
    fn claims(&self, _path: &str, _head: &RequestHead<'_>) -> bool {
        false
    }

    fn paths(&self) -> &'static [&'static str] {
        &[PATH, super::embeddings::PATH]
    }

    fn endpoint(
        &self,
        method: &str,
        path: &str,
        _full_path: &str,
    ) -> Option<Result<EndpointMatch, GatewayError>> {
        let op = match path {
            PATH => Operation::Generate,
            super::embeddings::PATH => Operation::Embed,
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

    /// The provider's usage chunk is always asked for (the gateway meters
    /// every stream); it is removed again when the client did not ask.
    fn rewrite_passthrough(
        &self,
        body: &[u8],
        probe: Option<&RequestProbe<'_>>,
        upstream_model: &str,
    ) -> Vec<u8> {
        match probe {
            Some(p) => p.rewrite_with(upstream_model, true),
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
        super::errors::render(e)
    }

    fn stream_encoder(
        &self,
        model: &str,
        created: u64,
        include_usage: bool,
    ) -> Box<dyn StreamEncoder> {
        Box::new(super::stream::Encoder::new(model, created, include_usage))
    }

    fn model_object(&self, name: &str, families: &[crate::api::Family]) -> Value {
        json!({"id": name, "object": "model", "created": 0, "owned_by": "sluice",
               "endpoints": crate::api::endpoint_paths(families)})
    }

    fn models_list(&self, models: Vec<Value>) -> Value {
        json!({"object": "list", "data": models})
    }

    fn embeddings(&self) -> Option<&'static dyn EmbeddingsApi> {
        Some(&super::embeddings::Api)
    }
}
