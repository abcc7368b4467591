//! Anthropic `POST /v1/messages/count_tokens`: the request (a Messages
//! request without `max_tokens`) for the gateway's own count, the answer,
//! and the provider's endpoint for Anthropic clients.

use serde_json::json;

use crate::api::{Endpoint, TokenCountApi};
use crate::backend::TokenCountBackend;
use crate::canonical::Request;
use crate::error::GatewayError;

pub const PATH: &str = "/v1/messages/count_tokens";

#[derive(Debug)]
pub struct Api;

impl TokenCountApi for Api {
    fn decode(&self, body: &[u8], _ep: &Endpoint) -> Result<Request, GatewayError> {
        super::request::decode(body)
    }

    fn encode(&self, input_tokens: u64) -> Vec<u8> {
        serde_json::to_vec(&json!({ "input_tokens": input_tokens })).unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Backend;

impl TokenCountBackend for Backend {
    fn upstream_path(&self, base_path: &str, _upstream_model: &str) -> String {
        format!("{base_path}/messages/count_tokens")
    }
}
