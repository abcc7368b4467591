//! OpenAI Responses API wire types (the subset the gateway maps; the rest is
//! captured in `extra` so nothing is dropped silently).
//!
//! Input and output items share one flat shape ([`Item`]): the API tags
//! them with `type`, except the "easy" input message, which has only `role`
//! and `content`; a flat struct reads both without an untagged enum's
//! guessing.

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    pub model: String,
    #[serde(default)]
    pub input: Option<Input>,
    #[serde(default)]
    pub instructions: Option<String>,
    #[serde(default)]
    pub tools: Option<Vec<ToolDef>>,
    #[serde(default)]
    pub tool_choice: Option<Value>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub text: Option<TextConfig>,
    #[serde(default)]
    pub reasoning: Option<ReasoningConfig>,
    #[serde(default)]
    pub user: Option<String>,
    /// Stateful features: only a provider that keeps responses serves them.
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default)]
    pub previous_response_id: Option<String>,
    #[serde(default)]
    pub conversation: Option<Value>,
    /// Output options (`include_obfuscation`): nothing to carry.
    #[serde(default)]
    pub stream_options: Option<Value>,
    /// Extra output the client asks to be included (e.g.
    /// `reasoning.encrypted_content`): meaningful only at OpenAI.
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Input {
    Text(String),
    Items(Vec<Item>),
}

/// An input or output item: a message, a function call, its output, a
/// reasoning item, or a built-in tool's call (kept only as its `type`).
#[derive(Debug, Deserialize, Default)]
pub struct Item {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub content: Option<Content>,
    #[serde(default)]
    pub status: Option<String>,
    // function_call
    #[serde(default)]
    pub call_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub arguments: Option<String>,
    // function_call_output
    #[serde(default)]
    pub output: Option<Content>,
    // reasoning
    #[serde(default)]
    pub summary: Option<Vec<SummaryPart>>,
    #[serde(default)]
    pub encrypted_content: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// A content part, flat: `input_text`/`output_text` (`text`), `refusal`,
/// `input_image` (`image_url` or `file_id`), `input_file` (`file_data`,
/// `file_id`, `file_url`), and whatever else the API adds (its `type` is
/// kept for the warning that says it was not carried).
#[derive(Debug, Deserialize, Default)]
pub struct ContentPart {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default)]
    pub image_url: Option<String>,
    #[serde(default)]
    pub file_id: Option<String>,
    #[serde(default)]
    pub file_data: Option<String>,
    #[serde(default)]
    pub filename: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct SummaryPart {
    #[serde(default)]
    pub text: String,
}

#[derive(Debug, Deserialize)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub parameters: Option<Value>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct TextConfig {
    #[serde(default)]
    pub format: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ReasoningConfig {
    #[serde(default)]
    pub effort: Option<String>,
}

// ---- responses (read by the backend) ----

#[derive(Debug, Deserialize, Default)]
pub struct ResponseObject {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub created_at: Option<f64>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub output: Vec<Item>,
    #[serde(default)]
    pub usage: Option<Usage>,
    #[serde(default)]
    pub incomplete_details: Option<IncompleteDetails>,
    #[serde(default)]
    pub error: Option<ErrorObject>,
}

#[derive(Debug, Deserialize)]
pub struct IncompleteDetails {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
pub struct ErrorObject {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
    #[serde(default)]
    pub input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    pub output_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub struct InputDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy)]
pub struct OutputDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

/// One event of a Responses stream (the fields the decoder reads).
#[derive(Debug, Deserialize)]
pub struct StreamPayload {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub delta: Option<String>,
    #[serde(default)]
    pub item: Option<Item>,
    #[serde(default)]
    pub output_index: Option<u64>,
    #[serde(default)]
    pub item_id: Option<String>,
    #[serde(default)]
    pub response: Option<ResponseObject>,
    /// The `error` event: its fields at the top level (documented) or
    /// under `error` (as recorded).
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub error: Option<ErrorObject>,
}
