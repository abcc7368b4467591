//! Gemini embeddings (`:embedContent`, `:batchEmbedContents`) ↔ canonical:
//! the client API's endpoints and the backend's (always the batch call).
//! Gemini reports no token usage for embeddings: the gateway estimates it.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::api::{EmbeddingsApi, Endpoint};
use crate::backend::EmbeddingsBackend;
use crate::canonical::embeddings::{EmbedInput, EmbedRequest, EmbedResponse};
use crate::canonical::Warnings;
use crate::error::GatewayError;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct One {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    task_type: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    output_dimensionality: Option<u64>,
    /// `model` repeats the URL's in batch entries.
    #[serde(default)]
    model: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
struct Batch {
    requests: Vec<One>,
}

fn text_of(one: &One) -> Result<String, GatewayError> {
    let parts = one.content.as_ref().map(|c| &c.parts);
    let texts: Vec<&str> = parts
        .into_iter()
        .flatten()
        .filter_map(|p| p.text.as_deref())
        .collect();
    if parts.is_some_and(|p| p.iter().any(|p| p.text.is_none())) {
        return Err(GatewayError::invalid_request(
            "Only text parts can be embedded through the gateway.",
        ));
    }
    Ok(texts.join("\n"))
}

/// `model`: from the URL. A body with `requests` is a batch.
pub fn decode(body: &[u8], model: &str) -> Result<EmbedRequest, GatewayError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid_request(format!("Invalid embedding request: {e}")))?;
    let single = v.get("requests").is_none();
    let entries: Vec<One> = if single {
        vec![serde_json::from_value(v).map_err(|e| {
            GatewayError::invalid_request(format!("Invalid embedContent request: {e}"))
        })?]
    } else {
        serde_json::from_value::<Batch>(v)
            .map_err(|e| {
                GatewayError::invalid_request(format!("Invalid batchEmbedContents request: {e}"))
            })?
            .requests
    };
    if entries.is_empty() {
        return Err(GatewayError::invalid_request(
            "'requests' must not be empty.",
        ));
    }
    let mut out = EmbedRequest {
        model: model.to_string(),
        single,
        ..EmbedRequest::default()
    };
    for one in &entries {
        if one.content.is_none() {
            return Err(GatewayError::invalid_request(
                "Each embedding needs 'content'.",
            ));
        }
        out.inputs.push(EmbedInput::Text(text_of(one)?));
        // One setting for the call: the first entry's (a batch mixing them
        // is refused rather than answered with the wrong ones).
        let same = out.inputs.len() == 1
            || (out.dimensions == one.output_dimensionality
                && out.task_type == one.task_type
                && out.title == one.title);
        if !same {
            return Err(GatewayError::invalid_request(
                "The entries of a batch must share taskType, title and outputDimensionality.",
            ));
        }
        out.dimensions = one.output_dimensionality;
        out.task_type.clone_from(&one.task_type);
        out.title.clone_from(&one.title);
        let _ = &one.model;
        for k in one.extra.keys() {
            if !out.unmapped.contains(k) {
                out.unmapped.push(k.clone());
            }
        }
    }
    Ok(out)
}

pub fn encode_response(r: &EmbedResponse, req: &EmbedRequest) -> Vec<u8> {
    let values = |v: &Vec<f32>| json!({ "values": v });
    let body = if req.single {
        json!({"embedding": r.vectors.first().map(values).unwrap_or(json!({"values": []}))})
    } else {
        json!({"embeddings": r.vectors.iter().map(values).collect::<Vec<_>>()})
    };
    serde_json::to_vec(&body).unwrap_or_default()
}

#[derive(Debug)]
pub struct Api;

impl EmbeddingsApi for Api {
    fn decode(&self, body: &[u8], ep: &Endpoint) -> Result<EmbedRequest, GatewayError> {
        decode(body, ep.model.as_deref().unwrap_or_default())
    }

    fn encode(&self, r: &EmbedResponse, req: &EmbedRequest, _model: &str) -> Vec<u8> {
        encode_response(r, req)
    }
}

// ---- backend ----

#[derive(Deserialize)]
struct Values {
    #[serde(default)]
    values: Vec<f32>,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    embeddings: Option<Vec<Values>>,
    #[serde(default)]
    embedding: Option<Values>,
}

#[derive(Debug)]
pub struct Backend;

impl EmbeddingsBackend for Backend {
    fn upstream_path(&self, base_path: &str, upstream_model: &str, single: bool) -> String {
        let action = if single {
            "embedContent"
        } else {
            "batchEmbedContents"
        };
        format!("{base_path}/models/{upstream_model}:{action}")
    }

    fn encode(
        &self,
        req: &EmbedRequest,
        upstream_model: &str,
        warnings: &mut Warnings,
    ) -> Result<Vec<u8>, String> {
        let mut requests = Vec::with_capacity(req.inputs.len());
        for input in &req.inputs {
            let EmbedInput::Text(t) = input else {
                return Err("token-id inputs can be embedded only by an OpenAI provider".into());
            };
            let mut one = json!({"model": format!("models/{upstream_model}"),
                                 "content": {"parts": [{"text": t}]}});
            if let Some(o) = one.as_object_mut() {
                if let Some(d) = req.dimensions {
                    o.insert("outputDimensionality".into(), json!(d));
                }
                if let Some(t) = &req.task_type {
                    o.insert("taskType".into(), json!(t));
                }
                if let Some(t) = &req.title {
                    o.insert("title".into(), json!(t));
                }
            }
            requests.push(one);
        }
        if req.user.is_some() {
            warnings.dropped("user", "gemini");
        }
        Ok(serde_json::to_vec(&json!({ "requests": requests })).unwrap_or_default())
    }

    fn decode(&self, body: &[u8]) -> Option<EmbedResponse> {
        let a: Answer = serde_json::from_slice(body).ok()?;
        let vectors = match (a.embeddings, a.embedding) {
            (Some(list), _) => list.into_iter().map(|v| v.values).collect(),
            (None, Some(one)) => vec![one.values],
            (None, None) => return None,
        };
        Some(EmbedResponse {
            vectors,
            usage: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_batch_requests() {
        let one = decode(
            br#"{"content":{"parts":[{"text":"hi"}]},"taskType":"RETRIEVAL_QUERY","outputDimensionality":8}"#,
            "m",
        )
        .unwrap();
        assert!(one.single && one.dimensions == Some(8));
        assert_eq!(one.task_type.as_deref(), Some("RETRIEVAL_QUERY"));
        let batch = decode(
            br#"{"requests":[{"model":"models/m","content":{"parts":[{"text":"a"}]}},
                             {"model":"models/m","content":{"parts":[{"text":"b"}]}}]}"#,
            "m",
        )
        .unwrap();
        assert!(!batch.single);
        assert_eq!(batch.inputs.len(), 2);
        for bad in [
            &br#"{"requests":[]}"#[..],
            br#"{"requests":[{"content":{"parts":[{"text":"a"}]},"outputDimensionality":4},
                            {"content":{"parts":[{"text":"b"}]}}]}"#,
            br#"{"content":{"parts":[{"inlineData":{"mimeType":"image/png","data":"AA"}}]}}"#,
            br#"{"taskType":"X"}"#,
        ] {
            assert!(
                decode(bad, "m").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn backend_batches_and_reads_answers() {
        let req = decode(br#"{"content":{"parts":[{"text":"hi"}]}}"#, "m").unwrap();
        let body = Backend
            .encode(&req, "up", &mut Warnings::default())
            .unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["requests"][0]["model"], "models/up");
        let r = Backend
            .decode(br#"{"embeddings":[{"values":[0.5,1.0]}]}"#)
            .unwrap();
        assert_eq!(r.vectors, vec![vec![0.5, 1.0]]);
        let out: Value = serde_json::from_slice(&encode_response(&r, &req)).unwrap();
        assert_eq!(out["embedding"]["values"], json!([0.5, 1.0]));
        let tokens = EmbedRequest {
            inputs: vec![EmbedInput::Tokens(vec![1])],
            ..EmbedRequest::default()
        };
        assert!(Backend
            .encode(&tokens, "up", &mut Warnings::default())
            .is_err());
    }
}
