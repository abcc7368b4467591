//! OpenAI Responses requests ↔ the canonical request.
//!
//! What only a provider serving the Responses API itself can do — stored
//! state (`previous_response_id`, `conversation`, `store: true`), built-in
//! tools, encrypted reasoning, file inputs — is recorded in
//! `Request::untranslatable`: passed through it works, translated it is a
//! 400 that names it (docs/translation.md).

use serde_json::{json, Map, Value};

use super::types::{Content, ContentPart, Input, Item, ResponsesRequest, ToolDef};
use crate::canonical::parts::{image_from_url, image_to_url, text_of, tool_name_for};
use crate::canonical::{
    Message, Part, Reasoning, Request, ResponseFormat, Role, Tool, ToolChoice, Warnings,
};
use crate::error::GatewayError;

pub fn decode(body: &[u8]) -> Result<Request, GatewayError> {
    let req: ResponsesRequest = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid_request(format!("Invalid responses request: {e}")))?;
    let mut out = Request {
        model: req.model,
        stream: req.stream == Some(true),
        // Usage is always part of a Responses answer.
        stream_usage: true,
        max_tokens: req.max_output_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        user: req.user,
        parallel_tool_calls: req.parallel_tool_calls,
        reasoning: req.reasoning.and_then(|r| r.effort).map(Reasoning::Effort),
        ..Request::default()
    };
    if let Some(i) = req.instructions.filter(|i| !i.is_empty()) {
        out.system.push(i);
    }
    if req.previous_response_id.is_some() {
        out.untranslatable
            .push("'previous_response_id' (a stored response)".into());
    }
    if req.conversation.as_ref().is_some_and(|c| !c.is_null()) {
        out.untranslatable
            .push("'conversation' (a stored conversation)".into());
    }
    if req.store == Some(true) {
        out.untranslatable
            .push("'store: true' (responses kept by the provider)".into());
    }
    if let Some(inc) = req.include.filter(|i| !i.is_empty()) {
        for i in inc {
            out.unmapped.push(format!("include[{i}]"));
        }
    }
    match req.input {
        None => {}
        Some(Input::Text(t)) => out.messages.push(Message {
            role: Role::User,
            parts: vec![Part::Text(t)],
        }),
        Some(Input::Items(items)) => {
            for item in items {
                decode_item(item, &mut out)?;
            }
        }
    }
    for t in req.tools.unwrap_or_default() {
        decode_tool(t, &mut out)?;
    }
    out.tool_choice = match req.tool_choice {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => ToolChoice::Auto,
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => {
                return Err(bad(
                    "'tool_choice' must be auto, none, required or a function",
                    "tool_choice",
                ))
            }
        }),
        Some(v) => match (v.get("type").and_then(Value::as_str), v.get("name")) {
            (Some("function"), Some(Value::String(name))) => Some(ToolChoice::Named(name.clone())),
            (Some(kind), _) => {
                out.untranslatable
                    .push(format!("'tool_choice' of type '{}'", short(kind)));
                None
            }
            _ => return Err(bad("'tool_choice' names no function", "tool_choice")),
        },
    };
    out.response_format = match req.text.and_then(|t| t.format) {
        None | Some(Value::Null) => None,
        Some(f) => Some(match f.get("type").and_then(Value::as_str) {
            Some("text") => ResponseFormat::Text,
            Some("json_object") => ResponseFormat::JsonObject,
            Some("json_schema") => ResponseFormat::JsonSchema {
                name: f
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("response")
                    .to_string(),
                schema: f.get("schema").cloned().unwrap_or(json!({})),
                strict: f.get("strict").and_then(Value::as_bool),
            },
            _ => return Err(bad("unknown 'text.format.type'", "text")),
        }),
    };
    // Stream options (obfuscation padding) have no meaning elsewhere.
    let _ = req.stream_options;
    out.unmapped.extend(
        req.extra
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| !ignored(k)),
    );
    Ok(out)
}

/// Fields that change nothing a translation could carry (client-side
/// bookkeeping): not worth a warning.
fn ignored(field: &str) -> bool {
    matches!(
        field,
        "metadata" | "background" | "truncation" | "service_tier"
    )
}

fn bad(msg: &str, param: &'static str) -> GatewayError {
    GatewayError::invalid_request(msg).with_param(param)
}

fn short(s: &str) -> &str {
    crate::error::truncate(s, 40)
}

fn decode_tool(t: ToolDef, out: &mut Request) -> Result<(), GatewayError> {
    if t.kind != "function" {
        // Built-in tools (web_search, file_search, code_interpreter, …) run
        // at OpenAI; no other provider runs them.
        out.untranslatable
            .push(format!("the built-in tool '{}'", short(&t.kind)));
        return Ok(());
    }
    let name = t
        .name
        .ok_or_else(|| bad("function tools need a 'name'", "tools"))?;
    out.tools.push(Tool {
        name,
        description: t.description,
        parameters: t
            .parameters
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    });
    Ok(())
}

/// Content parts → canonical parts; what cannot be carried is named.
fn content_parts(c: Option<Content>, out: &mut Request) -> Vec<Part> {
    match c {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![Part::Text(t)],
        Some(Content::Parts(ps)) => {
            let mut parts = Vec::with_capacity(ps.len());
            for p in ps {
                if let Some(part) = content_part(p, out) {
                    parts.push(part);
                }
            }
            parts
        }
    }
}

fn content_part(p: ContentPart, out: &mut Request) -> Option<Part> {
    match p.kind.as_str() {
        "input_text" | "output_text" | "text" => p.text.map(Part::Text),
        "refusal" => p.refusal.map(Part::Text),
        "input_image" => match (p.image_url, p.file_id) {
            (Some(url), _) => Some(Part::Image(image_from_url(&url))),
            _ => {
                out.untranslatable
                    .push("an 'input_image' given by file_id (a file stored at OpenAI)".into());
                None
            }
        },
        // A document the question is about: answering without it would
        // change the meaning, so it is refused, not dropped.
        "input_file" => {
            let _ = (p.file_data, p.filename);
            out.untranslatable
                .push("an 'input_file' content part".into());
            None
        }
        other => {
            out.untranslatable
                .push(format!("a '{}' content part", short(other)));
            None
        }
    }
}

fn decode_item(item: Item, out: &mut Request) -> Result<(), GatewayError> {
    let kind = item.kind.as_deref().unwrap_or("message");
    match kind {
        "message" => {
            let role = item.role.as_deref().unwrap_or("user");
            match role {
                "system" | "developer" => {
                    let parts = content_parts(item.content, out);
                    let t = text_of(&parts);
                    if !t.is_empty() {
                        out.system.push(t);
                    }
                }
                "user" => {
                    let parts = content_parts(item.content, out);
                    push_turn(out, Role::User, parts);
                }
                "assistant" => {
                    let parts = content_parts(item.content, out);
                    push_turn(out, Role::Assistant, parts);
                }
                other => {
                    return Err(GatewayError::invalid_request(format!(
                        "Unsupported message role '{}'.",
                        short(other)
                    ))
                    .with_param("input"))
                }
            }
        }
        "function_call" => {
            let id = item
                .call_id
                .ok_or_else(|| bad("function_call items need 'call_id'", "input"))?;
            let name = item
                .name
                .ok_or_else(|| bad("function_call items need 'name'", "input"))?;
            push_turn(
                out,
                Role::Assistant,
                vec![Part::ToolCall {
                    id,
                    name,
                    arguments: item.arguments.unwrap_or_else(|| "{}".into()),
                }],
            );
        }
        "function_call_output" => {
            let call_id = item
                .call_id
                .ok_or_else(|| bad("function_call_output items need 'call_id'", "input"))?;
            let name = tool_name_for(&out.messages, &call_id);
            let content = content_parts(item.output, out);
            let result = Part::ToolResult {
                call_id,
                name,
                content,
                is_error: false,
            };
            push_turn(out, Role::User, vec![result]);
        }
        "reasoning" => {
            // The summary is what the model showed; the encrypted content
            // only OpenAI can read, so it is not carried.
            let text: Vec<String> = item
                .summary
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.text)
                .filter(|t| !t.is_empty())
                .collect();
            if item.encrypted_content.is_some() {
                out.unmapped.push("reasoning.encrypted_content".into());
            }
            if !text.is_empty() {
                push_turn(
                    out,
                    Role::Assistant,
                    vec![Part::Thinking {
                        text: text.join("\n\n"),
                        signature: None,
                    }],
                );
            }
        }
        "item_reference" => out
            .untranslatable
            .push("an 'item_reference' (a stored item)".into()),
        other => out
            .untranslatable
            .push(format!("an input item of type '{}'", short(other))),
    }
    Ok(())
}

/// Consecutive items of one role form one turn (a function call after the
/// assistant's text, several outputs in a row).
fn push_turn(out: &mut Request, role: Role, parts: Vec<Part>) {
    if parts.is_empty() {
        return;
    }
    match out.messages.last_mut() {
        Some(last) if last.role == role => last.parts.extend(parts),
        _ => out.messages.push(Message { role, parts }),
    }
}

// ---- encoding (canonical → a Responses provider) ----

pub fn encode(req: &Request, upstream_model: &str, warnings: &mut Warnings) -> Vec<u8> {
    let mut input = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let mut content = Vec::new();
        let flush = |content: &mut Vec<Value>, input: &mut Vec<Value>| {
            if !content.is_empty() {
                let role = match m.role {
                    Role::User => "user",
                    Role::Assistant => "assistant",
                };
                input.push(json!({"role": role, "content": std::mem::take(content)}));
            }
        };
        for p in &m.parts {
            match p {
                Part::Text(t) => content.push(match m.role {
                    Role::User => json!({"type": "input_text", "text": t}),
                    Role::Assistant => json!({"type": "output_text", "text": t}),
                }),
                Part::Image(src) => {
                    if m.role == Role::User {
                        content.push(json!({"type": "input_image", "image_url": image_to_url(src)}))
                    } else {
                        warnings.push(
                            "dropped images in assistant turns: not supported by openai-responses",
                        );
                    }
                }
                Part::ToolCall {
                    id,
                    name,
                    arguments,
                } => {
                    flush(&mut content, &mut input);
                    input.push(json!({"type": "function_call", "call_id": id, "name": name,
                                      "arguments": arguments}));
                }
                Part::ToolResult {
                    call_id,
                    content: c,
                    is_error,
                    ..
                } => {
                    flush(&mut content, &mut input);
                    let mut text = text_of(c);
                    if *is_error {
                        text = format!("Error: {text}");
                    }
                    if c.iter().any(|p| matches!(p, Part::Image(_))) {
                        warnings.push(
                            "dropped images in tool results: not supported by openai-responses",
                        );
                    }
                    input.push(json!({"type": "function_call_output", "call_id": call_id,
                                      "output": text}));
                }
                Part::Thinking { .. } | Part::RedactedThinking(_) => warnings
                    .push("dropped thinking blocks in history: not supported by openai-responses"),
            }
        }
        flush(&mut content, &mut input);
    }
    let mut body = Map::new();
    body.insert("model".into(), json!(upstream_model));
    body.insert("input".into(), Value::Array(input));
    if !req.system.is_empty() {
        body.insert("instructions".into(), json!(req.system.join("\n\n")));
    }
    if !req.tools.is_empty() {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "name": t.name, "description": t.description,
                       "parameters": t.parameters})
            })
            .collect();
        body.insert("tools".into(), Value::Array(tools));
    }
    if let Some(c) = &req.tool_choice {
        body.insert(
            "tool_choice".into(),
            match c {
                ToolChoice::Auto => json!("auto"),
                ToolChoice::None => json!("none"),
                ToolChoice::Required => json!("required"),
                ToolChoice::Named(n) => json!({"type": "function", "name": n}),
            },
        );
    }
    if let Some(p) = req.parallel_tool_calls {
        body.insert("parallel_tool_calls".into(), json!(p));
    }
    if let Some(m) = req.max_tokens {
        body.insert("max_output_tokens".into(), json!(m));
    }
    if let Some(t) = req.temperature {
        body.insert("temperature".into(), json!(t));
    }
    if let Some(t) = req.top_p {
        body.insert("top_p".into(), json!(t));
    }
    if req.top_k.is_some() {
        warnings.dropped("top_k", "openai-responses");
    }
    if !req.stop.is_empty() {
        warnings.dropped("stop", "openai-responses");
    }
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            body.insert("text".into(), json!({"format": {"type": "json_object"}}));
        }
        Some(ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        }) => {
            let mut f = json!({"type": "json_schema", "name": name, "schema": schema});
            if let (Some(s), Some(o)) = (strict, f.as_object_mut()) {
                o.insert("strict".into(), json!(s));
            }
            body.insert("text".into(), json!({ "format": f }));
        }
    }
    let effort = match &req.reasoning {
        Some(Reasoning::Effort(e)) => Some(e.as_str()),
        Some(Reasoning::Budget(b)) => {
            warnings.push("mapped the thinking budget to reasoning.effort for openai-responses");
            Some(crate::canonical::effort_for_budget(*b))
        }
        Some(Reasoning::Disabled) | None => None,
    };
    if let Some(e) = effort {
        body.insert("reasoning".into(), json!({"effort": e}));
    }
    if let Some(u) = &req.user {
        body.insert("user".into(), json!(u));
    }
    body.insert("stream".into(), json!(req.stream));
    // The gateway keeps no state for the provider, and a translated
    // conversation is re-sent whole every turn.
    body.insert("store".into(), json!(false));
    serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(v: Value) -> Request {
        decode(v.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn a_string_input_is_one_user_turn() {
        let r = dec(
            json!({"model": "m", "input": "hi", "instructions": "be brief",
                            "max_output_tokens": 50, "stream": true}),
        );
        assert_eq!(r.system, vec!["be brief"]);
        assert_eq!(r.messages.len(), 1);
        assert_eq!(r.messages[0].parts, vec![Part::Text("hi".into())]);
        assert_eq!(r.max_tokens, Some(50));
        assert!(r.stream && r.untranslatable.is_empty());
    }

    #[test]
    fn items_become_turns_with_calls_and_outputs() {
        let r = dec(json!({"model": "m", "input": [
            {"role": "developer", "content": "sys"},
            {"role": "user", "content": [{"type": "input_text", "text": "weather?"},
                                         {"type": "input_image", "image_url": "https://x/y.png"}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "think"}],
             "encrypted_content": "gAAA"},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"q\":1}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "It is sunny."}]}
        ], "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
           "tool_choice": {"type": "function", "name": "weather"},
           "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
           "reasoning": {"effort": "low"}}));
        assert_eq!(r.system, vec!["sys"]);
        assert_eq!(r.messages.len(), 4);
        assert_eq!(r.messages[0].parts.len(), 2);
        assert!(matches!(&r.messages[1].parts[0], Part::Thinking { text, .. } if text == "think"));
        assert!(matches!(&r.messages[1].parts[1], Part::ToolCall { id, .. } if id == "c1"));
        assert!(
            matches!(&r.messages[2].parts[0], Part::ToolResult { name: Some(n), .. } if n == "weather")
        );
        assert_eq!(r.tool_choice, Some(ToolChoice::Named("weather".into())));
        assert!(matches!(
            r.response_format,
            Some(ResponseFormat::JsonSchema { .. })
        ));
        assert_eq!(r.reasoning, Some(Reasoning::Effort("low".into())));
        assert_eq!(r.unmapped, vec!["reasoning.encrypted_content"]);
    }

    #[test]
    fn what_only_openai_can_do_is_named() {
        let r = dec(json!({"model": "m", "input": [
            {"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]},
            {"type": "item_reference", "id": "msg_1"}],
            "previous_response_id": "resp_1", "store": true,
            "tools": [{"type": "web_search"}]}));
        let all = r.untranslatable.join("|");
        for needle in [
            "previous_response_id",
            "store",
            "input_file",
            "item_reference",
            "web_search",
        ] {
            assert!(all.contains(needle), "{needle} in {all}");
        }
        // store: false and metadata are fine.
        let r = dec(json!({"model": "m", "input": "x", "store": false, "metadata": {"a": "b"}}));
        assert!(r.untranslatable.is_empty() && r.unmapped.is_empty());
    }

    #[test]
    fn bad_requests_are_refused() {
        for body in [
            json!({"model": "m", "input": 5}),
            json!({"model": "m", "input": [{"type": "function_call", "name": "x"}]}),
            json!({"model": "m", "input": "x", "tool_choice": "sometimes"}),
            json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}),
        ] {
            assert!(decode(body.to_string().as_bytes()).is_err(), "{body}");
        }
    }

    #[test]
    fn encoded_requests_decode_to_the_same_conversation() {
        let original = dec(json!({"model": "m", "instructions": "sys", "input": [
            {"role": "user", "content": "weather?"},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"}],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}}],
            "tool_choice": "required", "max_output_tokens": 9}));
        let mut w = Warnings::default();
        let body = encode(&original, "up", &mut w);
        let again = decode(&body).unwrap();
        assert_eq!(again.model, "up");
        assert_eq!(again.messages, original.messages);
        assert_eq!(again.tools, original.tools);
        assert_eq!(again.tool_choice, original.tool_choice);
        assert_eq!(again.max_tokens, Some(9));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["store"], json!(false));
        assert!(w.is_empty());
    }
}
