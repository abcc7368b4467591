//! Gemini `:countTokens`: the request (`contents`, or a whole
//! `generateContentRequest`) for the gateway's own count, the answer, and
//! the provider's endpoint for Gemini clients.

use serde_json::{json, Value};

use crate::api::{Endpoint, TokenCountApi};
use crate::backend::TokenCountBackend;
use crate::canonical::Request;
use crate::error::GatewayError;

#[derive(Debug)]
pub struct Api;

impl TokenCountApi for Api {
    fn decode(&self, body: &[u8], ep: &Endpoint) -> Result<Request, GatewayError> {
        let model = ep.model.as_deref().unwrap_or_default();
        let v: Value = serde_json::from_slice(body).map_err(|e| {
            GatewayError::invalid_request(format!("Invalid countTokens request: {e}"))
        })?;
        match v.get("generateContentRequest") {
            Some(inner) => {
                let bytes = serde_json::to_vec(inner).unwrap_or_default();
                super::request::decode(&bytes, model, false)
            }
            None => super::request::decode(body, model, false),
        }
    }

    fn encode(&self, input_tokens: u64) -> Vec<u8> {
        serde_json::to_vec(&json!({ "totalTokens": input_tokens })).unwrap_or_default()
    }
}

#[derive(Debug)]
pub struct Backend;

impl TokenCountBackend for Backend {
    fn upstream_path(&self, base_path: &str, upstream_model: &str) -> String {
        format!("{base_path}/models/{upstream_model}:countTokens")
    }
}
