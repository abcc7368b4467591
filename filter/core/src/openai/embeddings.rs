//! OpenAI embeddings (`POST /v1/embeddings`) ↔ canonical: the client API's
//! endpoint and the backend's.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::{EmbeddingsApi, Endpoint};
use crate::backend::EmbeddingsBackend;
use crate::canonical::embeddings::{
    base64_f32, f32_from_base64, EmbedInput, EmbedRequest, EmbedResponse,
};
use crate::canonical::Warnings;
use crate::error::GatewayError;
use sluice_records::TokenUsage;

pub const PATH: &str = "/v1/embeddings";

#[derive(Deserialize)]
struct Request {
    model: String,
    input: Value,
    #[serde(default)]
    dimensions: Option<u64>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

fn bad(msg: &str) -> GatewayError {
    GatewayError::invalid_request(msg).with_param("input")
}

fn tokens(v: &Value) -> Option<Vec<u32>> {
    v.as_array()?
        .iter()
        .map(|t| t.as_u64().and_then(|n| u32::try_from(n).ok()))
        .collect()
}

pub fn decode(body: &[u8]) -> Result<EmbedRequest, GatewayError> {
    let r: Request = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid_request(format!("Invalid embeddings request: {e}")))?;
    let inputs = match &r.input {
        Value::String(s) => vec![EmbedInput::Text(s.clone())],
        Value::Array(a) if a.is_empty() => return Err(bad("'input' must not be empty")),
        Value::Array(a) if a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|s| s.as_str().map(|s| EmbedInput::Text(s.to_string())))
            .collect(),
        Value::Array(a) if a.iter().all(Value::is_number) => {
            vec![EmbedInput::Tokens(
                tokens(&r.input).ok_or_else(|| bad("bad token ids"))?,
            )]
        }
        Value::Array(a) => a
            .iter()
            .map(|t| tokens(t).map(EmbedInput::Tokens))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("'input' must be a string, an array of strings, or token arrays"))?,
        _ => return Err(bad("'input' must be a string or an array")),
    };
    let base64 = match r.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(_) => {
            return Err(
                GatewayError::invalid_request("'encoding_format' must be float or base64")
                    .with_param("encoding_format"),
            )
        }
    };
    Ok(EmbedRequest {
        model: r.model,
        inputs,
        dimensions: r.dimensions,
        base64,
        user: r.user,
        unmapped: r.extra.into_iter().map(|(k, _)| k).collect(),
        ..EmbedRequest::default()
    })
}

pub fn encode_response(r: &EmbedResponse, req: &EmbedRequest, model: &str) -> Vec<u8> {
    let data: Vec<Value> = r
        .vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if req.base64 {
                json!(base64_f32(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let prompt = r.usage.map(|u| u.prompt_tokens).unwrap_or(0);
    serde_json::to_vec(&json!({"object": "list", "data": data, "model": model,
                               "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}))
    .unwrap_or_default()
}

#[derive(Debug)]
pub struct Api;

impl EmbeddingsApi for Api {
    fn decode(&self, body: &[u8], _ep: &Endpoint) -> Result<EmbedRequest, GatewayError> {
        decode(body)
    }

    fn encode(&self, r: &EmbedResponse, req: &EmbedRequest, model: &str) -> Vec<u8> {
        encode_response(r, req, model)
    }
}

// ---- backend ----

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    data: Vec<Datum>,
    #[serde(default)]
    usage: Option<AnswerUsage>,
}

#[derive(Deserialize)]
struct Datum {
    #[serde(default)]
    index: usize,
    embedding: Value,
}

#[derive(Deserialize)]
struct AnswerUsage {
    #[serde(default)]
    prompt_tokens: u64,
}

#[derive(Debug)]
pub struct Backend;

impl EmbeddingsBackend for Backend {
    fn upstream_path(&self, base_path: &str, _upstream_model: &str, _single: bool) -> String {
        format!("{base_path}/embeddings")
    }

    fn encode(
        &self,
        req: &EmbedRequest,
        upstream_model: &str,
        warnings: &mut Warnings,
    ) -> Result<Vec<u8>, String> {
        let input: Vec<Value> = req
            .inputs
            .iter()
            .map(|i| match i {
                EmbedInput::Text(t) => json!(t),
                EmbedInput::Tokens(t) => json!(t),
            })
            .collect();
        let mut body = json!({"model": upstream_model, "input": input,
                              "encoding_format": "float"});
        if let (Some(d), Some(o)) = (req.dimensions, body.as_object_mut()) {
            o.insert("dimensions".into(), json!(d));
        }
        if req.task_type.is_some() {
            warnings.dropped("taskType", "openai");
        }
        if req.title.is_some() {
            warnings.dropped("title", "openai");
        }
        Ok(serde_json::to_vec(&body).unwrap_or_default())
    }

    fn decode(&self, body: &[u8]) -> Option<EmbedResponse> {
        let mut a: Answer = serde_json::from_slice(body).ok()?;
        a.data.sort_by_key(|d| d.index);
        let vectors = a
            .data
            .iter()
            .map(|d| match &d.embedding {
                Value::String(s) => f32_from_base64(s),
                v => serde_json::from_value::<Vec<f32>>(v.clone()).ok(),
            })
            .collect::<Option<Vec<_>>>()?;
        Some(EmbedResponse {
            vectors,
            usage: a.usage.map(|u| TokenUsage {
                prompt_tokens: u.prompt_tokens,
                ..TokenUsage::default()
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_in_every_shape() {
        let one = decode(br#"{"model":"m","input":"hi"}"#).unwrap();
        assert_eq!(one.inputs, vec![EmbedInput::Text("hi".into())]);
        let many =
            decode(br#"{"model":"m","input":["a","b"],"encoding_format":"base64","dimensions":8}"#)
                .unwrap();
        assert_eq!(many.inputs.len(), 2);
        assert!(many.base64 && many.dimensions == Some(8));
        let toks = decode(br#"{"model":"m","input":[1,2,3]}"#).unwrap();
        assert_eq!(toks.inputs, vec![EmbedInput::Tokens(vec![1, 2, 3])]);
        let batches = decode(br#"{"model":"m","input":[[1],[2,3]]}"#).unwrap();
        assert_eq!(batches.inputs.len(), 2);
        for bad in [
            &br#"{"model":"m","input":[]}"#[..],
            br#"{"model":"m","input":5}"#,
            br#"{"model":"m","input":["a",1]}"#,
            br#"{"model":"m","input":"a","encoding_format":"hex"}"#,
        ] {
            assert!(decode(bad).is_err());
        }
    }

    #[test]
    fn answers_round_trip_in_both_encodings() {
        let r = EmbedResponse {
            vectors: vec![vec![0.5, -1.0], vec![2.0, 0.0]],
            usage: Some(TokenUsage {
                prompt_tokens: 4,
                ..TokenUsage::default()
            }),
        };
        for base64 in [false, true] {
            let req = EmbedRequest {
                base64,
                ..EmbedRequest::default()
            };
            let body = encode_response(&r, &req, "m");
            assert_eq!(Backend.decode(&body).unwrap(), r);
        }
    }
}
