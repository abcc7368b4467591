//! The dialect-neutral model every translation goes through: one decoder and
//! one encoder per dialect instead of a converter per pair. The bottom of the
//! crate: it imports nothing of the dialects, the seams or the flow.
//!
//! Requests and whole responses are trees; streams are sequences of
//! [`StreamEvent`]s that each decoder produces and each encoder consumes, one
//! upstream event at a time.

use serde_json::Value;

use sluice_records::TokenUsage;

pub mod embeddings;
pub mod parts;
pub mod warnings;

pub use warnings::Warnings;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Image(ImageSource),
    /// An assistant's call of a tool. `arguments` is JSON object text.
    ToolCall {
        id: String,
        name: String,
        arguments: String,
    },
    /// The caller's answer to a tool call.
    ToolResult {
        call_id: String,
        /// Tool name (Gemini needs it; resolved from history when absent).
        name: Option<String>,
        content: Vec<Part>,
        is_error: bool,
    },
    /// Model reasoning; `signature` lets Anthropic verify it on the way back.
    Thinking {
        text: String,
        signature: Option<String>,
    },
    RedactedThinking(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub description: Option<String>,
    /// JSON schema of the arguments object.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    Auto,
    None,
    /// Must call some tool.
    Required,
    Named(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        strict: Option<bool>,
    },
}

/// The effort level an OpenAI-style API gets for a thinking budget.
pub fn effort_for_budget(budget: u64) -> &'static str {
    match budget {
        0..=2048 => "low",
        2049..=16384 => "medium",
        _ => "high",
    }
}

/// Reasoning ("thinking") requested by the caller.
#[derive(Debug, Clone, PartialEq)]
pub enum Reasoning {
    /// A token budget (Anthropic `thinking.budget_tokens`, Gemini `thinkingBudget`).
    Budget(u64),
    /// An effort level (OpenAI `reasoning_effort`).
    Effort(String),
    Disabled,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Request {
    pub model: String,
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<Tool>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u64>,
    pub stop: Vec<String>,
    pub stream: bool,
    /// The caller wants a usage report at the end of an OpenAI stream.
    pub stream_usage: bool,
    pub response_format: Option<ResponseFormat>,
    pub reasoning: Option<Reasoning>,
    pub n: Option<u64>,
    pub user: Option<String>,
    /// Fields of the caller's dialect the model has no place for; they are
    /// reported in `x-sluice-warnings` (or the request rejected).
    pub unmapped: Vec<String>,
    /// What only a provider of the caller's own wire can serve (stored
    /// state, built-in tools, file or audio inputs), each named for the
    /// error: passed through it works; translated, the request is refused
    /// with a 400 rather than answered without it.
    pub untranslatable: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    StopSequence,
    Length,
    ToolCalls,
    ContentFilter,
    /// Ended for a reason the dialects do not share.
    Other,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Response {
    pub id: String,
    pub model: String,
    pub created: u64,
    pub parts: Vec<Part>,
    pub finish: Option<FinishReason>,
    pub stop_sequence: Option<String>,
    pub usage: Option<TokenUsage>,
}

/// One step of a response stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The response begins.
    Start {
        id: String,
        model: String,
    },
    Text(String),
    Thinking(String),
    /// Signature of the thinking just streamed.
    ThinkingSignature(String),
    /// A tool call begins; `index` counts tool calls from 0 in this response.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A piece of the arguments JSON of tool call `index`.
    ToolCallArgs {
        index: usize,
        fragment: String,
    },
    Finish {
        reason: FinishReason,
        stop_sequence: Option<String>,
    },
    /// Usage so far. Cumulative: the latest replaces earlier ones.
    Usage(TokenUsage),
    /// The provider reported an error mid-stream.
    Error(ProviderError),
    /// The response is complete.
    Done,
}

/// An error a provider returned, as the gateway understood it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderError {
    pub status: u16,
    pub kind: ErrorClass,
    pub message: String,
}

impl ProviderError {
    /// An upstream event the decoder could not parse.
    pub fn malformed_event() -> Self {
        ProviderError {
            status: 502,
            kind: ErrorClass::Server,
            message: "The provider sent a malformed stream event.".into(),
        }
    }

    /// The upstream stream ended without finishing the response.
    pub fn ended_early() -> Self {
        ProviderError {
            status: 502,
            kind: ErrorClass::Server,
            message: "The provider's stream ended before the response was complete.".into(),
        }
    }
}

/// Parses one upstream event's JSON payload; a payload that does not parse
/// becomes an error event (the stream then ends cleanly) instead of a panic.
pub fn parse_event<'a, T: serde::Deserialize<'a>>(
    data: &'a [u8],
    out: &mut Vec<StreamEvent>,
) -> Option<T> {
    match serde_json::from_slice(data) {
        Ok(v) => Some(v),
        Err(_) => {
            out.push(StreamEvent::Error(ProviderError::malformed_event()));
            None
        }
    }
}

/// End-of-stream handling shared by the stream decoders: once, an error
/// event unless the provider finished the response, then `Done`.
pub fn end_stream(done: &mut bool, finished: bool, out: &mut Vec<StreamEvent>) {
    if !*done {
        *done = true;
        if !finished {
            out.push(StreamEvent::Error(ProviderError::ended_early()));
        }
        out.push(StreamEvent::Done);
    }
}

/// The shared vocabulary of provider error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidRequest,
    Authentication,
    PermissionDenied,
    NotFound,
    RequestTooLarge,
    RateLimited,
    Overloaded,
    Server,
}

impl ErrorClass {
    pub fn from_status(status: u16) -> Self {
        match status {
            400 | 422 => ErrorClass::InvalidRequest,
            401 => ErrorClass::Authentication,
            403 => ErrorClass::PermissionDenied,
            404 => ErrorClass::NotFound,
            413 => ErrorClass::RequestTooLarge,
            429 => ErrorClass::RateLimited,
            503 | 529 => ErrorClass::Overloaded,
            _ => ErrorClass::Server,
        }
    }
}

impl FinishReason {
    pub fn openai(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::StopSequence | FinishReason::Other => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
        }
    }

    pub fn anthropic(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::Other => "end_turn",
            FinishReason::StopSequence => "stop_sequence",
            FinishReason::Length => "max_tokens",
            FinishReason::ToolCalls => "tool_use",
            FinishReason::ContentFilter => "refusal",
        }
    }

    pub fn gemini(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::StopSequence | FinishReason::ToolCalls => "STOP",
            FinishReason::Length => "MAX_TOKENS",
            FinishReason::ContentFilter => "SAFETY",
            FinishReason::Other => "OTHER",
        }
    }

    pub fn from_openai(s: &str) -> Self {
        match s {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "tool_calls" | "function_call" => FinishReason::ToolCalls,
            "content_filter" => FinishReason::ContentFilter,
            _ => FinishReason::Other,
        }
    }

    pub fn from_anthropic(s: &str) -> Self {
        match s {
            "end_turn" | "pause_turn" => FinishReason::Stop,
            "stop_sequence" => FinishReason::StopSequence,
            "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
            "tool_use" => FinishReason::ToolCalls,
            "refusal" => FinishReason::ContentFilter,
            _ => FinishReason::Other,
        }
    }

    pub fn from_gemini(s: &str) -> Self {
        match s {
            "STOP" => FinishReason::Stop,
            "MAX_TOKENS" => FinishReason::Length,
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII"
            | "IMAGE_SAFETY" => FinishReason::ContentFilter,
            _ => FinishReason::Other,
        }
    }
}

/// Tool-call ids for dialects that have none (Gemini): stable per response.
pub fn synthesized_call_id(index: usize, name: &str) -> String {
    format!("call_{index}_{name}")
}
