//! Anthropic Messages wire format.

use serde_json::{json, Value};

use crate::answer::{Answer, Finish, OfferedTool};

pub fn offered_tools(req: &Value) -> Vec<OfferedTool> {
    req.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(OfferedTool {
                name: t.get("name")?.as_str()?.to_string(),
                parameters: t.get("input_schema").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

pub fn no_tool_call(req: &Value) -> bool {
    let forbidden = req
        .get("tool_choice")
        .and_then(|c| c.get("type"))
        .and_then(Value::as_str)
        == Some("none");
    let last_is_result = req
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .is_some_and(|blocks| {
            blocks
                .iter()
                .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
        });
    forbidden || last_is_result
}

fn stop_reason(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
    }
}

fn usage(a: &Answer, output: u64) -> Value {
    json!({"input_tokens": a.prompt_tokens, "cache_creation_input_tokens": 0,
           "cache_read_input_tokens": 0, "output_tokens": output})
}

pub fn response(a: &Answer) -> Value {
    let mut content = Vec::new();
    if !a.text.is_empty() {
        content.push(json!({"type": "text", "text": a.full_text()}));
    }
    for c in &a.tool_calls {
        let input: Value = serde_json::from_str(&c.arguments).unwrap_or(json!({}));
        content.push(
            json!({"type": "tool_use", "id": tool_id(&c.id), "name": c.name,
                            "input": input}),
        );
    }
    json!({
        "id": "msg_mock",
        "type": "message",
        "role": "assistant",
        "model": a.model,
        "content": content,
        "stop_reason": stop_reason(a.finish),
        "stop_sequence": null,
        "usage": usage(a, a.completion_tokens)
    })
}

fn tool_id(id: &str) -> String {
    format!("toolu_{}", id.trim_start_matches("call_"))
}

/// (event name, payload) pairs of a stream.
pub fn stream_events(a: &Answer) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    let mut start = response(a);
    start["content"] = json!([]);
    start["stop_reason"] = Value::Null;
    start["usage"] = usage(a, 1);
    out.push((
        "message_start",
        json!({"type": "message_start", "message": start}),
    ));
    out.push(("ping", json!({"type": "ping"})));
    let mut index = 0;
    if !a.text.is_empty() {
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in &a.text {
            out.push((
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        out.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    for c in &a.tool_calls {
        out.push((
            "content_block_start",
            json!({"type": "content_block_start", "index": index,
            "content_block": {"type": "tool_use", "id": tool_id(&c.id), "name": c.name,
                              "input": {}}}),
        ));
        out.push((
            "content_block_delta",
            json!({"type": "content_block_delta", "index": index,
            "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ));
        for piece in c.argument_pieces() {
            out.push((
                "content_block_delta",
                json!({"type": "content_block_delta",
                "index": index, "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        out.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
        index += 1;
    }
    out.push((
        "message_delta",
        json!({"type": "message_delta",
        "delta": {"stop_reason": stop_reason(a.finish), "stop_sequence": null},
        "usage": {"output_tokens": a.completion_tokens}}),
    ));
    out.push(("message_stop", json!({"type": "message_stop"})));
    out
}

pub fn frame(event: &str, payload: &str) -> String {
    format!("event: {event}\ndata: {payload}\n\n")
}

pub fn error(status: u16, message: &str) -> Value {
    let ty = match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    };
    json!({"type": "error", "error": {"type": ty, "message": message},
           "request_id": "req_mock"})
}
