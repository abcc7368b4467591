//! Gemini `streamGenerateContent?alt=sse` streams ↔ canonical events.
//!
//! Decoding: text and thoughts map one to one; function calls arrive whole
//! (and are split into a start plus one argument fragment) or, on Gemini 3,
//! as `partialArgs` assembled by JSON path until the call completes.
//! Encoding: Gemini clients expect function calls whole, so argument
//! fragments are gathered (bounded) and emitted with the final chunk.

use serde_json::{json, Value};

use crate::canonical::{synthesized_call_id, FinishReason, ProviderError, StreamEvent};
use crate::framing::Frame as SseEvent;
use crate::gemini::json_path;
use crate::gemini::response::{class_from_status, error_body, usage_from, usage_to};
use crate::gemini::types::{Candidate, Content, FunctionCall, GPart, GenerateResponse};
use sluice_records::TokenUsage;

/// Bound on arguments gathered for one call (either direction).
const MAX_ARGS_BYTES: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    calls: usize,
    /// A Gemini 3 call whose arguments are still streaming.
    partial: Option<(usize, Value)>,
    finished: bool,
    done: bool,
}

impl Decoder {
    fn part(&mut self, p: GPart, out: &mut Vec<StreamEvent>) {
        if let Some(t) = p.text {
            if !t.is_empty() {
                self.close_partial(out);
                out.push(if p.thought == Some(true) {
                    StreamEvent::Thinking(t)
                } else {
                    StreamEvent::Text(t)
                });
            }
            return;
        }
        let Some(fc) = p.function_call else {
            return;
        };
        if let Some(name) = fc.name {
            self.close_partial(out);
            let index = self.calls;
            self.calls = self.calls.saturating_add(1);
            let id = fc.id.unwrap_or_else(|| synthesized_call_id(index, &name));
            out.push(StreamEvent::ToolCallStart { index, id, name });
            if fc.will_continue == Some(true) {
                self.partial = Some((index, fc.args.unwrap_or(Value::Null)));
            } else {
                let args = fc.args.unwrap_or_else(|| json!({}));
                out.push(StreamEvent::ToolCallArgs {
                    index,
                    fragment: args.to_string(),
                });
            }
            return;
        }
        // A continuation of the call in progress.
        if let Some((_, args)) = &mut self.partial {
            for pa in fc.partial_args.unwrap_or_default() {
                let v = if let Some(s) = pa.string_value {
                    Value::String(s)
                } else if let Some(n) = pa.number_value {
                    json!(n)
                } else if let Some(b) = pa.bool_value {
                    Value::Bool(b)
                } else {
                    Value::Null
                };
                json_path::apply(args, &pa.json_path, v);
            }
            if fc.will_continue != Some(true) {
                self.close_partial(out);
            }
        }
    }

    fn close_partial(&mut self, out: &mut Vec<StreamEvent>) {
        if let Some((index, args)) = self.partial.take() {
            let args = if args.is_null() { json!({}) } else { args };
            out.push(StreamEvent::ToolCallArgs {
                index,
                fragment: args.to_string(),
            });
        }
    }
}

impl crate::backend::StreamDecoder for Decoder {
    fn decode(&mut self, ev: &SseEvent<'_>, out: &mut Vec<StreamEvent>) {
        let Some(data) = ev.data.as_deref() else {
            return;
        };
        let Some(r) = crate::canonical::parse_event::<GenerateResponse>(data, out) else {
            return;
        };
        if let Some(e) = r.error {
            let code = e.code.unwrap_or(500);
            out.push(StreamEvent::Error(ProviderError {
                status: code,
                kind: class_from_status(e.status.as_deref().unwrap_or(""), code),
                message: e.message,
            }));
            return;
        }
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: r.response_id.clone().unwrap_or_default(),
                model: r.model_version.clone().unwrap_or_default(),
            });
        }
        let mut finish = None;
        if let Some(c) = r.candidates.into_iter().next() {
            for p in c.content.map(|c| c.parts).unwrap_or_default() {
                self.part(p, out);
            }
            finish = c.finish_reason;
        }
        if let Some(u) = r.usage_metadata.filter(|u| u.prompt_token_count > 0) {
            out.push(StreamEvent::Usage(usage_from(&u)));
        }
        if let Some(f) = finish {
            self.close_partial(out);
            self.finished = true;
            let reason = match FinishReason::from_gemini(&f) {
                FinishReason::Stop if self.calls > 0 => FinishReason::ToolCalls,
                other => other,
            };
            out.push(StreamEvent::Finish {
                reason,
                stop_sequence: None,
            });
        }
    }

    /// Gemini streams end when the connection does; there is no terminator.
    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.done {
            self.close_partial(out);
        }
        crate::canonical::end_stream(&mut self.done, self.finished, out);
    }
}

// ---- encoder ----

#[derive(Debug)]
pub struct Encoder {
    model: String,
    id: String,
    /// (id, name, arguments so far) per tool call, emitted whole at the end.
    calls: Vec<(String, String, String)>,
    finish: Option<FinishReason>,
    usage: Option<TokenUsage>,
    closed: bool,
}

impl Encoder {
    pub fn new(model: &str) -> Self {
        Encoder {
            model: model.to_string(),
            id: String::new(),
            calls: Vec::new(),
            finish: None,
            usage: None,
            closed: false,
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, parts: Vec<GPart>, finish: Option<&str>, last: bool) {
        let r = GenerateResponse {
            candidates: vec![Candidate {
                content: (!parts.is_empty()).then(|| Content {
                    role: Some("model".into()),
                    parts,
                }),
                finish_reason: finish.map(str::to_string),
                index: 0,
            }],
            usage_metadata: if last {
                self.usage.as_ref().map(usage_to)
            } else {
                None
            },
            model_version: Some(self.model.clone()),
            response_id: (!self.id.is_empty()).then(|| self.id.clone()),
            error: None,
        };
        out.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut *out, &r);
        out.extend_from_slice(b"\r\n\r\n");
    }
}

impl crate::api::StreamEncoder for Encoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match ev {
            StreamEvent::Start { id, .. } => self.id.clone_from(id),
            StreamEvent::Text(t) => self.chunk(
                out,
                vec![GPart {
                    text: Some(t.clone()),
                    ..GPart::default()
                }],
                None,
                false,
            ),
            StreamEvent::Thinking(t) => self.chunk(
                out,
                vec![GPart {
                    text: Some(t.clone()),
                    thought: Some(true),
                    ..GPart::default()
                }],
                None,
                false,
            ),
            StreamEvent::ThinkingSignature(_) => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                if self.calls.len() <= *index && *index < 1024 {
                    self.calls
                        .resize(index.saturating_add(1), Default::default());
                }
                if let Some(c) = self.calls.get_mut(*index) {
                    *c = (id.clone(), name.clone(), String::new());
                }
            }
            StreamEvent::ToolCallArgs { index, fragment } => {
                if let Some(c) = self.calls.get_mut(*index) {
                    if c.2.len().saturating_add(fragment.len()) <= MAX_ARGS_BYTES {
                        c.2.push_str(fragment);
                    }
                }
            }
            StreamEvent::Finish { reason, .. } => self.finish = Some(*reason),
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Error(e) => {
                let (code, _) = crate::gemini::response::encode_error(e);
                crate::framing::sse::write_event(out, None, &error_body(code, e.kind, &e.message));
                self.closed = true;
            }
            StreamEvent::Done => {
                let parts = self
                    .calls
                    .iter()
                    .filter(|c| !c.1.is_empty())
                    .map(|(id, name, args)| GPart {
                        function_call: Some(FunctionCall {
                            id: Some(id.clone()),
                            name: Some(name.clone()),
                            args: Some(
                                serde_json::from_str::<Value>(if args.is_empty() {
                                    "{}"
                                } else {
                                    args
                                })
                                .unwrap_or_else(|_| json!({})),
                            ),
                            ..FunctionCall::default()
                        }),
                        ..GPart::default()
                    })
                    .collect();
                let finish = self.finish.unwrap_or(FinishReason::Stop).gemini();
                self.chunk(out, parts, Some(finish), true);
                self.closed = true;
            }
        }
    }
}
