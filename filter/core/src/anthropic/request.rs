//! Anthropic Messages requests ↔ the canonical request.

use serde::Serialize;
use serde_json::{json, Value};

use crate::anthropic::types::{
    self, Block, Content, ImageSource as AImage, MessagesRequest, System, ToolResultContent,
};
use crate::anthropic::DEFAULT_MAX_TOKENS;
use crate::canonical::parts::tool_name_for;
use crate::canonical::Warnings;
use crate::canonical::{
    ImageSource, Message, Part, Reasoning, Request, ResponseFormat, Role, Tool, ToolChoice,
};
use crate::error::GatewayError;

pub fn decode(body: &[u8]) -> Result<Request, GatewayError> {
    let req: MessagesRequest = serde_json::from_slice(body)
        .map_err(|e| GatewayError::invalid_request(format!("Invalid messages request: {e}")))?;
    let mut out = Request {
        model: req.model,
        stream: req.stream == Some(true),
        max_tokens: req.max_tokens,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop: req.stop_sequences.unwrap_or_default(),
        user: req.metadata.and_then(|m| m.user_id),
        ..Request::default()
    };
    match req.system {
        None => {}
        Some(System::Text(t)) => out.system.push(t),
        Some(System::Blocks(bs)) => out.system.extend(bs.into_iter().map(|b| b.text)),
    }
    for m in req.messages {
        let role = match m.role.as_str() {
            "user" => Role::User,
            "assistant" => Role::Assistant,
            _ => {
                return Err(GatewayError::invalid_request(
                    "messages: role must be 'user' or 'assistant'",
                ))
            }
        };
        let parts = match m.content {
            Content::Text(t) => vec![Part::Text(t)],
            Content::Blocks(bs) => {
                let mut parts = Vec::with_capacity(bs.len());
                for b in bs {
                    if let Some(p) = block_to_part(b, &out.messages, &mut out.unmapped) {
                        parts.push(p);
                    }
                }
                parts
            }
        };
        out.messages.push(Message { role, parts });
    }
    for t in req.tools.unwrap_or_default() {
        if let Some(kind) = t.kind.filter(|k| k != "custom") {
            // Server tools run at Anthropic; no other provider can run them.
            out.unmapped
                .push(format!("tools[{}] (server tool {kind})", t.name));
            continue;
        }
        out.tools.push(Tool {
            name: t.name,
            description: t.description,
            parameters: t
                .input_schema
                .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
        });
    }
    if let Some(c) = req.tool_choice {
        if c.disable_parallel_tool_use == Some(true) {
            out.parallel_tool_calls = Some(false);
        }
        out.tool_choice = match (c.kind.as_str(), c.name) {
            ("auto", _) => Some(ToolChoice::Auto),
            ("any", _) => Some(ToolChoice::Required),
            ("none", _) => Some(ToolChoice::None),
            ("tool", Some(n)) => Some(ToolChoice::Named(n)),
            _ => return Err(GatewayError::invalid_request("invalid 'tool_choice'")),
        };
    }
    out.reasoning = match req.thinking {
        Some(t) if t.kind == "enabled" => Some(Reasoning::Budget(t.budget_tokens.unwrap_or(1024))),
        Some(t) if t.kind == "disabled" => Some(Reasoning::Disabled),
        _ => None,
    };
    out.unmapped.extend(req.extra.into_iter().map(|(k, _)| k));
    Ok(out)
}

fn block_to_part(b: Block, history: &[Message], unmapped: &mut Vec<String>) -> Option<Part> {
    Some(match b {
        Block::Text { text } => Part::Text(text),
        Block::Image { source } => Part::Image(match source {
            AImage::Base64 { media_type, data } => ImageSource::Base64 { media_type, data },
            AImage::Url { url } => ImageSource::Url(url),
            AImage::Unsupported => {
                unmapped.push("image source type".into());
                return None;
            }
        }),
        Block::ToolUse { id, name, input } => Part::ToolCall {
            id,
            name,
            arguments: if input.is_null() {
                "{}".into()
            } else {
                input.to_string()
            },
        },
        Block::ToolResult {
            tool_use_id,
            content,
            is_error,
        } => {
            let content = match content {
                None => Vec::new(),
                Some(ToolResultContent::Text(t)) => vec![Part::Text(t)],
                Some(ToolResultContent::Blocks(bs)) => bs
                    .into_iter()
                    .filter_map(|b| block_to_part(b, history, unmapped))
                    .collect(),
            };
            Part::ToolResult {
                name: tool_name_for(history, &tool_use_id),
                call_id: tool_use_id,
                content,
                is_error: is_error == Some(true),
            }
        }
        Block::Thinking {
            thinking,
            signature,
        } => Part::Thinking {
            text: thinking,
            signature: (!signature.is_empty()).then_some(signature),
        },
        Block::RedactedThinking { data } => Part::RedactedThinking(data),
        Block::Unsupported => {
            unmapped.push("content block type".into());
            return None;
        }
    })
}

// ---- encoding (canonical → Anthropic provider) ----

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    messages: Vec<types::Message>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop_sequences: &'a [String],
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<types::ToolDef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<types::ToolChoice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<types::Thinking>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<types::Metadata>,
}

fn part_to_block(p: &Part, warnings: &mut Warnings) -> Option<Block> {
    Some(match p {
        Part::Text(t) => Block::Text { text: t.clone() },
        Part::Image(ImageSource::Base64 { media_type, data }) => Block::Image {
            source: AImage::Base64 {
                media_type: media_type.clone(),
                data: data.clone(),
            },
        },
        Part::Image(ImageSource::Url(url)) => Block::Image {
            source: AImage::Url { url: url.clone() },
        },
        Part::ToolCall {
            id,
            name,
            arguments,
        } => Block::ToolUse {
            id: id.clone(),
            name: name.clone(),
            input: serde_json::from_str::<Value>(arguments)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| {
                    warnings.push("tool call arguments in history were not a JSON object");
                    json!({})
                }),
        },
        Part::ToolResult {
            call_id,
            content,
            is_error,
            ..
        } => Block::ToolResult {
            tool_use_id: call_id.clone(),
            content: Some(ToolResultContent::Blocks(
                content
                    .iter()
                    .filter_map(|p| part_to_block(p, warnings))
                    .collect(),
            )),
            is_error: is_error.then_some(true),
        },
        Part::Thinking {
            text,
            signature: Some(sig),
        } => Block::Thinking {
            thinking: text.clone(),
            signature: sig.clone(),
        },
        Part::Thinking {
            signature: None, ..
        } => {
            warnings.push("dropped unsigned reasoning in history: anthropic requires signatures");
            return None;
        }
        Part::RedactedThinking(d) => Block::RedactedThinking { data: d.clone() },
    })
}

pub fn encode(req: &Request, upstream_model: &str, warnings: &mut Warnings) -> Vec<u8> {
    let mut messages: Vec<types::Message> = Vec::with_capacity(req.messages.len());
    for m in &req.messages {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        let blocks: Vec<Block> = m
            .parts
            .iter()
            .filter_map(|p| part_to_block(p, warnings))
            .collect();
        if blocks.is_empty() {
            continue;
        }
        // Anthropic wants alternating turns: merge consecutive same-role ones.
        match messages.last_mut() {
            Some(last) if last.role == role => {
                if let Content::Blocks(bs) = &mut last.content {
                    bs.extend(blocks);
                }
            }
            _ => messages.push(types::Message {
                role: role.to_string(),
                content: Content::Blocks(blocks),
            }),
        }
    }
    let mut max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let thinking = match &req.reasoning {
        None => None,
        Some(Reasoning::Disabled) => Some(types::Thinking {
            kind: "disabled".into(),
            budget_tokens: None,
        }),
        Some(r) => {
            let budget = match r {
                Reasoning::Budget(b) => (*b).max(1024),
                Reasoning::Effort(e) => match e.as_str() {
                    "minimal" | "low" => 1024,
                    "medium" => 4096,
                    _ => 16384,
                },
                Reasoning::Disabled => 0,
            };
            // Anthropic requires max_tokens > budget_tokens.
            if max_tokens <= budget {
                max_tokens = budget.saturating_add(DEFAULT_MAX_TOKENS);
            }
            Some(types::Thinking {
                kind: "enabled".into(),
                budget_tokens: Some(budget),
            })
        }
    };
    let mut tool_choice = req.tool_choice.as_ref().map(|c| types::ToolChoice {
        kind: match c {
            ToolChoice::Auto => "auto",
            ToolChoice::None => "none",
            ToolChoice::Required => "any",
            ToolChoice::Named(_) => "tool",
        }
        .into(),
        name: match c {
            ToolChoice::Named(n) => Some(n.clone()),
            _ => None,
        },
        disable_parallel_tool_use: None,
    });
    if req.parallel_tool_calls == Some(false) && !req.tools.is_empty() {
        tool_choice
            .get_or_insert_with(|| types::ToolChoice {
                kind: "auto".into(),
                name: None,
                disable_parallel_tool_use: None,
            })
            .disable_parallel_tool_use = Some(true);
    }
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(_) => warnings.dropped("response_format", "anthropic"),
    }
    let out = OutRequest {
        model: upstream_model,
        max_tokens,
        messages,
        system: (!req.system.is_empty()).then(|| req.system.join("\n\n")),
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k,
        stop_sequences: &req.stop,
        stream: req.stream,
        tools: req
            .tools
            .iter()
            .map(|t| types::ToolDef {
                name: t.name.clone(),
                description: t.description.clone(),
                input_schema: Some(t.parameters.clone()),
                kind: None,
            })
            .collect(),
        tool_choice,
        thinking,
        metadata: req.user.as_ref().map(|u| types::Metadata {
            user_id: Some(u.clone()),
        }),
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_claude_code_style_request() {
        let body = br#"{
            "model": "claude", "max_tokens": 1000, "stream": true,
            "system": [{"type": "text", "text": "You are Claude Code."}],
            "messages": [
                {"role": "user", "content": "list files"},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig=="},
                    {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"cmd": "ls"}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "a.txt"}]}
            ],
            "tools": [{"name": "Bash", "input_schema": {"type": "object"}},
                      {"type": "web_search_20250305", "name": "web_search"}],
            "thinking": {"type": "enabled", "budget_tokens": 2000}
        }"#;
        let r = decode(body).unwrap();
        assert_eq!(r.system, vec!["You are Claude Code."]);
        assert_eq!(r.tools.len(), 1);
        assert!(r.unmapped[0].contains("web_search"));
        assert_eq!(r.reasoning, Some(Reasoning::Budget(2000)));
        match &r.messages[2].parts[0] {
            Part::ToolResult { name, .. } => assert_eq!(name.as_deref(), Some("Bash")),
            p => panic!("{p:?}"),
        }
        // Back to Anthropic: signature survives, blocks intact.
        let mut w = Warnings::default();
        let out: Value = serde_json::from_slice(&encode(&r, "claude-up", &mut w)).unwrap();
        assert_eq!(out["messages"][1]["content"][0]["signature"], "sig==");
        assert_eq!(out["messages"][1]["content"][1]["input"]["cmd"], "ls");
        assert_eq!(out["thinking"]["budget_tokens"], 2000);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn defaults_and_alternation() {
        let r = Request {
            model: "m".into(),
            messages: vec![
                Message {
                    role: Role::User,
                    parts: vec![Part::Text("a".into())],
                },
                Message {
                    role: Role::User,
                    parts: vec![Part::Text("b".into())],
                },
            ],
            reasoning: Some(Reasoning::Effort("high".into())),
            max_tokens: Some(100),
            ..Request::default()
        };
        let mut w = Warnings::default();
        let out: Value = serde_json::from_slice(&encode(&r, "u", &mut w)).unwrap();
        assert_eq!(out["messages"].as_array().unwrap().len(), 1);
        assert_eq!(out["thinking"]["budget_tokens"], 16384);
        assert!(out["max_tokens"].as_u64().unwrap() > 16384);
        let plain = Request {
            model: "m".into(),
            ..Request::default()
        };
        let out: Value = serde_json::from_slice(&encode(&plain, "u", &mut w)).unwrap();
        assert_eq!(out["max_tokens"], DEFAULT_MAX_TOKENS);
    }
}
