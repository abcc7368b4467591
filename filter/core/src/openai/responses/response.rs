//! OpenAI Responses objects ↔ the canonical response, and the output items
//! both the whole response and the stream's closing event carry.

use serde_json::{json, Value};

use super::types::{ResponseObject, Usage};
use crate::canonical::{ErrorClass, FinishReason, Part, ProviderError, Response};
use sluice_records::TokenUsage;

/// Responses usage → canonical. Reasoning is inside `output_tokens`.
pub fn usage_from(u: &Usage) -> TokenUsage {
    TokenUsage {
        prompt_tokens: u.input_tokens,
        completion_tokens: u.output_tokens,
        cached_tokens: u
            .input_tokens_details
            .and_then(|d| d.cached_tokens)
            .unwrap_or(0),
        cache_creation_tokens: 0,
        reasoning_tokens: u
            .output_tokens_details
            .and_then(|d| d.reasoning_tokens)
            .unwrap_or(0),
    }
}

pub fn usage_to(u: &TokenUsage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": u.cached_tokens},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": u.reasoning_tokens},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

/// A Responses id for a canonical one (`resp_…`).
pub fn response_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_string()
    } else {
        let clean: String = id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(48)
            .collect();
        format!("resp_{clean}")
    }
}

/// Ids of the items of one response: `<prefix>_<response>_<n>`.
pub fn item_id(prefix: &str, response_id: &str, n: usize) -> String {
    let base = response_id.strip_prefix("resp_").unwrap_or(response_id);
    format!("{prefix}_{base}_{n}")
}

/// `status` and `incomplete_details` for how a response ended.
pub fn status_of(finish: Option<FinishReason>) -> (&'static str, Value) {
    match finish {
        Some(FinishReason::Length) => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some(FinishReason::ContentFilter) => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// The output items of a response, from its parts (reasoning, one message
/// for the text, one item per function call — OpenAI's order).
pub fn output_items(parts: &[Part], response_id: &str) -> Vec<Value> {
    let mut items = Vec::new();
    let mut reasoning = String::new();
    let mut text = String::new();
    for p in parts {
        match p {
            Part::Thinking { text: t, .. } => reasoning.push_str(t),
            Part::Text(t) => text.push_str(t),
            _ => {}
        }
    }
    if !reasoning.is_empty() {
        items.push(reasoning_item(&item_id("rs", response_id, 0), &reasoning));
    }
    if !text.is_empty() {
        items.push(message_item(
            &item_id("msg", response_id, 0),
            &text,
            "completed",
        ));
    }
    for (n, p) in parts.iter().enumerate() {
        if let Part::ToolCall {
            id,
            name,
            arguments,
        } = p
        {
            items.push(function_call_item(
                &item_id("fc", response_id, n),
                id,
                name,
                arguments,
                "completed",
            ));
        }
    }
    items
}

pub fn reasoning_item(id: &str, summary: &str) -> Value {
    let summary = if summary.is_empty() {
        json!([])
    } else {
        json!([{"type": "summary_text", "text": summary}])
    };
    json!({"id": id, "type": "reasoning", "summary": summary})
}

pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    let content = if status == "in_progress" {
        json!([])
    } else {
        json!([output_text(text)])
    };
    json!({"id": id, "type": "message", "status": status, "role": "assistant",
           "content": content})
}

pub fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

pub fn function_call_item(id: &str, call_id: &str, name: &str, args: &str, status: &str) -> Value {
    json!({"id": id, "type": "function_call", "status": status, "call_id": call_id,
           "name": name, "arguments": args})
}

/// A whole response object (`status` given; `output` and `usage` as known).
pub fn response_object(
    id: &str,
    model: &str,
    created: u64,
    status: &str,
    output: Vec<Value>,
    usage: Option<&TokenUsage>,
) -> Value {
    json!({
        "id": id, "object": "response", "created_at": created, "status": status,
        "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": false,
        "temperature": null, "text": {"format": {"type": "text"}},
        "tool_choice": "auto", "tools": [], "top_p": null, "truncation": "disabled",
        "usage": usage.map(usage_to), "metadata": {},
    })
}

pub fn encode(r: &Response) -> Vec<u8> {
    let id = response_id(&r.id);
    let (status, incomplete) = status_of(r.finish);
    let mut obj = response_object(
        &id,
        &r.model,
        r.created,
        status,
        output_items(&r.parts, &id),
        r.usage.as_ref(),
    );
    if let Some(o) = obj.as_object_mut() {
        o.insert("incomplete_details".into(), incomplete);
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}

pub fn decode(body: &[u8]) -> Option<Response> {
    let r: ResponseObject = serde_json::from_slice(body).ok()?;
    Some(from_object(r))
}

/// A response object (whole, or the one a stream's last event carries).
pub fn from_object(r: ResponseObject) -> Response {
    let mut out = Response {
        id: r.id,
        model: r.model,
        created: r.created_at.map(|c| c.max(0.0) as u64).unwrap_or(0),
        usage: r.usage.as_ref().map(usage_from),
        ..Response::default()
    };
    let mut calls = false;
    for item in r.output {
        match item.kind.as_deref() {
            Some("reasoning") => {
                let text: Vec<String> = item
                    .summary
                    .unwrap_or_default()
                    .into_iter()
                    .map(|s| s.text)
                    .collect();
                let text = text.join("\n\n");
                if !text.is_empty() {
                    out.parts.push(Part::Thinking {
                        text,
                        signature: None,
                    });
                }
            }
            Some("message") => {
                let texts: Vec<String> = match item.content {
                    Some(super::types::Content::Parts(ps)) => ps
                        .into_iter()
                        .filter_map(|p| p.text.or(p.refusal))
                        .collect(),
                    Some(super::types::Content::Text(t)) => vec![t],
                    None => Vec::new(),
                };
                for t in texts.into_iter().filter(|t| !t.is_empty()) {
                    // A second message is set apart from the first (as the
                    // stream decoder does).
                    if out.parts.iter().any(|p| matches!(p, Part::Text(_))) {
                        out.parts.push(Part::Text("\n\n".into()));
                    }
                    out.parts.push(Part::Text(t));
                }
            }
            Some("function_call") => {
                calls = true;
                out.parts.push(Part::ToolCall {
                    id: item.call_id.unwrap_or_default(),
                    name: item.name.unwrap_or_default(),
                    arguments: item.arguments.unwrap_or_default(),
                });
            }
            // Built-in tool calls (web search, …) ran at the provider; their
            // results are in the message that follows.
            _ => {}
        }
    }
    out.finish = Some(finish_of(
        r.status.as_deref(),
        r.incomplete_details
            .as_ref()
            .and_then(|d| d.reason.as_deref()),
        calls,
    ));
    out
}

pub fn finish_of(status: Option<&str>, incomplete: Option<&str>, calls: bool) -> FinishReason {
    match (status, incomplete) {
        (Some("incomplete"), Some("content_filter")) => FinishReason::ContentFilter,
        (Some("incomplete"), _) => FinishReason::Length,
        _ if calls => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// A provider error from a failed response's `error` (in a stream).
pub fn error_from(code: Option<&str>, message: Option<&str>) -> ProviderError {
    let (status, kind) = match code.unwrap_or_default() {
        "rate_limit_exceeded" | "insufficient_quota" => (429, ErrorClass::RateLimited),
        "invalid_prompt" | "invalid_request_error" => (400, ErrorClass::InvalidRequest),
        "server_is_overloaded" | "slow_down" => (503, ErrorClass::Overloaded),
        _ => (500, ErrorClass::Server),
    };
    ProviderError {
        status,
        kind,
        message: message
            .filter(|m| !m.is_empty())
            .unwrap_or("The provider failed the response.")
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_fixtures::recording as fixture;

    #[test]
    fn recorded_response_round_trips() {
        let r = decode(&fixture("openai/openai-reasoning-encrypted-content.1.json")).unwrap();
        assert!(matches!(&r.parts[0], Part::Thinking { text, .. } if text.contains("Reporting")));
        assert!(matches!(&r.parts[1], Part::Text(t) if t.contains("570")));
        assert_eq!(r.finish, Some(FinishReason::Stop));
        let u = r.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.reasoning_tokens),
            (865, 163, 128)
        );
        let again = decode(&encode(&r)).unwrap();
        assert_eq!(again.parts, r.parts);
        assert_eq!(again.usage, r.usage);
        let v: Value = serde_json::from_slice(&encode(&r)).unwrap();
        assert_eq!(v["object"], "response");
        assert_eq!(v["output"][1]["content"][0]["type"], "output_text");
    }

    #[test]
    fn calls_and_cut_answers_keep_their_ending() {
        let r = Response {
            id: "x1".into(),
            model: "m".into(),
            parts: vec![Part::ToolCall {
                id: "c1".into(),
                name: "f".into(),
                arguments: "{}".into(),
            }],
            finish: Some(FinishReason::ToolCalls),
            ..Response::default()
        };
        let v: Value = serde_json::from_slice(&encode(&r)).unwrap();
        assert_eq!(v["id"], "resp_x1");
        assert_eq!(v["output"][0]["call_id"], "c1");
        assert_eq!(
            decode(&encode(&r)).unwrap().finish,
            Some(FinishReason::ToolCalls)
        );
        let cut = Response {
            finish: Some(FinishReason::Length),
            parts: vec![Part::Text("abc".into())],
            ..Response::default()
        };
        let v: Value = serde_json::from_slice(&encode(&cut)).unwrap();
        assert_eq!(v["status"], "incomplete");
        assert_eq!(v["incomplete_details"]["reason"], "max_output_tokens");
        assert_eq!(
            decode(&encode(&cut)).unwrap().finish,
            Some(FinishReason::Length)
        );
    }
}
