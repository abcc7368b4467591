//! OpenAI Chat Completions wire format.

use serde_json::{json, Value};

use crate::answer::{Answer, Finish, OfferedTool};

pub fn offered_tools(req: &Value) -> Vec<OfferedTool> {
    req.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| {
            let f = t.get("function")?;
            Some(OfferedTool {
                name: f.get("name")?.as_str()?.to_string(),
                parameters: f.get("parameters").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

pub fn no_tool_call(req: &Value) -> bool {
    let forbidden = req.get("tool_choice").and_then(Value::as_str) == Some("none");
    let last_is_tool = req
        .get("messages")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        == Some("tool");
    forbidden || last_is_tool
}

pub fn max_tokens(req: &Value) -> Option<u64> {
    req.get("max_completion_tokens")
        .or_else(|| req.get("max_tokens"))
        .and_then(Value::as_u64)
}

fn finish(f: Finish) -> &'static str {
    match f {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
    }
}

fn usage(a: &Answer) -> Value {
    json!({
        "prompt_tokens": a.prompt_tokens,
        "completion_tokens": a.completion_tokens,
        "total_tokens": a.prompt_tokens + a.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
    })
}

const CREATED: u64 = 1_760_000_000;

pub fn response(a: &Answer) -> Value {
    let tool_calls: Vec<Value> = a
        .tool_calls
        .iter()
        .map(|c| {
            json!({"id": c.id, "type": "function",
                        "function": {"name": c.name, "arguments": c.arguments}})
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": null, "refusal": null});
    if tool_calls.is_empty() {
        message["content"] = json!(a.full_text());
    } else {
        message["tool_calls"] = json!(tool_calls);
    }
    json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": CREATED,
        "model": a.model,
        "choices": [{"index": 0, "message": message, "logprobs": null,
                     "finish_reason": finish(a.finish)}],
        "usage": usage(a),
        "system_fingerprint": "fp_mock"
    })
}

fn chunk(a: &Answer, delta: Value, finish_reason: Option<&str>, with_usage: bool) -> Value {
    let mut c = json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": a.model,
        "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "delta": delta, "logprobs": null,
                     "finish_reason": finish_reason}]
    });
    if with_usage {
        c["usage"] = Value::Null;
    }
    c
}

/// `data:` payloads of a stream, in order (without the `[DONE]` sentinel).
pub fn stream_payloads(a: &Answer, include_usage: bool) -> Vec<Value> {
    let mut out = vec![chunk(
        a,
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
        include_usage,
    )];
    for piece in &a.text {
        out.push(chunk(a, json!({"content": piece}), None, include_usage));
    }
    for (i, call) in a.tool_calls.iter().enumerate() {
        out.push(chunk(
            a,
            json!({"tool_calls": [{"index": i, "id": call.id, "type": "function",
                                   "function": {"name": call.name, "arguments": ""}}]}),
            None,
            include_usage,
        ));
        for piece in call.argument_pieces() {
            out.push(chunk(
                a,
                json!({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}),
                None,
                include_usage,
            ));
        }
    }
    out.push(chunk(a, json!({}), Some(finish(a.finish)), include_usage));
    if include_usage {
        let mut u = chunk(a, json!({}), None, false);
        u["choices"] = json!([]);
        u["usage"] = usage(a);
        out.push(u);
    }
    out
}

pub fn frame(payload: &str) -> String {
    format!("data: {payload}\n\n")
}

pub const DONE: &str = "data: [DONE]\n\n";

pub fn error(status: u16, message: &str) -> Value {
    let (ty, code) = match status {
        400 => ("invalid_request_error", "invalid_request"),
        401 => ("invalid_request_error", "invalid_api_key"),
        403 => ("permission_error", "permission_denied"),
        404 => ("invalid_request_error", "model_not_found"),
        429 => ("rate_limit_error", "rate_limit_exceeded"),
        503 | 529 => ("server_error", "overloaded"),
        _ => ("server_error", "server_error"),
    };
    json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
}
