//! OpenAI Responses wire format (`POST /v1/responses`): the whole response
//! object and the `response.*` event sequence with sequence numbers, as
//! OpenAI sends them.

use serde_json::{json, Value};

use crate::answer::{Answer, Finish, OfferedTool};

pub fn offered_tools(req: &Value) -> Vec<OfferedTool> {
    req.get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("function"))
        .filter_map(|t| {
            Some(OfferedTool {
                name: t.get("name")?.as_str()?.to_string(),
                parameters: t.get("parameters").cloned().unwrap_or(Value::Null),
            })
        })
        .collect()
}

/// No call when forbidden, or when the last input item answers one.
pub fn no_tool_call(req: &Value) -> bool {
    let forbidden = req.get("tool_choice").and_then(Value::as_str) == Some("none");
    let last_is_output = req
        .get("input")
        .and_then(Value::as_array)
        .and_then(|m| m.last())
        .and_then(|m| m.get("type"))
        .and_then(Value::as_str)
        == Some("function_call_output");
    forbidden || last_is_output
}

pub fn max_tokens(req: &Value) -> Option<u64> {
    req.get("max_output_tokens").and_then(Value::as_u64)
}

const CREATED: u64 = 1_760_000_000;
const ID: &str = "resp_mock";

fn usage(a: &Answer) -> Value {
    json!({
        "input_tokens": a.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": a.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": a.prompt_tokens + a.completion_tokens,
    })
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn message(text: &str, status: &str) -> Value {
    let content = if status == "completed" {
        json!([output_text(text)])
    } else {
        json!([])
    };
    json!({"id": "msg_mock", "type": "message", "status": status, "role": "assistant",
           "content": content})
}

fn call_item(i: usize, a: &Answer, args: &str, status: &str) -> Value {
    let c = &a.tool_calls[i];
    json!({"id": format!("fc_mock_{i}"), "type": "function_call", "status": status,
           "call_id": c.id, "name": c.name, "arguments": args})
}

fn output(a: &Answer) -> Vec<Value> {
    let mut out = Vec::new();
    if !a.text.is_empty() {
        out.push(message(&a.full_text(), "completed"));
    }
    for (i, c) in a.tool_calls.iter().enumerate() {
        out.push(call_item(i, a, &c.arguments, "completed"));
    }
    out
}

fn object(a: &Answer, status: &str, output: Vec<Value>, with_usage: bool) -> Value {
    let incomplete = if status == "incomplete" {
        json!({"reason": "max_output_tokens"})
    } else {
        Value::Null
    };
    json!({
        "id": ID, "object": "response", "created_at": CREATED, "status": status,
        "error": null, "incomplete_details": incomplete, "instructions": null,
        "max_output_tokens": null, "model": a.model, "output": output,
        "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": false,
        "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
        "tools": [], "top_p": 1.0, "truncation": "disabled",
        "usage": if with_usage { usage(a) } else { Value::Null }, "metadata": {}
    })
}

fn final_status(a: &Answer) -> &'static str {
    match a.finish {
        Finish::Length => "incomplete",
        _ => "completed",
    }
}

pub fn response(a: &Answer) -> Value {
    object(a, final_status(a), output(a), true)
}

/// `(event name, payload)` in order, sequence numbers from 0.
pub fn stream_events(a: &Answer) -> Vec<(String, Value)> {
    let mut evs: Vec<Value> = vec![
        json!({"type": "response.created", "response": object(a, "in_progress", vec![], false)}),
        json!({"type": "response.in_progress", "response": object(a, "in_progress", vec![], false)}),
    ];
    let mut index = 0;
    if !a.text.is_empty() {
        let full = a.full_text();
        evs.push(
            json!({"type": "response.output_item.added", "output_index": index,
                        "item": message("", "in_progress")}),
        );
        evs.push(
            json!({"type": "response.content_part.added", "item_id": "msg_mock",
                        "output_index": index, "content_index": 0, "part": output_text("")}),
        );
        for piece in &a.text {
            evs.push(
                json!({"type": "response.output_text.delta", "item_id": "msg_mock",
                            "output_index": index, "content_index": 0, "delta": piece,
                            "logprobs": []}),
            );
        }
        evs.push(
            json!({"type": "response.output_text.done", "item_id": "msg_mock",
                        "output_index": index, "content_index": 0, "text": full,
                        "logprobs": []}),
        );
        evs.push(
            json!({"type": "response.content_part.done", "item_id": "msg_mock",
                        "output_index": index, "content_index": 0,
                        "part": output_text(&full)}),
        );
        evs.push(
            json!({"type": "response.output_item.done", "output_index": index,
                        "item": message(&full, "completed")}),
        );
        index += 1;
    }
    for (i, c) in a.tool_calls.iter().enumerate() {
        let id = format!("fc_mock_{i}");
        evs.push(
            json!({"type": "response.output_item.added", "output_index": index,
                        "item": call_item(i, a, "", "in_progress")}),
        );
        for piece in c.argument_pieces() {
            evs.push(
                json!({"type": "response.function_call_arguments.delta", "item_id": id,
                            "output_index": index, "delta": piece}),
            );
        }
        evs.push(
            json!({"type": "response.function_call_arguments.done", "item_id": id,
                        "output_index": index, "arguments": c.arguments}),
        );
        evs.push(
            json!({"type": "response.output_item.done", "output_index": index,
                        "item": call_item(i, a, &c.arguments, "completed")}),
        );
        index += 1;
    }
    let status = final_status(a);
    evs.push(json!({"type": format!("response.{status}"),
                    "response": object(a, status, output(a), true)}));
    evs.into_iter()
        .enumerate()
        .map(|(n, mut v)| {
            v["sequence_number"] = json!(n);
            let name = v["type"].as_str().unwrap_or("message").to_string();
            (name, v)
        })
        .collect()
}

/// The stream's failure, as OpenAI sends it: an `error` event, then
/// `response.failed`.
pub fn failure(a: &Answer, status: u16, message: &str, seq: usize) -> Vec<(String, Value)> {
    let code = if status == 429 {
        "rate_limit_exceeded"
    } else {
        "server_error"
    };
    let mut failed = object(a, "failed", vec![], false);
    failed["error"] = json!({"code": code, "message": message});
    vec![
        (
            "error".into(),
            json!({"type": "error", "code": code, "message": message, "param": null,
                   "sequence_number": seq}),
        ),
        (
            "response.failed".into(),
            json!({"type": "response.failed", "response": failed, "sequence_number": seq + 1}),
        ),
    ]
}

pub fn frame(event: &str, payload: &str) -> String {
    format!("event: {event}\ndata: {payload}\n\n")
}
