//! OpenAI non-stream responses and errors ↔ canonical.

use serde::Serialize;

use crate::canonical::{ErrorClass, FinishReason, Part, ProviderError, Response};
use crate::openai::types::{self, ChatResponse, ErrorEnvelope};
use sluice_records::TokenUsage;

/// OpenAI counts reasoning inside `completion_tokens`; some compatible
/// providers (xAI) report it beside them. A reasoning count larger than the
/// completion count can only mean the latter, so it is added back in: the
/// canonical completion count always includes reasoning.
pub fn usage_from(u: &types::Usage) -> TokenUsage {
    let reasoning = u
        .completion_tokens_details
        .as_ref()
        .and_then(|d| d.reasoning_tokens)
        .unwrap_or(0);
    let completion = if reasoning > u.completion_tokens {
        u.completion_tokens.saturating_add(reasoning)
    } else {
        u.completion_tokens
    };
    TokenUsage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: completion,
        cached_tokens: u
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0),
        cache_creation_tokens: u
            .prompt_tokens_details
            .as_ref()
            .and_then(|d| d.cache_creation_tokens)
            .unwrap_or(0),
        reasoning_tokens: u
            .completion_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0),
    }
}

pub fn usage_to(u: &TokenUsage) -> types::Usage {
    types::Usage {
        prompt_tokens: u.prompt_tokens,
        completion_tokens: u.completion_tokens,
        total_tokens: u.prompt_tokens.saturating_add(u.completion_tokens),
        prompt_tokens_details: Some(types::PromptTokensDetails {
            cached_tokens: Some(u.cached_tokens),
            cache_creation_tokens: (u.cache_creation_tokens > 0).then_some(u.cache_creation_tokens),
        }),
        completion_tokens_details: Some(types::CompletionTokensDetails {
            reasoning_tokens: Some(u.reasoning_tokens),
        }),
    }
}

pub fn decode(body: &[u8]) -> Option<Response> {
    let r: ChatResponse = serde_json::from_slice(body).ok()?;
    let mut out = Response {
        id: r.id,
        model: r.model,
        created: r.created,
        usage: r.usage.as_ref().map(usage_from),
        ..Response::default()
    };
    if let Some(choice) = r.choices.into_iter().next() {
        out.finish = choice
            .finish_reason
            .as_deref()
            .map(FinishReason::from_openai);
        if let Some(m) = choice.message {
            if let Some(t) = m
                .reasoning_content
                .or(m.reasoning)
                .filter(|t| !t.is_empty())
            {
                out.parts.push(Part::Thinking {
                    text: t,
                    signature: None,
                });
            }
            if let Some(t) = m.content.filter(|t| !t.is_empty()) {
                out.parts.push(Part::Text(t));
            }
            if let Some(t) = m.refusal.filter(|t| !t.is_empty()) {
                out.parts.push(Part::Text(t));
            }
            for c in m.tool_calls.unwrap_or_default() {
                out.parts.push(Part::ToolCall {
                    id: c.id,
                    name: c.function.name,
                    arguments: c.function.arguments,
                });
            }
        }
    }
    Some(out)
}

#[derive(Serialize)]
struct OutResponse<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [OutChoice; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<types::Usage>,
}

#[derive(Serialize)]
struct OutChoice {
    index: u32,
    message: OutMessage,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OutMessage {
    role: &'static str,
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<types::ToolCall>>,
    refusal: Option<String>,
}

pub fn encode(r: &Response) -> Vec<u8> {
    let mut text = String::new();
    let mut reasoning = String::new();
    let mut calls = Vec::new();
    for p in &r.parts {
        match p {
            Part::Text(t) => text.push_str(t),
            Part::Thinking { text: t, .. } => reasoning.push_str(t),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => calls.push(types::ToolCall::function(id, name, arguments)),
            _ => {}
        }
    }
    let finish = r.finish.unwrap_or(if calls.is_empty() {
        FinishReason::Stop
    } else {
        FinishReason::ToolCalls
    });
    let id = if r.id.starts_with("chatcmpl") {
        r.id.clone()
    } else {
        format!("chatcmpl-{}", r.id)
    };
    let out = OutResponse {
        id: &id,
        object: "chat.completion",
        created: r.created,
        model: &r.model,
        choices: [OutChoice {
            index: 0,
            message: OutMessage {
                role: "assistant",
                content: (!text.is_empty() || calls.is_empty()).then_some(text),
                reasoning_content: (!reasoning.is_empty()).then_some(reasoning),
                tool_calls: (!calls.is_empty()).then_some(calls),
                refusal: None,
            },
            logprobs: None,
            finish_reason: finish.openai(),
        }],
        usage: r.usage.as_ref().map(usage_to),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

pub fn decode_error(status: u16, body: &[u8]) -> ProviderError {
    let message = serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .and_then(|e| e.error.message)
        .unwrap_or_else(|| format!("upstream returned HTTP {status}"));
    ProviderError {
        status,
        kind: ErrorClass::from_status(status),
        message,
    }
}

/// OpenAI `type` and `code` for an error class.
fn openai_type_code(c: ErrorClass) -> (&'static str, &'static str) {
    match c {
        ErrorClass::InvalidRequest => ("invalid_request_error", "invalid_request"),
        ErrorClass::Authentication => ("invalid_request_error", "invalid_api_key"),
        ErrorClass::PermissionDenied => ("permission_error", "permission_denied"),
        ErrorClass::NotFound => ("invalid_request_error", "not_found"),
        ErrorClass::RequestTooLarge => ("invalid_request_error", "request_too_large"),
        ErrorClass::RateLimited => ("rate_limit_error", "rate_limit_exceeded"),
        ErrorClass::Overloaded => ("server_error", "overloaded"),
        ErrorClass::Server => ("server_error", "server_error"),
    }
}

/// A provider error in OpenAI's shape, and the status an OpenAI client
/// expects (Anthropic's 529 "overloaded" becomes 503).
pub fn encode_error(e: &ProviderError) -> (u16, Vec<u8>) {
    let (ty, code) = openai_type_code(e.kind);
    let body = serde_json::json!({"error": {"message": e.message, "type": ty, "param": null, "code": code}});
    let status = if e.status == 529 { 503 } else { e.status };
    (status, body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    use sluice_fixtures::recording as fixture;

    #[test]
    fn recorded_response_round_trips() {
        let r = decode(&fixture("openai/openai-text.json")).unwrap();
        assert!(matches!(&r.parts[0], Part::Text(t) if t.len() > 100));
        assert_eq!(r.finish, Some(FinishReason::Stop));
        let u = r.usage.unwrap();
        assert!(u.prompt_tokens > 0 && u.completion_tokens > 0);
        let again = decode(&encode(&r)).unwrap();
        assert_eq!(again.parts, r.parts);
        assert_eq!(again.usage, r.usage);
    }
}
