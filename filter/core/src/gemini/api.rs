//! Gemini `generateContent` / `streamGenerateContent` as a client API: the
//! model and stream-ness are in the URL (`/v1beta/models/M:action`).

use serde_json::{json, Value};

use crate::api::{
    ClientApi, EmbeddingsApi, Endpoint, EndpointMatch, Operation, RequestHead, StreamEncoder,
    TokenCountApi, Wire,
};
use crate::canonical::{ProviderError, Request, Response};
use crate::error::GatewayError;
use crate::request_probe::RequestProbe;

#[derive(Debug)]
pub struct GenerateContent;

/// `/v1beta/models/M:action` or `/v1/models/M:action`.
pub fn endpoint_parts(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, action) = rest.rsplit_once(':')?;
    (!model.is_empty() && !model.contains('/')).then_some((model, action))
}

fn query_has(path: &str, param: &str) -> bool {
    path.split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv == param))
}

impl ClientApi for GenerateContent {
    fn name(&self) -> &'static str {
        "gemini"
    }

    fn wire(&self) -> Wire {
        super::WIRE
    }

    fn claims(&self, path: &str, _head: &RequestHead<'_>) -> bool {
        endpoint_parts(path).is_some() || path.starts_with("/v1beta/")
    }

    fn paths(&self) -> &'static [&'static str] {
        &[]
    }

    fn endpoint(
        &self,
        method: &str,
        path: &str,
        full_path: &str,
    ) -> Option<Result<EndpointMatch, GatewayError>> {
        if method != "POST" {
            return None;
        }
        let (model, action) = endpoint_parts(path)?;
        let (stream, op) = match action {
            "generateContent" => (false, Operation::Generate),
            "countTokens" => (false, Operation::CountTokens),
            "embedContent" | "batchEmbedContents" => (false, Operation::Embed),
            "streamGenerateContent" if !query_has(full_path, "alt=sse") => {
                return Some(Err(GatewayError::invalid_request(
                    "streamGenerateContent is served as server-sent events only: add ?alt=sse.",
                )))
            }
            "streamGenerateContent" => (true, Operation::Generate),
            _ => return None,
        };
        Some(Ok(EndpointMatch {
            model: Some(model.to_string()),
            stream,
            op,
        }))
    }

    fn decode_request(&self, body: &[u8], ep: &Endpoint) -> Result<Request, GatewayError> {
        super::request::decode(body, ep.model.as_deref().unwrap_or_default(), ep.stream)
    }

    /// The model is in the URL, which the backend writes: the body goes as is.
    fn rewrite_passthrough(
        &self,
        body: &[u8],
        _probe: Option<&RequestProbe<'_>>,
        _upstream_model: &str,
    ) -> Vec<u8> {
        body.to_vec()
    }

    fn encode_response(&self, r: &Response) -> Vec<u8> {
        super::response::encode(r)
    }

    fn encode_error(&self, e: &ProviderError) -> (u16, Vec<u8>) {
        super::response::encode_error(e)
    }

    fn render_error(&self, e: &GatewayError) -> Vec<u8> {
        super::response::error_body(e.status, e.kind.class(), &e.message)
    }

    fn stream_encoder(
        &self,
        model: &str,
        _created: u64,
        _include_usage: bool,
    ) -> Box<dyn StreamEncoder> {
        Box::new(super::stream::Encoder::new(model))
    }

    fn model_object(&self, name: &str, families: &[crate::api::Family]) -> Value {
        let methods: Vec<&str> = families
            .iter()
            .flat_map(|f| f.gemini_methods().iter().copied())
            .collect();
        json!({"name": format!("models/{name}"), "displayName": name,
            "supportedGenerationMethods": methods})
    }

    fn models_list(&self, models: Vec<Value>) -> Value {
        json!({"models": models})
    }

    fn token_count(&self) -> Option<&'static dyn TokenCountApi> {
        Some(&super::count_tokens::Api)
    }

    fn embeddings(&self) -> Option<&'static dyn EmbeddingsApi> {
        Some(&super::embeddings::Api)
    }
}
