//! The endpoints beside generation, in each provider's wire format:
//! embeddings (OpenAI `/embeddings`, Gemini `:embedContent` and
//! `:batchEmbedContents`) and token counting (Anthropic
//! `/messages/count_tokens`, Gemini `:countTokens`, OpenAI
//! `/responses/input_tokens`). Vectors are deterministic: input `i` of
//! text `t` has values `(len(t) + i + j) / 100` for `j` below the
//! dimensions (8 unless asked).

use serde_json::{json, Value};

/// Counted like the generation answers: a quarter of the body's bytes.
fn count(body_len: usize) -> u64 {
    (body_len as u64 / 4).max(1)
}

fn vector(text: &str, i: usize, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|j| (text.len() + i + j) as f32 / 100.0)
        .collect()
}

fn base64_f32(v: &[f32]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        out.push(B64[(n >> 18) as usize & 63] as char);
        out.push(B64[(n >> 12) as usize & 63] as char);
        out.push(if c.len() > 1 {
            B64[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if c.len() > 2 {
            B64[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

fn gemini_text(entry: &Value) -> String {
    entry
        .pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join("\n")
}

fn dims(v: Option<&Value>) -> usize {
    v.and_then(Value::as_u64).unwrap_or(8).clamp(1, 4096) as usize
}

/// OpenAI's other endpoints, as far as a gateway test needs them:
/// moderations, image generation and transcription (with usage where OpenAI
/// reports it), and the files API. `(status, content type, body)`.
pub fn other(
    method: &str,
    path: &str,
    req: &Value,
    raw: &[u8],
) -> Option<(u16, &'static str, Vec<u8>)> {
    let json = |v: Value| Some((200, "application/json", v.to_string().into_bytes()));
    match (method, path) {
        ("POST", p) if p.ends_with("/moderations") => json(json!({
            "id": "modr-mock", "model": req.get("model").cloned().unwrap_or(json!("omni-moderation-latest")),
            "results": [{"flagged": false, "categories": {}, "category_scores": {}}]})),
        ("POST", p) if p.ends_with("/images/generations") => json(json!({
            "created": 1_760_000_000u64, "data": [{"b64_json": "iVBORw0KGgo="}],
            "usage": {"input_tokens": 12, "output_tokens": 272, "total_tokens": 284,
                      "input_tokens_details": {"text_tokens": 12, "image_tokens": 0}}})),
        ("POST", p) if p.ends_with("/audio/transcriptions") => json(json!({
            "text": format!("mock transcript of {} bytes", raw.len()),
            "usage": {"type": "tokens", "input_tokens": 40, "output_tokens": 6, "total_tokens": 46}})),
        ("POST", p) if p.ends_with("/audio/speech") => {
            Some((200, "audio/mpeg", b"ID3\x04\x00mock-mp3-bytes".to_vec()))
        }
        ("GET", p) if p.ends_with("/files") => {
            json(json!({"object": "list", "has_more": false, "data": [
            {"id": "file-mock", "object": "file", "bytes": 3, "filename": "a.jsonl",
             "purpose": "batch", "created_at": 1_760_000_000u64}]}))
        }
        ("POST", p) if p.ends_with("/files") => json(json!({
            "id": "file-mock", "object": "file", "bytes": raw.len(), "filename": "upload",
            "purpose": "batch", "created_at": 1_760_000_000u64})),
        _ => None,
    }
}

/// `(status, body)` for an operation endpoint, or `None` if `path` is not one.
pub fn respond(path: &str, req: &Value, body_len: usize) -> Option<(u16, Value)> {
    if path.ends_with("/embeddings") {
        let inputs: Vec<String> = match req.get("input") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            _ => {
                return Some((
                    400,
                    json!({"error": {"message": "mock: input required",
                                                  "type": "invalid_request_error"}}),
                ))
            }
        };
        let d = dims(req.get("dimensions"));
        let b64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let v = vector(t, i, d);
                let e = if b64 { json!(base64_f32(&v)) } else { json!(v) };
                json!({"object": "embedding", "index": i, "embedding": e})
            })
            .collect();
        let tokens: u64 = inputs.iter().map(|t| (t.len() as u64 / 4).max(1)).sum();
        return Some((
            200,
            json!({"object": "list", "data": data,
            "model": req.get("model").cloned().unwrap_or(Value::Null),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
        ));
    }
    if path.ends_with(":embedContent") {
        let v = vector(&gemini_text(req), 0, dims(req.get("outputDimensionality")));
        return Some((200, json!({"embedding": {"values": v}})));
    }
    if path.ends_with(":batchEmbedContents") {
        let list: Vec<Value> = req
            .get("requests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
            .map(|(i, e)| {
                json!({"values": vector(&gemini_text(e), i, dims(e.get("outputDimensionality")))})
            })
            .collect();
        return Some((200, json!({ "embeddings": list })));
    }
    if path.ends_with("/messages/count_tokens") {
        return Some((200, json!({"input_tokens": count(body_len)})));
    }
    if path.ends_with(":countTokens") {
        return Some((200, json!({"totalTokens": count(body_len)})));
    }
    if path.ends_with("/responses/input_tokens") {
        return Some((
            200,
            json!({"object": "response.input_tokens",
                                 "input_tokens": count(body_len)}),
        ));
    }
    None
}
