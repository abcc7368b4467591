//! OpenAI Responses as a client API (`POST /v1/responses`).

use serde_json::Value;

use crate::api::{
    ClientApi, Endpoint, EndpointMatch, Operation, RequestHead, StreamEncoder, TokenCountApi, Wire,
};
use crate::canonical::{ProviderError, Request, Response};
use crate::error::GatewayError;
use crate::request_probe::RequestProbe;

#[derive(Debug)]
pub struct Responses;

const PATH: &str = "/v1/responses";
const INPUT_TOKENS: &str = "/v1/responses/input_tokens";

impl ClientApi for Responses {
    fn name(&self) -> &'static str {
        "openai-responses"
    }

    fn wire(&self) -> Wire {
        super::WIRE
    }

    fn claims(&self, path: &str, _head: &RequestHead<'_>) -> bool {
        path == PATH || path.starts_with("/v1/responses/")
    }

    fn paths(&self) -> &'static [&'static str] {
        &[PATH, INPUT_TOKENS]
    }

    fn endpoint(
        &self,
        method: &str,
        path: &str,
        _full_path: &str,
    ) -> Option<Result<EndpointMatch, GatewayError>> {
        let op = match path {
            PATH => Operation::Generate,
            INPUT_TOKENS => Operation::CountTokens,
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

    /// Only `model` changes: a Responses stream always ends with its usage.
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
        crate::openai::response::encode_error(e)
    }

    fn render_error(&self, e: &GatewayError) -> Vec<u8> {
        crate::openai::errors::render(e)
    }

    fn stream_encoder(
        &self,
        model: &str,
        created: u64,
        _include_usage: bool,
    ) -> Box<dyn StreamEncoder> {
        Box::new(super::stream::Encoder::new(model, created))
    }

    fn stream_error_event(&self) -> Option<&'static str> {
        Some("error")
    }

    fn model_object(&self, name: &str, families: &[crate::api::Family]) -> Value {
        crate::openai::api::ChatCompletions.model_object(name, families)
    }

    fn models_list(&self, models: Vec<Value>) -> Value {
        crate::openai::api::ChatCompletions.models_list(models)
    }

    fn token_count(&self) -> Option<&'static dyn TokenCountApi> {
        Some(&InputTokens)
    }
}

/// `POST /v1/responses/input_tokens`: a Responses request, counted.
#[derive(Debug)]
pub struct InputTokens;

impl TokenCountApi for InputTokens {
    fn decode(&self, body: &[u8], _ep: &Endpoint) -> Result<Request, GatewayError> {
        super::request::decode(body)
    }

    fn encode(&self, input_tokens: u64) -> Vec<u8> {
        serde_json::to_vec(
            &serde_json::json!({"object": "response.input_tokens", "input_tokens": input_tokens}),
        )
        .unwrap_or_default()
    }
}
