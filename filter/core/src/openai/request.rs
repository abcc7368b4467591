//! OpenAI Chat Completions requests ↔ the canonical request.

use serde::Serialize;
use serde_json::{json, Value};

use crate::canonical::parts::{image_from_url, image_to_url, text_of, tool_name_for};
use crate::canonical::Warnings;
use crate::canonical::{Message, Part, Reasoning, Request, ResponseFormat, Role, Tool, ToolChoice};
use crate::error::GatewayError;
use crate::openai::types::{self, ChatRequest, Content, ContentPart};

pub fn decode(body: &[u8]) -> Result<Request, GatewayError> {
    let req: ChatRequest = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid_request(format!("Invalid chat completions request: {e}"))
    })?;
    let mut out = Request {
        model: req.model,
        stream: req.stream == Some(true),
        stream_usage: req.stream_options.as_ref().and_then(|o| o.include_usage) == Some(true),
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        temperature: req.temperature,
        top_p: req.top_p,
        n: req.n,
        user: req.user,
        parallel_tool_calls: req.parallel_tool_calls,
        reasoning: req.reasoning_effort.map(Reasoning::Effort),
        ..Request::default()
    };
    out.stop = match req.stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s],
        Some(Value::Array(a)) => a
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(_) => {
            return Err(bad(
                "'stop' must be a string or an array of strings",
                "stop",
            ))
        }
    };
    for m in req.messages {
        decode_message(m, &mut out)?;
    }
    out.tools = req
        .tools
        .unwrap_or_default()
        .into_iter()
        .map(|t| Tool {
            name: t.function.name,
            description: t.function.description,
            parameters: t
                .function
                .parameters
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        })
        .collect();
    out.tool_choice = match req.tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => {
                return Err(bad(
                    "'tool_choice' must be auto, none or required",
                    "tool_choice",
                ))
            }
        }),
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(ToolChoice::Named(name.to_string())),
            None => return Err(bad("'tool_choice' names no function", "tool_choice")),
        },
    };
    out.response_format = match req.response_format {
        None | Some(Value::Null) => None,
        Some(v) => Some(match v.get("type").and_then(Value::as_str) {
            Some("text") => ResponseFormat::Text,
            Some("json_object") => ResponseFormat::JsonObject,
            Some("json_schema") => {
                let js = v.get("json_schema").cloned().unwrap_or(Value::Null);
                ResponseFormat::JsonSchema {
                    name: js
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("response")
                        .to_string(),
                    schema: js.get("schema").cloned().unwrap_or(json!({})),
                    strict: js.get("strict").and_then(Value::as_bool),
                }
            }
            _ => return Err(bad("unknown 'response_format.type'", "response_format")),
        }),
    };
    out.unmapped = req.extra.into_iter().map(|(k, _)| k).collect();
    Ok(out)
}

fn bad(msg: &str, param: &'static str) -> GatewayError {
    GatewayError::invalid_request(msg).with_param(param)
}

/// Content parts → canonical parts; file and audio parts, which only an
/// OpenAI provider reads, are named in `untranslatable`.
fn content_parts(c: Option<Content>, untranslatable: &mut Vec<String>) -> Vec<Part> {
    match c {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![Part::Text(t)],
        Some(Content::Parts(ps)) => ps
            .into_iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => Some(Part::Text(text)),
                ContentPart::ImageUrl { image_url } => {
                    Some(Part::Image(image_from_url(&image_url.url)))
                }
                ContentPart::File {} => {
                    untranslatable.push("a 'file' content part".into());
                    None
                }
                ContentPart::InputAudio {} => {
                    untranslatable.push("an 'input_audio' content part".into());
                    None
                }
                ContentPart::Unsupported => {
                    untranslatable.push("a content part of an unknown type".into());
                    None
                }
            })
            .collect(),
    }
}

fn decode_message(m: types::ChatMessage, out: &mut Request) -> Result<(), GatewayError> {
    match m.role.as_str() {
        "system" | "developer" => {
            let t = text_of(&content_parts(m.content, &mut out.untranslatable));
            if !t.is_empty() {
                out.system.push(t);
            }
        }
        "user" => out.messages.push(Message {
            role: Role::User,
            parts: content_parts(m.content, &mut out.untranslatable),
        }),
        "assistant" => {
            let mut parts = Vec::new();
            if let Some(r) = m.reasoning_content.filter(|r| !r.is_empty()) {
                parts.push(Part::Thinking {
                    text: r,
                    signature: None,
                });
            }
            parts.extend(content_parts(m.content, &mut out.untranslatable));
            for c in m.tool_calls.unwrap_or_default() {
                parts.push(Part::ToolCall {
                    id: c.id,
                    name: c.function.name,
                    arguments: c.function.arguments,
                });
            }
            out.messages.push(Message {
                role: Role::Assistant,
                parts,
            });
        }
        "tool" => {
            let call_id = m
                .tool_call_id
                .ok_or_else(|| bad("tool messages need 'tool_call_id'", "messages"))?;
            let name = m.name.or_else(|| tool_name_for(&out.messages, &call_id));
            let result = Part::ToolResult {
                call_id,
                name,
                content: content_parts(m.content, &mut out.untranslatable),
                is_error: false,
            };
            // Consecutive tool results belong to one user turn.
            match out.messages.last_mut() {
                Some(last)
                    if last.role == Role::User
                        && last
                            .parts
                            .iter()
                            .all(|p| matches!(p, Part::ToolResult { .. })) =>
                {
                    last.parts.push(result)
                }
                _ => out.messages.push(Message {
                    role: Role::User,
                    parts: vec![result],
                }),
            }
        }
        other => {
            return Err(GatewayError::invalid_request(format!(
                "Unsupported message role '{}'.",
                crate::error::truncate(other, 32)
            ))
            .with_param("messages"))
        }
    }
    Ok(())
}

// ---- encoding (canonical → OpenAI provider) ----

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    messages: Vec<OutMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<types::ToolDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<types::StreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    n: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<Vec<types::ToolCall>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

pub fn encode(req: &Request, upstream_model: &str, warnings: &mut Warnings) -> Vec<u8> {
    let mut messages = Vec::with_capacity(req.messages.len().saturating_add(1));
    if !req.system.is_empty() {
        messages.push(OutMessage {
            role: "system",
            content: Some(Content::Text(req.system.join("\n\n"))),
            tool_calls: None,
            tool_call_id: None,
        });
    }
    for m in &req.messages {
        let mut content: Vec<ContentPart> = Vec::new();
        let mut calls = Vec::new();
        for p in &m.parts {
            match p {
                Part::Text(t) => content.push(ContentPart::Text { text: t.clone() }),
                Part::Image(src) => content.push(ContentPart::ImageUrl {
                    image_url: types::ImageUrl {
                        url: image_to_url(src),
                        detail: None,
                    },
                }),
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => calls.push(types::ToolCall::function(id, name, arguments)),
                Part::ToolResult {
                    call_id,
                    content: c,
                    is_error,
                    ..
                } => {
                    let mut text = text_of(c);
                    if *is_error {
                        text = format!("Error: {text}");
                    }
                    if c.iter().any(|p| matches!(p, Part::Image(_))) {
                        warnings.push("dropped images in tool results: not supported by openai");
                    }
                    messages.push(OutMessage {
                        role: "tool",
                        content: Some(Content::Text(text)),
                        tool_calls: None,
                        tool_call_id: Some(call_id),
                    });
                }
                Part::Thinking { .. } | Part::RedactedThinking(_) => {
                    warnings.push("dropped thinking blocks in history: not supported by openai")
                }
            }
        }
        if content.is_empty() && calls.is_empty() {
            continue;
        }
        let only_text = content
            .iter()
            .all(|p| matches!(p, ContentPart::Text { .. }));
        let content = if content.is_empty() {
            None
        } else if only_text {
            Some(Content::Text(
                content
                    .into_iter()
                    .filter_map(|p| match p {
                        ContentPart::Text { text } => Some(text),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join("\n"),
            ))
        } else {
            Some(Content::Parts(content))
        };
        messages.push(OutMessage {
            role: match m.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content,
            tool_calls: (!calls.is_empty()).then_some(calls),
            tool_call_id: None,
        });
    }
    let tools = req
        .tools
        .iter()
        .map(|t| types::ToolDef {
            kind: "function".into(),
            function: types::FunctionDef {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: Some(t.parameters.clone()),
                strict: None,
            },
        })
        .collect();
    let reasoning_effort = match &req.reasoning {
        Some(Reasoning::Effort(e)) => Some(e.as_str()),
        Some(Reasoning::Budget(b)) => {
            warnings.push("mapped the thinking budget to reasoning_effort for openai");
            Some(crate::canonical::effort_for_budget(*b))
        }
        Some(Reasoning::Disabled) | None => None,
    };
    let out = OutRequest {
        model: upstream_model,
        messages,
        tools,
        tool_choice: req.tool_choice.as_ref().map(|c| match c {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Named(n) => json!({"type": "function", "function": {"name": n}}),
        }),
        parallel_tool_calls: req.parallel_tool_calls,
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        stop: &req.stop,
        stream: req.stream,
        // Always ask for usage: it is how the request gets metered.
        stream_options: req.stream.then_some(types::StreamOptions {
            include_usage: Some(true),
        }),
        response_format: req.response_format.as_ref().map(|f| match f {
            ResponseFormat::Text => json!({"type": "text"}),
            ResponseFormat::JsonObject => json!({"type": "json_object"}),
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => {
                let mut js = serde_json::Map::new();
                js.insert("name".into(), json!(name));
                js.insert("schema".into(), json!(schema));
                if let Some(s) = strict {
                    js.insert("strict".into(), json!(s));
                }
                json!({"type": "json_schema", "json_schema": js})
            }
        }),
        reasoning_effort,
        n: req.n,
        user: req.user.as_deref(),
    };
    if req.top_k.is_some() {
        warnings.dropped("top_k", "openai");
    }
    serde_json::to_vec(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_history_with_tools_and_images() {
        let body = br#"{
            "model": "m",
            "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}}]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{\"x\":1}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "a cat"}
            ],
            "tools": [{"type": "function", "function": {"name": "look"}}],
            "tool_choice": {"type": "function", "function": {"name": "look"}},
            "stop": "END", "max_completion_tokens": 50, "seed": 7, "logit_bias": {}
        }"#;
        let r = decode(body).unwrap();
        assert_eq!(r.system, vec!["Be brief."]);
        assert_eq!(r.messages.len(), 3);
        assert!(matches!(r.messages[0].parts[1], Part::Image(_)));
        match &r.messages[2].parts[0] {
            Part::ToolResult { call_id, name, .. } => {
                assert_eq!(call_id, "c1");
                assert_eq!(name.as_deref(), Some("look"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(r.tool_choice, Some(ToolChoice::Named("look".into())));
        assert_eq!(r.stop, vec!["END"]);
        assert_eq!(r.max_tokens, Some(50));
        let mut un = r.unmapped.clone();
        un.sort();
        assert_eq!(un, vec!["logit_bias", "seed"]);
        assert_eq!(r.tools[0].parameters["type"], "object");
    }

    #[test]
    fn encodes_back_with_usage_forced_for_streams() {
        let body = br#"{"model":"m","stream":true,"messages":[{"role":"system","content":"S"},{"role":"user","content":"hi"}]}"#;
        let r = decode(body).unwrap();
        let mut w = Warnings::default();
        let out: Value = serde_json::from_slice(&encode(&r, "up", &mut w)).unwrap();
        assert_eq!(out["model"], "up");
        assert_eq!(
            out["messages"][0],
            json!({"role": "system", "content": "S"})
        );
        assert_eq!(out["messages"][1], json!({"role": "user", "content": "hi"}));
        assert_eq!(out["stream_options"]["include_usage"], true);
    }

    #[test]
    fn rejects_bad_shapes() {
        for b in [
            &br#"{"model":"m","messages":[{"role":"wizard","content":"x"}]}"#[..],
            br#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
            br#"{"model":"m","stop":5}"#,
            br#"{"model":"m","tool_choice":"sometimes"}"#,
            br#"{"messages":[]}"#,
        ] {
            assert_eq!(decode(b).unwrap_err().status, 400);
        }
    }
}
