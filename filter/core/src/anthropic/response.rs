//! Anthropic non-stream responses, usage and errors ↔ canonical.

use serde::Serialize;

use crate::anthropic::types::{self, Block, ErrorEnvelope, MessagesResponse};
use crate::canonical::{ErrorClass, FinishReason, Part, ProviderError, Response};
use sluice_records::TokenUsage;

/// Anthropic counts cache reads and writes apart from `input_tokens`; the
/// canonical `prompt_tokens` (like OpenAI's) is the total prompt, of which
/// `cached_tokens` were read from cache and `cache_creation_tokens` written.
pub fn usage_from(u: &types::Usage) -> TokenUsage {
    TokenUsage {
        prompt_tokens: u
            .input_tokens
            .saturating_add(u.cache_read_input_tokens)
            .saturating_add(u.cache_creation_input_tokens),
        completion_tokens: u.output_tokens,
        cached_tokens: u.cache_read_input_tokens,
        cache_creation_tokens: u.cache_creation_input_tokens,
        reasoning_tokens: 0,
    }
}

pub fn usage_to(u: &TokenUsage) -> types::Usage {
    types::Usage {
        input_tokens: u
            .prompt_tokens
            .saturating_sub(u.cached_tokens.saturating_add(u.cache_creation_tokens)),
        output_tokens: u.completion_tokens,
        cache_creation_input_tokens: u.cache_creation_tokens,
        cache_read_input_tokens: u.cached_tokens,
    }
}

pub fn decode(body: &[u8]) -> Option<Response> {
    let r: MessagesResponse = serde_json::from_slice(body).ok()?;
    let mut out = Response {
        id: r.id,
        model: r.model,
        finish: r.stop_reason.as_deref().map(FinishReason::from_anthropic),
        stop_sequence: r.stop_sequence,
        usage: r.usage.as_ref().map(usage_from),
        ..Response::default()
    };
    for b in r.content {
        match b {
            Block::Text { text } => out.parts.push(Part::Text(text)),
            Block::Thinking {
                thinking,
                signature,
            } => out.parts.push(Part::Thinking {
                text: thinking,
                signature: (!signature.is_empty()).then_some(signature),
            }),
            Block::RedactedThinking { data } => out.parts.push(Part::RedactedThinking(data)),
            Block::ToolUse { id, name, input } => out.parts.push(Part::ToolCall {
                id,
                name,
                arguments: if input.is_null() {
                    "{}".into()
                } else {
                    input.to_string()
                },
            }),
            _ => {}
        }
    }
    Some(out)
}

#[derive(Serialize)]
struct OutResponse<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: types::Usage,
}

pub fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else if id.is_empty() {
        "msg_sluice".to_string()
    } else {
        format!("msg_{id}")
    }
}

pub fn encode(r: &Response) -> Vec<u8> {
    let mut content = Vec::with_capacity(r.parts.len());
    let mut has_calls = false;
    for p in &r.parts {
        match p {
            Part::Text(t) => content.push(Block::Text { text: t.clone() }),
            Part::Thinking { text, signature } => content.push(Block::Thinking {
                thinking: text.clone(),
                signature: signature.clone().unwrap_or_default(),
            }),
            Part::RedactedThinking(d) => content.push(Block::RedactedThinking { data: d.clone() }),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => {
                has_calls = true;
                content.push(Block::ToolUse {
                    id: id.clone(),
                    name: name.clone(),
                    input: serde_json::from_str(arguments)
                        .unwrap_or_else(|_| serde_json::json!({})),
                })
            }
            _ => {}
        }
    }
    let finish = r.finish.unwrap_or(if has_calls {
        FinishReason::ToolCalls
    } else {
        FinishReason::Stop
    });
    let out = OutResponse {
        id: message_id(&r.id),
        kind: "message",
        role: "assistant",
        model: &r.model,
        content,
        stop_reason: finish.anthropic(),
        stop_sequence: r.stop_sequence.as_deref(),
        usage: r.usage.as_ref().map(usage_to).unwrap_or_default(),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

pub fn class_from_type(t: &str, status: u16) -> ErrorClass {
    match t {
        "invalid_request_error" => ErrorClass::InvalidRequest,
        "authentication_error" => ErrorClass::Authentication,
        "permission_error" => ErrorClass::PermissionDenied,
        "not_found_error" => ErrorClass::NotFound,
        "request_too_large" => ErrorClass::RequestTooLarge,
        "rate_limit_error" => ErrorClass::RateLimited,
        "overloaded_error" => ErrorClass::Overloaded,
        "api_error" => ErrorClass::Server,
        _ => ErrorClass::from_status(status),
    }
}

pub fn decode_error(status: u16, body: &[u8]) -> ProviderError {
    match serde_json::from_slice::<ErrorEnvelope>(body) {
        Ok(e) => ProviderError {
            status,
            kind: class_from_type(&e.error.kind, status),
            message: e.error.message,
        },
        Err(_) => ProviderError {
            status,
            kind: ErrorClass::from_status(status),
            message: format!("upstream returned HTTP {status}"),
        },
    }
}

pub fn error_type(c: ErrorClass) -> &'static str {
    match c {
        ErrorClass::InvalidRequest => "invalid_request_error",
        ErrorClass::Authentication => "authentication_error",
        ErrorClass::PermissionDenied => "permission_error",
        ErrorClass::NotFound => "not_found_error",
        ErrorClass::RequestTooLarge => "request_too_large",
        ErrorClass::RateLimited => "rate_limit_error",
        ErrorClass::Overloaded => "overloaded_error",
        ErrorClass::Server => "api_error",
    }
}

/// Error body in Anthropic's shape; overloaded is 529 for Anthropic clients.
pub fn encode_error(e: &ProviderError) -> (u16, Vec<u8>) {
    let status = if e.kind == ErrorClass::Overloaded {
        529
    } else {
        e.status
    };
    (status, error_body(e.kind, &e.message))
}

pub fn error_body(kind: ErrorClass, message: &str) -> Vec<u8> {
    serde_json::json!({"type": "error", "error": {"type": error_type(kind), "message": message}})
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_fixtures::recording as fixture;

    #[test]
    fn recorded_tool_response() {
        let r = decode(&fixture("anthropic/anthropic-json-tool.1.json")).unwrap();
        assert_eq!(r.finish, Some(FinishReason::ToolCalls));
        assert!(r
            .parts
            .iter()
            .any(|p| matches!(p, Part::ToolCall { arguments, .. } if arguments.starts_with('{'))));
        let v: serde_json::Value = serde_json::from_slice(&encode(&r)).unwrap();
        assert_eq!(v["stop_reason"], "tool_use");
    }

    #[test]
    fn usage_totals_include_cache() {
        let u = usage_from(&types::Usage {
            input_tokens: 10,
            output_tokens: 5,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 100,
        });
        assert_eq!(
            (u.prompt_tokens, u.cached_tokens, u.cache_creation_tokens),
            (113, 100, 3)
        );
        let back = usage_to(&u);
        assert_eq!(back.input_tokens, 10);
    }
}
