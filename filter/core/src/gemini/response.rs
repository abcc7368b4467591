//! Gemini non-stream responses, usage and errors ↔ canonical.

use serde_json::{json, Value};

use crate::canonical::{
    synthesized_call_id, ErrorClass, FinishReason, Part, ProviderError, Response,
};
use crate::gemini::types::{
    Candidate, Content, ErrorEnvelope, FunctionCall, GPart, GenerateResponse, UsageMetadata,
};
use sluice_records::TokenUsage;

/// Gemini's `candidatesTokenCount` excludes thinking; the canonical (and
/// OpenAI) completion count includes it, with `reasoning_tokens` the part
/// spent thinking.
pub fn usage_from(u: &UsageMetadata) -> TokenUsage {
    TokenUsage {
        prompt_tokens: u.prompt_token_count,
        completion_tokens: u
            .candidates_token_count
            .saturating_add(u.thoughts_token_count),
        cached_tokens: u.cached_content_token_count,
        cache_creation_tokens: 0,
        reasoning_tokens: u.thoughts_token_count,
    }
}

pub fn usage_to(u: &TokenUsage) -> UsageMetadata {
    UsageMetadata {
        prompt_token_count: u.prompt_tokens,
        candidates_token_count: u.completion_tokens.saturating_sub(u.reasoning_tokens),
        total_token_count: u.prompt_tokens.saturating_add(u.completion_tokens),
        thoughts_token_count: u.reasoning_tokens,
        cached_content_token_count: u.cached_tokens,
    }
}

/// Canonical parts of one Gemini candidate; `calls` numbers tool calls.
pub fn parts_from(content: Content, calls: &mut usize, out: &mut Vec<Part>) {
    for p in content.parts {
        if let Some(t) = p.text {
            if t.is_empty() {
                continue;
            }
            if p.thought == Some(true) {
                out.push(Part::Thinking {
                    text: t,
                    signature: p.thought_signature,
                });
            } else {
                out.push(Part::Text(t));
            }
        } else if let Some(fc) = p.function_call {
            let name = fc.name.unwrap_or_default();
            out.push(Part::ToolCall {
                id: fc.id.unwrap_or_else(|| synthesized_call_id(*calls, &name)),
                arguments: fc.args.unwrap_or_else(|| json!({})).to_string(),
                name,
            });
            *calls = calls.saturating_add(1);
        }
    }
}

pub fn decode(body: &[u8]) -> Option<Response> {
    let r: GenerateResponse = serde_json::from_slice(body).ok()?;
    let mut out = Response {
        id: r.response_id.unwrap_or_default(),
        model: r.model_version.unwrap_or_default(),
        usage: r.usage_metadata.as_ref().map(usage_from),
        ..Response::default()
    };
    if let Some(c) = r.candidates.into_iter().next() {
        let mut calls = 0;
        if let Some(content) = c.content {
            parts_from(content, &mut calls, &mut out.parts);
        }
        out.finish = c.finish_reason.as_deref().map(|f| {
            // Gemini says STOP after function calls; callers of other
            // dialects expect "tool calls" then.
            match FinishReason::from_gemini(f) {
                FinishReason::Stop if calls > 0 => FinishReason::ToolCalls,
                other => other,
            }
        });
    }
    Some(out)
}

pub fn part_to_gemini(p: &Part) -> Option<GPart> {
    match p {
        Part::Text(t) => Some(GPart {
            text: Some(t.clone()),
            ..GPart::default()
        }),
        Part::Thinking { text, .. } => Some(GPart {
            text: Some(text.clone()),
            thought: Some(true),
            ..GPart::default()
        }),
        Part::ToolCall {
            id,
            name,
            arguments,
        } => Some(GPart {
            function_call: Some(FunctionCall {
                id: Some(id.clone()),
                name: Some(name.clone()),
                args: Some(serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!({}))),
                ..FunctionCall::default()
            }),
            ..GPart::default()
        }),
        _ => None,
    }
}

pub fn encode(r: &Response) -> Vec<u8> {
    let parts: Vec<GPart> = r.parts.iter().filter_map(part_to_gemini).collect();
    let out = GenerateResponse {
        candidates: vec![Candidate {
            content: Some(Content {
                role: Some("model".into()),
                parts,
            }),
            finish_reason: Some(r.finish.unwrap_or(FinishReason::Stop).gemini().into()),
            index: 0,
        }],
        usage_metadata: r.usage.as_ref().map(usage_to),
        model_version: Some(r.model.clone()),
        response_id: (!r.id.is_empty()).then(|| r.id.clone()),
        error: None,
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

pub fn class_from_status(s: &str, code: u16) -> ErrorClass {
    match s {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => ErrorClass::InvalidRequest,
        "UNAUTHENTICATED" => ErrorClass::Authentication,
        "PERMISSION_DENIED" => ErrorClass::PermissionDenied,
        "NOT_FOUND" => ErrorClass::NotFound,
        "RESOURCE_EXHAUSTED" => ErrorClass::RateLimited,
        "UNAVAILABLE" => ErrorClass::Overloaded,
        _ => ErrorClass::from_status(code),
    }
}

pub fn decode_error(status: u16, body: &[u8]) -> ProviderError {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(e) => ProviderError {
            status,
            kind: class_from_status(e.error.status.as_deref().unwrap_or(""), status),
            message: e.error.message,
        },
        Err(_) => ProviderError {
            status,
            kind: ErrorClass::from_status(status),
            message: format!("upstream returned HTTP {status}"),
        },
    }
}

pub fn status_name(c: ErrorClass) -> &'static str {
    match c {
        ErrorClass::InvalidRequest => "INVALID_ARGUMENT",
        ErrorClass::Authentication => "UNAUTHENTICATED",
        ErrorClass::PermissionDenied => "PERMISSION_DENIED",
        ErrorClass::NotFound => "NOT_FOUND",
        ErrorClass::RequestTooLarge => "INVALID_ARGUMENT",
        ErrorClass::RateLimited => "RESOURCE_EXHAUSTED",
        ErrorClass::Overloaded => "UNAVAILABLE",
        ErrorClass::Server => "INTERNAL",
    }
}

/// Error body in Gemini's shape (`{"error":{"code","message","status"}}`).
pub fn encode_error(e: &ProviderError) -> (u16, Vec<u8>) {
    let status = if e.status == 529 { 503 } else { e.status };
    (status, error_body(status, e.kind, &e.message))
}

pub fn error_body(code: u16, kind: ErrorClass, message: &str) -> Vec<u8> {
    json!({"error": {"code": code, "message": message, "status": status_name(kind)}})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_fixtures::recording as fixture;

    #[test]
    fn recorded_tool_call_is_tool_calls_finish() {
        let r = decode(&fixture("google/google-tool-call.json")).unwrap();
        assert_eq!(r.finish, Some(FinishReason::ToolCalls));
        assert!(matches!(&r.parts[0], Part::ToolCall { name, .. } if !name.is_empty()));
        let text = decode(&fixture("google/google-text.json")).unwrap();
        assert_eq!(text.finish, Some(FinishReason::Stop));
        assert!(text.usage.unwrap().prompt_tokens > 0);
    }

    #[test]
    fn recorded_429_keeps_class() {
        let e = decode_error(429, &fixture("google/google-429-retry-info.json"));
        assert_eq!(e.kind, ErrorClass::RateLimited);
        let (s, body) = crate::openai::response::encode_error(&e);
        assert_eq!(s, 429);
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("rate_limit_exceeded"));
    }
}
