//! Anthropic Messages streams: events → canonical (decoder) and canonical →
//! events with proper content-block bookkeeping (encoder).

use std::collections::HashMap;

use serde::Serialize;

use crate::anthropic::response::{class_from_type, error_body, message_id, usage_from, usage_to};
use crate::anthropic::types::{BlockDelta, FlatDelta, StartBlock, StreamPayload};
use crate::canonical::{FinishReason, ProviderError, StreamEvent};
use crate::framing::Frame as SseEvent;
use sluice_records::TokenUsage;

#[derive(Debug, Default)]
pub struct Decoder {
    /// Anthropic block index → canonical tool-call index.
    tool_blocks: HashMap<usize, usize>,
    tools: usize,
    /// `message_start` usage (input side), merged with later deltas.
    usage: TokenUsage,
    finished: bool,
    done: bool,
}

impl Decoder {
    /// Usage as reported so far (used by passthrough metering).
    pub fn usage(&self) -> TokenUsage {
        self.usage
    }
}

impl Decoder {
    fn delta(&mut self, index: usize, delta: BlockDelta, out: &mut Vec<StreamEvent>) {
        match delta {
            BlockDelta::TextDelta { text } => out.push(StreamEvent::Text(text)),
            BlockDelta::ThinkingDelta { thinking } => out.push(StreamEvent::Thinking(thinking)),
            BlockDelta::SignatureDelta { signature } => {
                out.push(StreamEvent::ThinkingSignature(signature))
            }
            BlockDelta::InputJsonDelta { partial_json } => {
                if let Some(&t) = self.tool_blocks.get(&index) {
                    if !partial_json.is_empty() {
                        out.push(StreamEvent::ToolCallArgs {
                            index: t,
                            fragment: partial_json,
                        });
                    }
                }
            }
            BlockDelta::Other => {}
        }
    }
}

impl crate::backend::StreamDecoder for Decoder {
    fn decode(&mut self, ev: &SseEvent<'_>, out: &mut Vec<StreamEvent>) {
        let Some(data) = ev.data.as_deref() else {
            return;
        };
        // Nearly every event of a stream is a delta: read it flat (see
        // `FlatDelta`); anything it does not take goes the general way.
        if ev.event == Some(b"content_block_delta".as_slice()) {
            if let Some((index, delta)) = serde_json::from_slice::<FlatDelta>(data)
                .ok()
                .and_then(FlatDelta::into_delta)
            {
                self.delta(index, delta, out);
                return;
            }
        }
        let Some(payload) = crate::canonical::parse_event::<StreamPayload>(data, out) else {
            return;
        };
        match payload {
            StreamPayload::MessageStart { message } => {
                // Usage first: an Anthropic encoder writes `message_start`
                // on Start and must already know the input tokens.
                if let Some(u) = message.usage {
                    self.usage = usage_from(&u);
                    out.push(StreamEvent::Usage(self.usage));
                }
                out.push(StreamEvent::Start {
                    id: message.id,
                    model: message.model,
                });
            }
            StreamPayload::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                StartBlock::Text { text } if !text.is_empty() => out.push(StreamEvent::Text(text)),
                StartBlock::Thinking { thinking } if !thinking.is_empty() => {
                    out.push(StreamEvent::Thinking(thinking))
                }
                StartBlock::ToolUse { id, name } => {
                    let t = self.tools;
                    self.tools = self.tools.saturating_add(1);
                    self.tool_blocks.insert(index, t);
                    out.push(StreamEvent::ToolCallStart { index: t, id, name });
                }
                _ => {}
            },
            StreamPayload::ContentBlockDelta { index, delta } => self.delta(index, delta, out),
            StreamPayload::MessageDelta { delta, usage } => {
                if let Some(u) = usage {
                    // Cumulative: set, never add. Input-side counts may be
                    // absent here; keep those from message_start then.
                    let d = usage_from(&u);
                    self.usage.completion_tokens = d.completion_tokens;
                    if d.prompt_tokens > 0 {
                        self.usage.prompt_tokens = d.prompt_tokens;
                        self.usage.cached_tokens = d.cached_tokens;
                        self.usage.cache_creation_tokens = d.cache_creation_tokens;
                    }
                    out.push(StreamEvent::Usage(self.usage));
                }
                if let Some(r) = delta.stop_reason {
                    self.finished = true;
                    out.push(StreamEvent::Finish {
                        reason: FinishReason::from_anthropic(&r),
                        stop_sequence: delta.stop_sequence,
                    });
                }
            }
            StreamPayload::MessageStop => {
                self.done = true;
                out.push(StreamEvent::Done);
            }
            StreamPayload::Error { error } => out.push(StreamEvent::Error(ProviderError {
                status: 500,
                kind: class_from_type(&error.kind, 500),
                message: error.message,
            })),
            StreamPayload::ContentBlockStop { .. }
            | StreamPayload::Ping
            | StreamPayload::Unknown => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        crate::canonical::end_stream(&mut self.done, self.finished, out);
    }
}

// ---- encoder ----

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
    Tool(usize),
}

#[derive(Debug)]
pub struct Encoder {
    model: String,
    started: bool,
    open: Option<Open>,
    next_block: usize,
    finish: Option<(FinishReason, Option<String>)>,
    usage: Option<TokenUsage>,
    closed: bool,
}

#[derive(Serialize)]
struct DeltaEvent<D: Serialize> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: usize,
    delta: D,
}

#[derive(Serialize)]
struct TypedText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thinking: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_json: Option<&'a str>,
}

impl<'a> TypedText<'a> {
    fn new(kind: &'static str) -> Self {
        TypedText {
            kind,
            text: None,
            thinking: None,
            signature: None,
            partial_json: None,
        }
    }
}

fn event<T: Serialize>(out: &mut Vec<u8>, name: &str, payload: &T) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    let _ = serde_json::to_writer(&mut *out, payload);
    out.extend_from_slice(b"\n\n");
}

impl Encoder {
    pub fn new(model: &str) -> Self {
        Encoder {
            model: model.to_string(),
            started: false,
            open: None,
            next_block: 0,
            finish: None,
            usage: None,
            closed: false,
        }
    }

    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let usage = usage_to(&self.usage.unwrap_or_default());
        event(
            out,
            "message_start",
            &serde_json::json!({"type": "message_start", "message": {
                "id": message_id(id), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": usage}}),
        );
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            event(
                out,
                "content_block_stop",
                &serde_json::json!({"type": "content_block_stop", "index": self.next_block.saturating_sub(1)}),
            );
        }
    }

    fn open_block(&mut self, kind: Open, block: serde_json::Value, out: &mut Vec<u8>) {
        self.close_block(out);
        event(
            out,
            "content_block_start",
            &serde_json::json!({"type": "content_block_start", "index": self.next_block,
                                "content_block": block}),
        );
        self.next_block = self.next_block.saturating_add(1);
        self.open = Some(kind);
    }

    fn delta(&self, out: &mut Vec<u8>, d: TypedText<'_>) {
        event(
            out,
            "content_block_delta",
            &DeltaEvent {
                kind: "content_block_delta",
                index: self.next_block.saturating_sub(1),
                delta: d,
            },
        );
    }
}

impl crate::api::StreamEncoder for Encoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        if !matches!(ev, StreamEvent::Usage(_) | StreamEvent::Start { .. }) {
            self.start("", out);
        }
        match ev {
            StreamEvent::Start { id, .. } => self.start(id, out),
            StreamEvent::Text(t) => {
                if self.open != Some(Open::Text) {
                    self.open_block(
                        Open::Text,
                        serde_json::json!({"type": "text", "text": ""}),
                        out,
                    );
                }
                let mut d = TypedText::new("text_delta");
                d.text = Some(t);
                self.delta(out, d);
            }
            StreamEvent::Thinking(t) => {
                if self.open != Some(Open::Thinking) {
                    self.open_block(
                        Open::Thinking,
                        serde_json::json!({"type": "thinking", "thinking": ""}),
                        out,
                    );
                }
                let mut d = TypedText::new("thinking_delta");
                d.thinking = Some(t);
                self.delta(out, d);
            }
            StreamEvent::ThinkingSignature(s) => {
                if self.open == Some(Open::Thinking) {
                    let mut d = TypedText::new("signature_delta");
                    d.signature = Some(s);
                    self.delta(out, d);
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.open_block(
                    Open::Tool(*index),
                    serde_json::json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                    out,
                );
            }
            StreamEvent::ToolCallArgs { index, fragment } => {
                // Anthropic blocks cannot interleave; providers that stream
                // tool calls one after another (all of them in practice) map
                // exactly. Arguments for a closed block cannot be expressed.
                if self.open == Some(Open::Tool(*index)) {
                    let mut d = TypedText::new("input_json_delta");
                    d.partial_json = Some(fragment);
                    self.delta(out, d);
                }
            }
            StreamEvent::Finish {
                reason,
                stop_sequence,
            } => self.finish = Some((*reason, stop_sequence.clone())),
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Error(e) => {
                self.close_block(out);
                let body = error_body(e.kind, &e.message);
                crate::framing::sse::write_event(out, Some("error"), &body);
                self.closed = true;
            }
            StreamEvent::Done => {
                self.close_block(out);
                let (reason, seq) = self.finish.take().unwrap_or((FinishReason::Stop, None));
                let usage = usage_to(&self.usage.unwrap_or_default());
                event(
                    out,
                    "message_delta",
                    &serde_json::json!({"type": "message_delta",
                        "delta": {"stop_reason": reason.anthropic(), "stop_sequence": seq},
                        "usage": usage}),
                );
                event(
                    out,
                    "message_stop",
                    &serde_json::json!({"type": "message_stop"}),
                );
                self.closed = true;
            }
        }
    }
}
