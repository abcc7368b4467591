//! OpenAI Chat Completions streams: chunks → canonical events (decoder) and
//! canonical events → chunks (encoder), one event at a time.

use serde::Serialize;

use crate::canonical::{ErrorClass, FinishReason, ProviderError, StreamEvent};
use crate::framing::Frame as SseEvent;
use crate::openai::response::{usage_from, usage_to};
use crate::openai::types::{self, Chunk};
use sluice_records::TokenUsage;

/// Pending argument text per tool index before its name arrived is bounded.
const MAX_PENDING_ARGS: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    /// Per tool index: started, and arguments seen before the start.
    tools: Vec<(bool, String)>,
    finished: bool,
    done: bool,
}

impl Decoder {
    fn tool_delta(&mut self, tc: types::ToolCallDelta, pos: usize, out: &mut Vec<StreamEvent>) {
        let index = tc.index.unwrap_or(pos);
        if index > 1024 {
            return; // not a real response; refuse to grow state
        }
        if self.tools.len() <= index {
            self.tools
                .resize_with(index.saturating_add(1), Default::default);
        }
        let (name, args) = match tc.function {
            Some(f) => (
                f.name.filter(|n| !n.is_empty()),
                f.arguments.unwrap_or_default(),
            ),
            None => (None, String::new()),
        };
        let Some(slot) = self.tools.get_mut(index) else {
            return;
        };
        if !slot.0 {
            if let Some(name) = name {
                slot.0 = true;
                // Some providers send "" ids on later deltas; only a
                // non-empty id on the first delta counts.
                let id = tc
                    .id
                    .filter(|i| !i.is_empty())
                    .unwrap_or_else(|| crate::canonical::synthesized_call_id(index, &name));
                out.push(StreamEvent::ToolCallStart { index, id, name });
                let pending = std::mem::take(&mut slot.1);
                if !pending.is_empty() {
                    out.push(StreamEvent::ToolCallArgs {
                        index,
                        fragment: pending,
                    });
                }
            } else {
                if slot.1.len().saturating_add(args.len()) <= MAX_PENDING_ARGS {
                    slot.1.push_str(&args);
                }
                return;
            }
        }
        if !args.is_empty() {
            out.push(StreamEvent::ToolCallArgs {
                index,
                fragment: args,
            });
        }
    }
}

impl crate::backend::StreamDecoder for Decoder {
    fn decode(&mut self, ev: &SseEvent<'_>, out: &mut Vec<StreamEvent>) {
        let Some(data) = ev.data.as_deref() else {
            return;
        };
        if data == b"[DONE]" {
            self.done = true;
            out.push(StreamEvent::Done);
            return;
        }
        let Some(chunk) = crate::canonical::parse_event::<Chunk>(data, out) else {
            return;
        };
        if let Some(e) = chunk.error {
            out.push(StreamEvent::Error(ProviderError {
                status: 500,
                kind: ErrorClass::Server,
                message: e.message.unwrap_or_else(|| "provider stream error".into()),
            }));
            return;
        }
        if !self.started && (!chunk.id.is_empty() || !chunk.choices.is_empty()) {
            self.started = true;
            out.push(StreamEvent::Start {
                id: chunk.id.clone(),
                model: chunk.model.clone(),
            });
        }
        for choice in chunk.choices {
            if let Some(d) = choice.delta {
                if let Some(r) = d
                    .reasoning_content
                    .or(d.reasoning)
                    .filter(|s| !s.is_empty())
                {
                    out.push(StreamEvent::Thinking(r));
                }
                if let Some(t) = d.content.filter(|s| !s.is_empty()) {
                    out.push(StreamEvent::Text(t));
                }
                for (pos, tc) in d.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    self.tool_delta(tc, pos, out);
                }
            }
            if let Some(f) = choice.finish_reason.filter(|s| !s.is_empty()) {
                self.finished = true;
                out.push(StreamEvent::Finish {
                    reason: FinishReason::from_openai(&f),
                    stop_sequence: None,
                });
            }
        }
        if let Some(u) = chunk.usage.or_else(|| chunk.x_groq.and_then(|x| x.usage)) {
            out.push(StreamEvent::Usage(usage_from(&u)));
        }
    }

    /// End of the upstream byte stream.
    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        crate::canonical::end_stream(&mut self.done, self.finished, out);
    }
}

// ---- encoder ----

/// A chunk's members before its choices (`Encoder::write`); the chunk is
/// `{id, object, created, model, choices[, usage]}` in that order.
#[derive(Serialize)]
struct OutHead<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [(); 0],
}

#[derive(Serialize)]
struct OutChoice<'a> {
    index: u32,
    delta: OutDelta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct OutDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[OutToolDelta<'a>; 1]>,
}

#[derive(Serialize)]
struct OutToolDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    arguments: &'a str,
}

#[derive(Debug)]
pub struct Encoder {
    id: String,
    model: String,
    created: u64,
    include_usage: bool,
    started: bool,
    usage: Option<TokenUsage>,
    closed: bool,
    /// `data: {"id":…,"model":…,"choices":` as every chunk begins.
    head: Vec<u8>,
}

impl Encoder {
    pub fn new(model: &str, created: u64, include_usage: bool) -> Self {
        Encoder {
            id: String::new(),
            model: model.to_string(),
            created,
            include_usage,
            started: false,
            usage: None,
            closed: false,
            head: Vec::new(),
        }
    }

    fn chunk(&mut self, out: &mut Vec<u8>, delta: OutDelta<'_>, finish: Option<&'static str>) {
        if let (
            OutDelta {
                role: None,
                content: Some(text),
                reasoning_content: None,
                tool_calls: None,
            },
            None,
        ) = (&delta, finish)
        {
            self.text_chunk(out, text);
            return;
        }
        let choices = [OutChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish,
        }];
        self.write(out, &choices, None);
    }

    /// A text delta, the chunk nearly every event of a stream becomes:
    /// written from constant bytes around the escaped text, byte for byte
    /// what `write` makes of it (a test checks), without escaping the
    /// member names again per event.
    fn text_chunk(&mut self, out: &mut Vec<u8>, text: &str) {
        self.ensure_head();
        out.extend_from_slice(&self.head);
        out.extend_from_slice(br#"[{"index":0,"delta":{"content":"#);
        let _ = serde_json::to_writer(&mut *out, text);
        out.extend_from_slice(b"},\"logprobs\":null,\"finish_reason\":null}]}\n\n");
    }

    /// Every chunk starts with the same id, object, created and model:
    /// written once, then copied (escaping them on each event was a fifth
    /// of a translated stream's instructions). Fixed once the stream has
    /// started; before that the id may still change.
    fn ensure_head(&mut self) {
        if !self.head.is_empty() && self.started {
            return;
        }
        let head = OutHead {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            choices: [(); 0],
        };
        self.head.clear();
        self.head.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut self.head, &head);
        // `…,"choices":[]}` → `…,"choices":`: the chunk's own follow.
        self.head.truncate(self.head.len().saturating_sub(3));
    }

    fn write(&mut self, out: &mut Vec<u8>, choices: &[OutChoice<'_>], usage: Option<types::Usage>) {
        self.ensure_head();
        out.extend_from_slice(&self.head);
        let _ = serde_json::to_writer(&mut *out, choices);
        if let Some(u) = usage {
            out.extend_from_slice(b",\"usage\":");
            let _ = serde_json::to_writer(&mut *out, &u);
        }
        out.extend_from_slice(b"}\n\n");
    }

    fn ensure_started(&mut self, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            if self.id.is_empty() {
                self.id = format!("chatcmpl-sluice-{}", self.created);
            }
            self.chunk(
                out,
                OutDelta {
                    role: Some("assistant"),
                    content: Some(""),
                    ..OutDelta::default()
                },
                None,
            );
        }
    }
}

impl crate::api::StreamEncoder for Encoder {
    fn encode(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.closed {
            return;
        }
        match ev {
            StreamEvent::Start { id, .. } => {
                if !self.started && !id.is_empty() {
                    self.id = if id.starts_with("chatcmpl") {
                        id.clone()
                    } else {
                        format!("chatcmpl-{id}")
                    };
                }
                self.ensure_started(out);
            }
            StreamEvent::Text(t) => {
                self.ensure_started(out);
                self.chunk(
                    out,
                    OutDelta {
                        content: Some(t),
                        ..OutDelta::default()
                    },
                    None,
                );
            }
            StreamEvent::Thinking(t) => {
                self.ensure_started(out);
                self.chunk(
                    out,
                    OutDelta {
                        reasoning_content: Some(t),
                        ..OutDelta::default()
                    },
                    None,
                );
            }
            StreamEvent::ThinkingSignature(_) => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_started(out);
                self.chunk(
                    out,
                    OutDelta {
                        tool_calls: Some([OutToolDelta {
                            index: *index,
                            id: Some(id),
                            kind: Some("function"),
                            function: OutFunction {
                                name: Some(name),
                                arguments: "",
                            },
                        }]),
                        ..OutDelta::default()
                    },
                    None,
                );
            }
            StreamEvent::ToolCallArgs { index, fragment } => {
                self.ensure_started(out);
                self.chunk(
                    out,
                    OutDelta {
                        tool_calls: Some([OutToolDelta {
                            index: *index,
                            id: None,
                            kind: None,
                            function: OutFunction {
                                name: None,
                                arguments: fragment,
                            },
                        }]),
                        ..OutDelta::default()
                    },
                    None,
                );
            }
            StreamEvent::Finish { reason, .. } => {
                self.ensure_started(out);
                self.chunk(out, OutDelta::default(), Some(reason.openai()));
            }
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Error(e) => {
                let (_, body) = crate::openai::response::encode_error(e);
                crate::framing::sse::write_event(out, None, &body);
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.closed = true;
            }
            StreamEvent::Done => {
                if self.include_usage {
                    if let Some(u) = self.usage {
                        self.ensure_started(out);
                        self.write(out, &[], Some(usage_to(&u)));
                    }
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                self.closed = true;
            }
        }
    }
}

#[cfg(test)]
mod chunk_head_tests {
    use super::*;
    use crate::api::StreamEncoder;
    use crate::canonical::FinishReason;

    /// Chunks share a head written once: each is still one JSON object with
    /// OpenAI's member order, the id settled by `Start`, usage last.
    #[test]
    fn every_chunk_is_whole_json_in_openai_order() {
        let mut e = Encoder::new("m\"odel", 7, true);
        let mut out = Vec::new();
        for ev in [
            StreamEvent::Start {
                id: "abc".into(),
                model: "up".into(),
            },
            StreamEvent::Text("hi \"there\"".into()),
            StreamEvent::Finish {
                reason: FinishReason::Stop,
                stop_sequence: None,
            },
            StreamEvent::Usage(TokenUsage {
                prompt_tokens: 3,
                completion_tokens: 2,
                ..TokenUsage::default()
            }),
            StreamEvent::Done,
        ] {
            e.encode(&ev, &mut out);
        }
        let text = String::from_utf8(out).unwrap();
        let chunks: Vec<serde_json::Value> = text
            .split("\n\n")
            .filter_map(|f| f.strip_prefix("data: "))
            .filter(|d| *d != "[DONE]")
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(chunks.len() >= 3, "{text}");
        for c in &chunks {
            assert_eq!(c["id"], "chatcmpl-abc");
            assert_eq!(c["model"], "m\"odel");
            assert_eq!(c["created"], 7);
            assert_eq!(c["object"], "chat.completion.chunk");
        }
        assert_eq!(chunks[1]["choices"][0]["delta"]["content"], "hi \"there\"");
        let last = chunks.last().unwrap();
        assert_eq!(last["usage"]["prompt_tokens"], 3);
        assert_eq!(last["choices"], serde_json::json!([]));
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with(r#"data: {"id":"chatcmpl-abc","object":"chat.completion.chunk","created":7,"model":"m\"odel","choices":[{"#),
            "{first}"
        );
        assert!(text.ends_with("data: [DONE]\n\n"));
    }

    /// The text fast path writes exactly what the general one does.
    #[test]
    fn text_chunks_are_the_general_encoding_byte_for_byte() {
        for text in [
            "",
            "plain",
            "quote \" back \\ nl \n tab \t ctl \u{1} é 🚀",
            "</script>",
        ] {
            let mut e = Encoder::new("m", 1, false);
            e.started = true;
            e.id = "chatcmpl-x".into();
            let (mut fast, mut general) = (Vec::new(), Vec::new());
            e.text_chunk(&mut fast, text);
            let choices = [OutChoice {
                index: 0,
                delta: OutDelta {
                    content: Some(text),
                    ..OutDelta::default()
                },
                logprobs: None,
                finish_reason: None,
            }];
            e.write(&mut general, &choices, None);
            assert_eq!(
                String::from_utf8(fast).unwrap(),
                String::from_utf8(general).unwrap()
            );
        }
    }
}
