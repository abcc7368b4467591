//! Google Gemini generateContent / streamGenerateContent wire format.

use serde_json::{json, Value};

use crate::answer::{Answer, Finish, OfferedTool};

pub fn offered_tools(req: &Value) -> Vec<OfferedTool> {
    req.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
        .flatten()
        .filter_map(|f| {
            Some(OfferedTool {
                name: f.get("name")?.as_str()?.to_string(),
                parameters: f
                    .get("parameters")
                    .or_else(|| f.get("parametersJsonSchema"))
                    .or_else(|| f.get("parameters_json_schema"))
                    .cloned()
                    .unwrap_or(Value::Null),
            })
        })
        .collect()
}

pub fn no_tool_call(req: &Value) -> bool {
    let forbidden = req
        .pointer("/toolConfig/functionCallingConfig/mode")
        .and_then(Value::as_str)
        .is_some_and(|m| m.eq_ignore_ascii_case("none"));
    let last_is_response = req
        .get("contents")
        .and_then(Value::as_array)
        .and_then(|c| c.last())
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .is_some_and(|parts| parts.iter().any(|p| p.get("functionResponse").is_some()));
    forbidden || last_is_response
}

pub fn max_tokens(req: &Value) -> Option<u64> {
    req.pointer("/generationConfig/maxOutputTokens")
        .and_then(Value::as_u64)
}

fn finish(f: Finish) -> &'static str {
    match f {
        Finish::Stop | Finish::ToolCalls => "STOP",
        Finish::Length => "MAX_TOKENS",
    }
}

fn usage(a: &Answer, candidates: u64) -> Value {
    json!({"promptTokenCount": a.prompt_tokens, "candidatesTokenCount": candidates,
           "totalTokenCount": a.prompt_tokens + candidates})
}

fn candidate(parts: Vec<Value>, finish_reason: Option<&str>) -> Value {
    let mut c = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    if let Some(f) = finish_reason {
        c["finishReason"] = json!(f);
    }
    c
}

fn call_parts(a: &Answer) -> Vec<Value> {
    a.tool_calls
        .iter()
        .map(|c| {
            let args: Value = serde_json::from_str(&c.arguments).unwrap_or(json!({}));
            json!({"functionCall": {"name": c.name, "args": args}})
        })
        .collect()
}

pub fn response(a: &Answer) -> Value {
    let mut parts = Vec::new();
    if !a.text.is_empty() {
        parts.push(json!({"text": a.full_text()}));
    }
    parts.extend(call_parts(a));
    json!({
        "candidates": [candidate(parts, Some(finish(a.finish)))],
        "usageMetadata": usage(a, a.completion_tokens),
        "modelVersion": a.model,
        "responseId": "mock-response"
    })
}

/// `data:` payloads of an `alt=sse` stream. Gemini sends function calls
/// whole, in one chunk.
pub fn stream_payloads(a: &Answer) -> Vec<Value> {
    let mut out = Vec::new();
    let n = a.text.len();
    for (i, piece) in a.text.iter().enumerate() {
        let last = i + 1 == n && a.tool_calls.is_empty();
        let mut c = json!({
            "candidates": [candidate(vec![json!({"text": piece})],
                                     last.then(|| finish(a.finish)))],
            "usageMetadata": usage(a, i as u64 + 1),
            "modelVersion": a.model,
            "responseId": "mock-response"
        });
        if !last {
            c["usageMetadata"] = json!({"promptTokenCount": a.prompt_tokens,
                                        "totalTokenCount": a.prompt_tokens});
        }
        out.push(c);
    }
    if !a.tool_calls.is_empty() {
        out.push(json!({
            "candidates": [candidate(call_parts(a), Some(finish(a.finish)))],
            "usageMetadata": usage(a, a.completion_tokens),
            "modelVersion": a.model,
            "responseId": "mock-response"
        }));
    }
    out
}

pub fn frame(payload: &str) -> String {
    format!("data: {payload}\r\n\r\n")
}

pub fn error(status: u16, message: &str) -> Value {
    let s = match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    };
    json!({"error": {"code": status, "message": message, "status": s}})
}
