//! The scripted answer every provider format renders: text pieces, tool
//! calls, usage and a finish reason, derived deterministically from the
//! request so tests can assert exact content.

use serde_json::{json, Map, Value};

pub const WORDS: &[&str] = &[
    "Hello",
    " from",
    " the",
    " Sluice",
    " mock",
    " provider",
    ".",
    " This",
    " answer",
    " is",
    " deterministic",
    " and",
    " streams",
    " word",
    " by",
    " word",
];

#[derive(Debug, Clone)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// Complete arguments as a JSON object text.
    pub arguments: String,
}

impl ToolCall {
    /// Argument text split into up to three pieces, as providers stream it.
    pub fn argument_pieces(&self) -> Vec<String> {
        let a = &self.arguments;
        if a.len() < 6 {
            return vec![a.clone()];
        }
        let cuts = [0, a.len() / 3, 2 * a.len() / 3, a.len()];
        let mut out = Vec::new();
        for w in cuts.windows(2) {
            let (mut s, mut e) = (w[0], w[1]);
            while !a.is_char_boundary(s) {
                s -= 1;
            }
            while !a.is_char_boundary(e) {
                e -= 1;
            }
            if e > s {
                out.push(a[s..e].to_string());
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
}

#[derive(Debug, Clone)]
pub struct Answer {
    pub model: String,
    pub text: Vec<String>,
    pub tool_calls: Vec<ToolCall>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub finish: Finish,
}

/// A tool the request offered: name and JSON-schema parameters.
pub struct OfferedTool {
    pub name: String,
    pub parameters: Value,
}

pub struct AnswerInput {
    pub model: String,
    pub body_len: usize,
    pub chunks: usize,
    pub max_tokens: Option<u64>,
    pub tools: Vec<OfferedTool>,
    /// The request forbids tool calls, or the last turn is a tool result.
    pub no_tool_call: bool,
    pub parallel_tools: usize,
}

pub fn build(input: AnswerInput) -> Answer {
    let prompt_tokens = (input.body_len as u64 / 4).max(1);
    if !input.tools.is_empty() && !input.no_tool_call {
        let calls: Vec<ToolCall> = input
            .tools
            .iter()
            .take(input.parallel_tools.max(1))
            .enumerate()
            .map(|(i, t)| ToolCall {
                id: format!("call_mock_{i}"),
                name: t.name.clone(),
                arguments: example_arguments(&t.parameters).to_string(),
            })
            .collect();
        let completion_tokens = calls
            .iter()
            .map(|c| c.argument_pieces().len() as u64 + 1)
            .sum();
        return Answer {
            model: input.model,
            text: Vec::new(),
            tool_calls: calls,
            prompt_tokens,
            completion_tokens,
            finish: Finish::ToolCalls,
        };
    }
    let mut n = input.chunks.max(1);
    let mut finish = Finish::Stop;
    if let Some(max) = input.max_tokens {
        if (max as usize) < n {
            n = max.max(1) as usize;
            finish = Finish::Length;
        }
    }
    let text: Vec<String> = (0..n).map(|i| WORDS[i % WORDS.len()].to_string()).collect();
    Answer {
        model: input.model,
        completion_tokens: text.len() as u64,
        text,
        tool_calls: Vec::new(),
        prompt_tokens,
        finish,
    }
}

/// Arguments that satisfy a simple JSON schema: one value per property.
pub fn example_arguments(schema: &Value) -> Value {
    let mut out = Map::new();
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, prop) in props {
            let ty = prop
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("string")
                .to_ascii_lowercase();
            let v = match ty.as_str() {
                "number" | "integer" => json!(42),
                "boolean" => json!(true),
                "array" => json!([]),
                "object" => json!({}),
                _ => json!("Paris"),
            };
            out.insert(name.clone(), v);
        }
    }
    Value::Object(out)
}

impl Answer {
    pub fn full_text(&self) -> String {
        self.text.concat()
    }
}
