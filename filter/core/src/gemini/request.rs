//! Gemini generateContent requests ↔ the canonical request.

use serde::Serialize;
use serde_json::{json, Value};

use crate::canonical::parts::{text_of, tool_name_for};
use crate::canonical::Warnings;
use crate::canonical::{
    synthesized_call_id, ImageSource, Message, Part, Reasoning, Request, ResponseFormat, Role,
    Tool, ToolChoice,
};
use crate::error::GatewayError;
use crate::gemini::types::{
    self, Blob, Content, FileData, FunctionCall, FunctionResponse, GPart, GenerateRequest,
    GenerationConfig,
};

/// `model` and `stream` come from the URL, not the body.
pub fn decode(body: &[u8], model: &str, stream: bool) -> Result<Request, GatewayError> {
    let req: GenerateRequest = serde_json::from_slice(body).map_err(|e| {
        GatewayError::invalid_request(format!("Invalid generateContent request: {e}"))
    })?;
    let mut out = Request {
        model: model.to_string(),
        stream,
        ..Request::default()
    };
    if let Some(si) = req.system_instruction {
        let t = si
            .parts
            .into_iter()
            .filter_map(|p| p.text)
            .collect::<Vec<_>>()
            .join("\n");
        if !t.is_empty() {
            out.system.push(t);
        }
    }
    let mut calls = 0usize;
    for c in req.contents {
        let role = match c.role.as_deref() {
            Some("model") => Role::Assistant,
            _ => Role::User,
        };
        let mut parts = Vec::with_capacity(c.parts.len());
        for p in c.parts {
            if let Some(t) = p.text {
                if p.thought == Some(true) {
                    parts.push(Part::Thinking {
                        text: t,
                        signature: None,
                    });
                } else {
                    parts.push(Part::Text(t));
                }
            } else if let Some(b) = p.inline_data {
                parts.push(Part::Image(ImageSource::Base64 {
                    media_type: b.mime_type,
                    data: b.data,
                }));
            } else if let Some(f) = p.file_data {
                parts.push(Part::Image(ImageSource::Url(f.file_uri)));
            } else if let Some(fc) = p.function_call {
                let name = fc.name.unwrap_or_default();
                let id = fc.id.unwrap_or_else(|| synthesized_call_id(calls, &name));
                calls = calls.saturating_add(1);
                parts.push(Part::ToolCall {
                    id,
                    arguments: fc.args.unwrap_or_else(|| json!({})).to_string(),
                    name,
                });
            } else if let Some(fr) = p.function_response {
                // Answer the most recent call of that name (Gemini matches
                // responses to calls by name when ids are absent).
                let call_id = fr.id.unwrap_or_else(|| {
                    last_call_id(&out.messages, &parts, &fr.name)
                        .unwrap_or_else(|| synthesized_call_id(0, &fr.name))
                });
                parts.push(Part::ToolResult {
                    call_id,
                    name: Some(fr.name),
                    content: vec![Part::Text(response_text(&fr.response))],
                    is_error: fr.response.get("error").is_some(),
                });
            }
        }
        out.messages.push(Message { role, parts });
    }
    for t in req.tools.unwrap_or_default() {
        for f in t.function_declarations.unwrap_or_default() {
            out.tools.push(Tool {
                name: f.name,
                description: f.description,
                parameters: f
                    .parameters_json_schema
                    .or(f.parameters)
                    .map(lower_types)
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
        }
        for k in t.other.keys() {
            out.unmapped.push(format!("tools.{k}"));
        }
    }
    if let Some(fc) = req.tool_config.and_then(|c| c.function_calling_config) {
        let allowed = fc.allowed_function_names.unwrap_or_default();
        out.tool_choice = match fc.mode.as_deref().map(str::to_ascii_uppercase).as_deref() {
            Some("NONE") => Some(ToolChoice::None),
            Some("ANY") | Some("VALIDATED") if allowed.len() == 1 => {
                allowed.first().cloned().map(ToolChoice::Named)
            }
            Some("ANY") => Some(ToolChoice::Required),
            Some("AUTO") | None => Some(ToolChoice::Auto),
            Some(_) => Some(ToolChoice::Auto),
        };
    }
    if let Some(g) = req.generation_config {
        decode_generation_config(g, &mut out)?;
    }
    out.unmapped.extend(req.extra.into_iter().map(|(k, _)| k));
    Ok(out)
}

fn decode_generation_config(g: GenerationConfig, out: &mut Request) -> Result<(), GatewayError> {
    out.temperature = g.temperature;
    out.top_p = g.top_p;
    out.top_k = g.top_k.map(|k| k as u64);
    out.max_tokens = g.max_output_tokens;
    out.stop = g.stop_sequences.unwrap_or_default();
    out.n = g.candidate_count;
    let schema = g.response_json_schema.or(g.response_schema);
    out.response_format = match (g.response_mime_type.as_deref(), schema) {
        (Some("application/json"), Some(s)) => Some(ResponseFormat::JsonSchema {
            name: "response".into(),
            schema: lower_types(s),
            strict: None,
        }),
        (Some("application/json"), None) => Some(ResponseFormat::JsonObject),
        _ => None,
    };
    if let Some(t) = g.thinking_config {
        out.reasoning = match (t.thinking_budget, t.thinking_level) {
            (Some(0), _) => Some(Reasoning::Disabled),
            (Some(b), _) if b > 0 => Some(Reasoning::Budget(b as u64)),
            (_, Some(level)) => Some(Reasoning::Effort(level.to_ascii_lowercase())),
            _ => None,
        };
    }
    out.unmapped.extend(
        g.extra
            .into_iter()
            .map(|(k, _)| format!("generationConfig.{k}")),
    );
    Ok(())
}

/// Gemini's OpenAPI-style schemas spell types in capitals (`OBJECT`); JSON
/// Schema (OpenAI, Anthropic) wants lowercase.
fn lower_types(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(t)) = m.get_mut("type") {
                    *t = t.to_ascii_lowercase();
                }
                for (_, child) in m.iter_mut() {
                    walk(child);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

fn last_call_id(history: &[Message], current: &[Part], name: &str) -> Option<String> {
    let find = |parts: &[Part]| {
        parts.iter().rev().find_map(|p| match p {
            Part::ToolCall { id, name: n, .. } if n == name => Some(id.clone()),
            _ => None,
        })
    };
    find(current).or_else(|| history.iter().rev().find_map(|m| find(&m.parts)))
}

/// A function response object as the text other dialects carry: the single
/// string field of `{"result": "..."}`-style objects, else JSON text.
fn response_text(v: &Value) -> String {
    if let Some(m) = v.as_object() {
        if m.len() == 1 {
            if let Some(Value::String(s)) = m.values().next() {
                return s.clone();
            }
        }
    }
    v.to_string()
}

// ---- encoding (canonical → Gemini provider) ----

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutRequest {
    contents: Vec<Content>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<Content>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<types::Tool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<types::ToolConfig>,
    generation_config: GenerationConfig,
}

/// JSON-schema keys Gemini's `parameters` rejects.
const UNSUPPORTED_SCHEMA_KEYS: &[&str] = &["$schema", "additionalProperties", "strict", "$id"];

fn sanitize_schema(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for k in UNSUPPORTED_SCHEMA_KEYS {
                    m.remove(*k);
                }
                for (_, child) in m.iter_mut() {
                    walk(child);
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

fn mime_for_url(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".png") {
        "image/png"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else if lower.ends_with(".webp") {
        "image/webp"
    } else if lower.ends_with(".pdf") {
        "application/pdf"
    } else {
        "image/jpeg"
    }
}

fn part_out(p: &Part, history: &[Message], warnings: &mut Warnings) -> Option<GPart> {
    Some(match p {
        Part::Text(t) => GPart {
            text: Some(t.clone()),
            ..GPart::default()
        },
        Part::Image(ImageSource::Base64 { media_type, data }) => GPart {
            inline_data: Some(Blob {
                mime_type: media_type.clone(),
                data: data.clone(),
            }),
            ..GPart::default()
        },
        Part::Image(ImageSource::Url(u)) => GPart {
            file_data: Some(FileData {
                mime_type: Some(mime_for_url(u).to_string()),
                file_uri: u.clone(),
            }),
            ..GPart::default()
        },
        Part::ToolCall {
            name, arguments, ..
        } => GPart {
            function_call: Some(FunctionCall {
                name: Some(name.clone()),
                args: Some(
                    serde_json::from_str::<Value>(arguments)
                        .ok()
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({})),
                ),
                ..FunctionCall::default()
            }),
            ..GPart::default()
        },
        Part::ToolResult {
            call_id,
            name,
            content,
            is_error,
        } => {
            let name = name
                .clone()
                .or_else(|| tool_name_for(history, call_id))
                .unwrap_or_else(|| {
                    warnings.push("a tool result names no known call; sent its id as the name");
                    call_id.clone()
                });
            let text = text_of(content);
            let response = match serde_json::from_str::<Value>(&text) {
                Ok(v @ Value::Object(_)) => v,
                _ if *is_error => json!({"error": text}),
                _ => json!({"result": text}),
            };
            GPart {
                function_response: Some(FunctionResponse {
                    id: None,
                    name,
                    response,
                }),
                ..GPart::default()
            }
        }
        Part::Thinking { .. } | Part::RedactedThinking(_) => {
            warnings.push("dropped thinking blocks in history: not supported by gemini");
            return None;
        }
    })
}

pub fn encode(req: &Request, warnings: &mut Warnings) -> Vec<u8> {
    let mut contents: Vec<Content> = Vec::with_capacity(req.messages.len());
    for (i, m) in req.messages.iter().enumerate() {
        let role = match m.role {
            Role::User => "user",
            Role::Assistant => "model",
        };
        let parts: Vec<GPart> = m
            .parts
            .iter()
            .filter_map(|p| part_out(p, req.messages.get(..i).unwrap_or_default(), warnings))
            .collect();
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
            _ => contents.push(Content {
                role: Some(role.into()),
                parts,
            }),
        }
    }
    let tools = if req.tools.is_empty() {
        Vec::new()
    } else {
        vec![types::Tool {
            function_declarations: Some(
                req.tools
                    .iter()
                    .map(|t| types::FunctionDeclaration {
                        name: t.name.clone(),
                        description: t.description.clone(),
                        parameters: Some(sanitize_schema(t.parameters.clone())),
                        parameters_json_schema: None,
                    })
                    .collect(),
            ),
            other: Default::default(),
        }]
    };
    let tool_config = req.tool_choice.as_ref().map(|c| types::ToolConfig {
        function_calling_config: Some(types::FunctionCallingConfig {
            mode: Some(
                match c {
                    ToolChoice::Auto => "AUTO",
                    ToolChoice::None => "NONE",
                    ToolChoice::Required | ToolChoice::Named(_) => "ANY",
                }
                .into(),
            ),
            allowed_function_names: match c {
                ToolChoice::Named(n) => Some(vec![n.clone()]),
                _ => None,
            },
        }),
    });
    let mut g = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: req.top_k.map(|k| k as f64),
        max_output_tokens: req.max_tokens,
        stop_sequences: (!req.stop.is_empty()).then(|| req.stop.clone()),
        ..GenerationConfig::default()
    };
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => g.response_mime_type = Some("application/json".into()),
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            g.response_mime_type = Some("application/json".into());
            g.response_json_schema = Some(schema.clone());
        }
    }
    g.thinking_config = match &req.reasoning {
        None => None,
        Some(Reasoning::Disabled) => Some(types::ThinkingConfig {
            thinking_budget: Some(0),
            ..Default::default()
        }),
        Some(Reasoning::Budget(b)) => Some(types::ThinkingConfig {
            thinking_budget: Some((*b).min(i64::MAX as u64) as i64),
            include_thoughts: Some(true),
            thinking_level: None,
        }),
        Some(Reasoning::Effort(e)) => Some(types::ThinkingConfig {
            thinking_budget: Some(match e.as_str() {
                "minimal" | "low" => 1024,
                "medium" => 8192,
                _ => 24576,
            }),
            include_thoughts: Some(true),
            thinking_level: None,
        }),
    };
    if req.parallel_tool_calls.is_some() {
        warnings.dropped("parallel_tool_calls", "gemini");
    }
    if req.user.is_some() {
        warnings.dropped("user", "gemini");
    }
    let out = OutRequest {
        contents,
        system_instruction: (!req.system.is_empty()).then(|| Content {
            role: None,
            parts: vec![GPart {
                text: Some(req.system.join("\n\n")),
                ..GPart::default()
            }],
        }),
        tools,
        tool_config,
        generation_config: g,
    };
    serde_json::to_vec(&out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_function_round_trip_history() {
        let body = br#"{
            "systemInstruction": {"parts": [{"text": "Be terse."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "weather?"},
                    {"inlineData": {"mimeType": "image/png", "data": "AAA="}}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"result": "sunny"}}}]}
            ],
            "tools": [{"functionDeclarations": [{"name": "get_weather",
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {"maxOutputTokens": 64, "thinkingConfig": {"thinkingBudget": 0}},
            "safetySettings": []
        }"#;
        let r = decode(body, "gemini-x", true).unwrap();
        assert!(r.stream);
        assert_eq!(r.system, vec!["Be terse."]);
        let call_id = match &r.messages[1].parts[0] {
            Part::ToolCall { id, arguments, .. } => {
                assert_eq!(arguments, r#"{"city":"Paris"}"#);
                id.clone()
            }
            p => panic!("{p:?}"),
        };
        match &r.messages[2].parts[0] {
            Part::ToolResult {
                call_id: c,
                content,
                ..
            } => {
                assert_eq!(c, &call_id);
                assert_eq!(content, &vec![Part::Text("sunny".into())]);
            }
            p => panic!("{p:?}"),
        }
        assert_eq!(r.tools[0].parameters["type"], "object");
        assert_eq!(r.tool_choice, Some(ToolChoice::Named("get_weather".into())));
        assert_eq!(r.reasoning, Some(Reasoning::Disabled));
        assert_eq!(r.unmapped, vec!["safetySettings"]);

        // And back to Gemini.
        let mut w = Warnings::default();
        let out: Value = serde_json::from_slice(&encode(&r, &mut w)).unwrap();
        assert_eq!(
            out["contents"][2]["parts"][0]["functionResponse"]["name"],
            "get_weather"
        );
        assert_eq!(
            out["contents"][2]["parts"][0]["functionResponse"]["response"]["result"],
            "sunny"
        );
        assert_eq!(out["toolConfig"]["functionCallingConfig"]["mode"], "ANY");
        assert_eq!(out["generationConfig"]["maxOutputTokens"], 64);
    }

    #[test]
    fn encode_sanitizes_schemas_and_merges_turns() {
        let r = Request {
            messages: vec![
                Message {
                    role: Role::User,
                    parts: vec![Part::Text("a".into())],
                },
                Message {
                    role: Role::User,
                    parts: vec![Part::ToolResult {
                        call_id: "c".into(),
                        name: Some("f".into()),
                        content: vec![Part::Text("{\"ok\":true}".into())],
                        is_error: false,
                    }],
                },
            ],
            tools: vec![Tool {
                name: "f".into(),
                description: None,
                parameters: json!({"type": "object", "additionalProperties": false,
                                   "properties": {"x": {"type": "string", "$schema": "s"}}}),
            }],
            ..Request::default()
        };
        let mut w = Warnings::default();
        let out: Value = serde_json::from_slice(&encode(&r, &mut w)).unwrap();
        assert_eq!(out["contents"].as_array().unwrap().len(), 1);
        assert_eq!(
            out["contents"][0]["parts"][1]["functionResponse"]["response"]["ok"],
            true
        );
        let params = &out["tools"][0]["functionDeclarations"][0]["parameters"];
        assert!(params.get("additionalProperties").is_none());
        assert!(params["properties"]["x"].get("$schema").is_none());
    }
}
