//! OpenAI Responses streams: `response.*` events → canonical (decoder),
//! canonical → the full event sequence with sequence numbers (encoder), and
//! the passthrough meter (usage from the closing event only).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::response::{
    error_from, finish_of, function_call_item, item_id, message_item, output_text, reasoning_item,
    response_id, response_object, status_of, usage_from,
};
use super::types::{StreamPayload, Usage};
use crate::backend::FrameUsage;
use crate::canonical::{FinishReason, StreamEvent};
use crate::framing::Frame;
use crate::needle::Needle;
use sluice_records::TokenUsage;

// ---- decoder ----

#[derive(Debug, Default)]
pub struct Decoder {
    /// Output index of a function call → canonical tool-call index.
    calls: HashMap<u64, usize>,
    /// The last call opened (events without an output index).
    last_call: Option<usize>,
    tools: usize,
    /// Text was streamed: a later message item is set apart from it.
    texted: bool,
    errored: bool,
    finished: bool,
    done: bool,
}

impl crate::backend::StreamDecoder for Decoder {
    fn decode(&mut self, frame: &Frame<'_>, out: &mut Vec<StreamEvent>) {
        let Some(data) = frame.data.as_deref() else {
            return;
        };
        if data == b"[DONE]" {
            return;
        }
        let Some(ev) = crate::canonical::parse_event::<StreamPayload>(data, out) else {
            return;
        };
        match ev.kind.as_str() {
            "response.created" => {
                let r = ev.response.unwrap_or_default();
                out.push(StreamEvent::Start {
                    id: r.id,
                    model: r.model,
                });
            }
            "response.output_item.added" => {
                let Some(item) = ev.item else { return };
                if item.kind.as_deref() == Some("message") && self.texted {
                    // A second message (OpenAI's commentary, then the final
                    // answer): one text for the client, in paragraphs.
                    out.push(StreamEvent::Text("\n\n".into()));
                }
                if item.kind.as_deref() == Some("function_call") {
                    let t = self.tools;
                    self.tools = self.tools.saturating_add(1);
                    if let Some(i) = ev.output_index {
                        self.calls.insert(i, t);
                    }
                    self.last_call = Some(t);
                    out.push(StreamEvent::ToolCallStart {
                        index: t,
                        id: item.call_id.unwrap_or_default(),
                        name: item.name.unwrap_or_default(),
                    });
                }
            }
            "response.function_call_arguments.delta" => {
                let index = ev
                    .output_index
                    .and_then(|i| self.calls.get(&i).copied())
                    .or(self.last_call);
                if let (Some(index), Some(fragment)) = (index, ev.delta) {
                    if !fragment.is_empty() {
                        out.push(StreamEvent::ToolCallArgs { index, fragment });
                    }
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(d) = ev.delta.filter(|d| !d.is_empty()) {
                    self.texted = true;
                    out.push(StreamEvent::Text(d));
                }
            }
            "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
                if let Some(d) = ev.delta.filter(|d| !d.is_empty()) {
                    out.push(StreamEvent::Thinking(d));
                }
            }
            "response.completed" | "response.incomplete" => {
                let r = ev.response.unwrap_or_default();
                if let Some(u) = &r.usage {
                    out.push(StreamEvent::Usage(usage_from(u)));
                }
                let reason = finish_of(
                    r.status.as_deref(),
                    r.incomplete_details
                        .as_ref()
                        .and_then(|d| d.reason.as_deref()),
                    self.tools > 0,
                );
                self.finished = true;
                self.done = true;
                out.push(StreamEvent::Finish {
                    reason,
                    stop_sequence: None,
                });
                out.push(StreamEvent::Done);
            }
            "error" => {
                let e = ev.error.unwrap_or_default();
                let code = ev.code.or(e.code).or(e.kind);
                let message = ev.message.or(e.message);
                self.errored = true;
                out.push(StreamEvent::Error(error_from(
                    code.as_deref(),
                    message.as_deref(),
                )));
            }
            "response.failed" => {
                if !self.errored {
                    let e = ev.response.and_then(|r| r.error).unwrap_or_default();
                    out.push(StreamEvent::Error(error_from(
                        e.code.as_deref(),
                        e.message.as_deref(),
                    )));
                }
                self.errored = true;
                // The failure was reported: nothing more is "ended early".
                self.finished = true;
            }
            _ => {}
        }
    }

    fn finish(&mut self, out: &mut Vec<StreamEvent>) {
        crate::canonical::end_stream(&mut self.done, self.finished, out);
    }
}

// ---- passthrough meter ----

#[derive(Deserialize)]
struct Closing {
    #[serde(default)]
    response: Option<ClosingResponse>,
}

#[derive(Deserialize)]
struct ClosingResponse {
    #[serde(default)]
    usage: Option<Usage>,
}

/// The event's type: its SSE name, or (no name) found in the payload by
/// a byte search, so the meter parses only the closing event.
fn closing_kind(frame: &Frame<'_>) -> Option<&'static str> {
    /// (type, the member as the payload spells it): searched without
    /// allocating, once per frame of a passthrough stream.
    static KINDS: [(&str, Needle); 4] = [
        (
            "response.completed",
            Needle::new(br#""type":"response.completed""#),
        ),
        (
            "response.incomplete",
            Needle::new(br#""type":"response.incomplete""#),
        ),
        (
            "response.failed",
            Needle::new(br#""type":"response.failed""#),
        ),
        ("error", Needle::new(br#""type":"error""#)),
    ];
    match frame.event {
        Some(name) => KINDS
            .iter()
            .find(|(k, _)| k.as_bytes() == name)
            .map(|(k, _)| *k),
        None => {
            let data = frame.data.as_deref()?;
            KINDS
                .iter()
                .find(|(_, quoted)| quoted.find(data).is_some())
                .map(|(k, _)| *k)
        }
    }
}

/// Usage arrives in the closing event (`response.completed`, `.incomplete`
/// or `.failed`); no other event is parsed.
#[derive(Debug, Default)]
pub struct Meter;

impl crate::backend::UsageMeter for Meter {
    fn inspect(&mut self, frame: &Frame<'_>) -> FrameUsage {
        let Some(kind) = closing_kind(frame) else {
            return FrameUsage::default();
        };
        let error = matches!(kind, "error" | "response.failed");
        let usage = match kind {
            "response.completed" | "response.incomplete" | "response.failed" => frame
                .data
                .as_deref()
                .and_then(|d| serde_json::from_slice::<Closing>(d).ok())
                .and_then(|c| c.response)
                .and_then(|r| r.usage)
                .map(|u| usage_from(&u)),
            _ => None,
        };
        FrameUsage {
            usage,
            usage_only: false,
            error,
        }
    }
}

// ---- encoder ----

#[derive(Serialize)]
struct DeltaEvent<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    item_id: &'a str,
    output_index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_index: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    summary_index: Option<u32>,
    delta: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<[u8; 0]>,
    sequence_number: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Reasoning,
    Message,
    Call(usize),
}

#[derive(Debug)]
struct OpenItem {
    kind: Kind,
    id: String,
    output_index: usize,
    /// The item's text so far (the done events and the closing response
    /// repeat it whole, as the API does).
    text: String,
    call_id: String,
    name: String,
}

#[derive(Debug)]
pub struct Encoder {
    model: String,
    created: u64,
    id: String,
    seq: u64,
    started: bool,
    open: Option<OpenItem>,
    /// Closed items, for the closing event's `output`.
    output: Vec<Value>,
    finish: Option<FinishReason>,
    usage: Option<TokenUsage>,
    closed: bool,
}

impl Encoder {
    pub fn new(model: &str, created: u64) -> Self {
        Encoder {
            model: model.to_string(),
            created,
            id: String::new(),
            seq: 0,
            started: false,
            open: None,
            output: Vec::new(),
            finish: None,
            usage: None,
            closed: false,
        }
    }

    /// Writes one event: its `type` as the SSE name, the next sequence
    /// number in the payload.
    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut payload: Value) {
        if let Some(o) = payload.as_object_mut() {
            o.insert("type".into(), json!(kind));
            o.insert("sequence_number".into(), json!(self.seq));
        }
        self.seq = self.seq.saturating_add(1);
        let data = serde_json::to_vec(&payload).unwrap_or_default();
        crate::framing::sse::write_event(out, Some(kind), &data);
    }

    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = if id.is_empty() {
            format!("resp_sluice{:x}", self.created)
        } else {
            response_id(id)
        };
        let r = response_object(
            &self.id,
            &self.model,
            self.created,
            "in_progress",
            Vec::new(),
            None,
        );
        self.emit(out, "response.created", json!({ "response": r.clone() }));
        self.emit(out, "response.in_progress", json!({ "response": r }));
    }

    fn open(&mut self, kind: Kind, call_id: &str, name: &str, out: &mut Vec<u8>) {
        self.close(out);
        let output_index = self.output.len();
        let (prefix, n) = match kind {
            Kind::Reasoning => ("rs", output_index),
            Kind::Message => ("msg", output_index),
            Kind::Call(_) => ("fc", output_index),
        };
        let id = item_id(prefix, &self.id, n);
        let item = match kind {
            Kind::Reasoning => json!({"id": id, "type": "reasoning", "summary": []}),
            Kind::Message => message_item(&id, "", "in_progress"),
            Kind::Call(_) => function_call_item(&id, call_id, name, "", "in_progress"),
        };
        self.emit(
            out,
            "response.output_item.added",
            json!({"output_index": output_index, "item": item}),
        );
        match kind {
            Kind::Reasoning => self.emit(
                out,
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": output_index, "summary_index": 0,
                       "part": {"type": "summary_text", "text": ""}}),
            ),
            Kind::Message => self.emit(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": output_index, "content_index": 0,
                       "part": output_text("")}),
            ),
            Kind::Call(_) => {}
        }
        self.open = Some(OpenItem {
            kind,
            id,
            output_index,
            text: String::new(),
            call_id: call_id.to_string(),
            name: name.to_string(),
        });
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        let Some(it) = self.open.take() else { return };
        let (id, oi) = (it.id.as_str(), it.output_index);
        let item = match it.kind {
            Kind::Reasoning => {
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": oi, "summary_index": 0,
                           "text": it.text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": oi, "summary_index": 0,
                           "part": {"type": "summary_text", "text": it.text}}),
                );
                reasoning_item(id, &it.text)
            }
            Kind::Message => {
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({"item_id": id, "output_index": oi, "content_index": 0,
                           "text": it.text, "logprobs": []}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": oi, "content_index": 0,
                           "part": output_text(&it.text)}),
                );
                message_item(id, &it.text, "completed")
            }
            Kind::Call(_) => {
                self.emit(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": id, "output_index": oi, "arguments": it.text}),
                );
                function_call_item(id, &it.call_id, &it.name, &it.text, "completed")
            }
        };
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": oi, "item": item}),
        );
        self.output.push(item);
    }

    /// One delta event: typed and written straight out (the stream's
    /// per-event path builds no JSON tree).
    fn delta(&mut self, kind: Kind, text: &str, out: &mut Vec<u8>) {
        let Some(it) = self.open.as_mut().filter(|it| it.kind == kind) else {
            return;
        };
        it.text.push_str(text);
        let name = match kind {
            Kind::Reasoning => "response.reasoning_summary_text.delta",
            Kind::Message => "response.output_text.delta",
            Kind::Call(_) => "response.function_call_arguments.delta",
        };
        let ev = DeltaEvent {
            kind: name,
            item_id: &it.id,
            output_index: it.output_index,
            content_index: (kind == Kind::Message).then_some(0),
            summary_index: (kind == Kind::Reasoning).then_some(0),
            delta: text,
            logprobs: (kind == Kind::Message).then_some([]),
            sequence_number: self.seq,
        };
        self.seq = self.seq.saturating_add(1);
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        let _ = serde_json::to_writer(&mut *out, &ev);
        out.extend_from_slice(b"\n\n");
    }

    fn is_open(&self, kind: Kind) -> bool {
        self.open.as_ref().is_some_and(|it| it.kind == kind)
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
                if !self.is_open(Kind::Message) {
                    self.open(Kind::Message, "", "", out);
                }
                self.delta(Kind::Message, t, out);
            }
            StreamEvent::Thinking(t) => {
                if !self.is_open(Kind::Reasoning) {
                    self.open(Kind::Reasoning, "", "", out);
                }
                self.delta(Kind::Reasoning, t, out);
            }
            // A signature only the provider that made it can verify.
            StreamEvent::ThinkingSignature(_) => {}
            StreamEvent::ToolCallStart { index, id, name } => {
                self.open(Kind::Call(*index), id, name, out)
            }
            // Items cannot interleave; providers stream calls one after
            // another (all of them in practice), which maps exactly.
            StreamEvent::ToolCallArgs { index, fragment } => {
                self.delta(Kind::Call(*index), fragment, out)
            }
            StreamEvent::Finish { reason, .. } => self.finish = Some(*reason),
            StreamEvent::Usage(u) => self.usage = Some(*u),
            StreamEvent::Error(e) => {
                self.close(out);
                let (_, body) = crate::openai::response::encode_error(e);
                let err: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let code = err.pointer("/error/code").cloned().unwrap_or(Value::Null);
                self.emit(
                    out,
                    "error",
                    json!({"code": code, "message": e.message, "param": null}),
                );
                let mut r = response_object(
                    &self.id,
                    &self.model,
                    self.created,
                    "failed",
                    std::mem::take(&mut self.output),
                    self.usage.as_ref(),
                );
                if let Some(o) = r.as_object_mut() {
                    o.insert("error".into(), json!({"code": code, "message": e.message}));
                }
                self.emit(out, "response.failed", json!({ "response": r }));
                self.closed = true;
            }
            StreamEvent::Done => {
                self.close(out);
                let finish = self.finish.take().unwrap_or(FinishReason::Stop);
                let (status, incomplete) = status_of(Some(finish));
                let mut r = response_object(
                    &self.id,
                    &self.model,
                    self.created,
                    status,
                    std::mem::take(&mut self.output),
                    self.usage.as_ref(),
                );
                if let Some(o) = r.as_object_mut() {
                    o.insert("incomplete_details".into(), incomplete);
                }
                let name = if status == "incomplete" {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
                self.emit(out, name, json!({ "response": r }));
                self.closed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::StreamEncoder as _;
    use crate::backend::{StreamDecoder as _, UsageMeter as _};
    use crate::framing::SseParser;
    use sluice_fixtures::recording as fixture;

    /// A recording's JSON lines as SSE with event names.
    fn sse(name: &str) -> Vec<u8> {
        let raw = fixture(name);
        let mut out = Vec::new();
        for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let v: Value = serde_json::from_slice(line).unwrap();
            let kind = v["type"].as_str().unwrap().to_string();
            crate::framing::sse::write_event(&mut out, Some(&kind), line);
        }
        out
    }

    fn decode_all(bytes: &[u8], split: usize) -> Vec<StreamEvent> {
        let mut p = SseParser::new(1 << 20);
        let mut d = Decoder::default();
        let mut evs = Vec::new();
        for chunk in bytes.chunks(split.max(1)) {
            p.feed(chunk, false, |f| d.decode(&f, &mut evs)).unwrap();
        }
        p.feed(b"", true, |f| d.decode(&f, &mut evs)).unwrap();
        d.finish(&mut evs);
        evs
    }

    fn text(evs: &[StreamEvent]) -> String {
        evs.iter()
            .filter_map(|e| match e {
                StreamEvent::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn recorded_function_call_stream_decodes() {
        let evs = decode_all(&sse("openai/azure-tool-call.1.chunks.txt"), 97);
        assert!(matches!(&evs[0], StreamEvent::Start { id, .. } if id.starts_with("resp_")));
        assert!(evs.iter().any(
            |e| matches!(e, StreamEvent::ToolCallStart { index: 0, name, .. } if name == "weather")
        ));
        let args: String = evs
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCallArgs { fragment, .. } => Some(fragment.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(args, r#"{"location":"San Francisco"}"#);
        assert!(evs.contains(&StreamEvent::Finish {
            reason: FinishReason::ToolCalls,
            stop_sequence: None
        }));
        assert_eq!(evs.last(), Some(&StreamEvent::Done));
    }

    #[test]
    fn recorded_failure_is_one_error() {
        let evs = decode_all(&sse("openai/openai-error.1.chunks.txt"), 4096);
        let errors: Vec<_> = evs
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Error(e) => Some(e),
                _ => None,
            })
            .collect();
        assert_eq!(errors.len(), 1, "{evs:?}");
        assert_eq!(errors[0].status, 429);
        assert!(errors[0].message.contains("quota"));
        assert_eq!(evs.last(), Some(&StreamEvent::Done));
    }

    #[test]
    fn any_chunk_split_decodes_the_same() {
        for name in [
            "openai/openai-phase.1.chunks.txt",
            "openai/openai-reasoning-encrypted-content.1.chunks.txt",
            "openai/openai-web-search-tool.1.chunks.txt",
        ] {
            let bytes = sse(name);
            let whole = decode_all(&bytes, bytes.len());
            assert!(
                !text(&whole).is_empty()
                    || whole
                        .iter()
                        .any(|e| matches!(e, StreamEvent::ToolCallStart { .. })),
                "{name}"
            );
            for split in [1, 7, 64, 1000] {
                assert_eq!(decode_all(&bytes, split), whole, "{name} split {split}");
            }
        }
    }

    #[test]
    fn meter_reads_usage_from_the_closing_event_only() {
        let bytes = sse("openai/openai-reasoning-encrypted-content.1.chunks.txt");
        let mut p = SseParser::new(1 << 20);
        let mut m = Meter;
        let mut last = None;
        p.feed(&bytes, true, |f| {
            if let Some(u) = m.inspect(&f).usage {
                last = Some(u);
            }
        })
        .unwrap();
        let u = last.unwrap();
        assert!(u.prompt_tokens > 0 && u.completion_tokens > 0);
        let mut p = SseParser::new(1 << 20);
        let mut errors = 0;
        p.feed(&sse("openai/openai-error.1.chunks.txt"), true, |f| {
            errors += usize::from(m.inspect(&f).error)
        })
        .unwrap();
        assert_eq!(errors, 2);
    }

    /// Encodes canonical events and reads them back with the decoder.
    #[test]
    fn encoder_writes_the_full_sequence_and_decodes_back() {
        let evs = vec![
            StreamEvent::Start {
                id: "abc".into(),
                model: "m".into(),
            },
            StreamEvent::Thinking("hmm".into()),
            StreamEvent::Text("Hel".into()),
            StreamEvent::Text("lo".into()),
            StreamEvent::ToolCallStart {
                index: 0,
                id: "c1".into(),
                name: "f".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "{\"a\":".into(),
            },
            StreamEvent::ToolCallArgs {
                index: 0,
                fragment: "1}".into(),
            },
            StreamEvent::Finish {
                reason: FinishReason::ToolCalls,
                stop_sequence: None,
            },
            StreamEvent::Usage(TokenUsage {
                prompt_tokens: 5,
                completion_tokens: 7,
                ..TokenUsage::default()
            }),
            StreamEvent::Done,
        ];
        let mut e = Encoder::new("m", 1);
        let mut bytes = Vec::new();
        for ev in &evs {
            e.encode(ev, &mut bytes);
        }
        let s = String::from_utf8(bytes.clone()).unwrap();
        let names: Vec<&str> = s
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            vec![
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        // Sequence numbers count every event from 0.
        let seqs: Vec<u64> = s
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| {
                serde_json::from_str::<Value>(d).unwrap()["sequence_number"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(seqs, (0..names.len() as u64).collect::<Vec<_>>());
        let back = decode_all(&bytes, 13);
        assert_eq!(text(&back), "Hello");
        assert!(back.contains(&StreamEvent::Usage(TokenUsage {
            prompt_tokens: 5,
            completion_tokens: 7,
            ..TokenUsage::default()
        })));
        let last = s
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back();
        let last: Value = serde_json::from_str(last.unwrap()).unwrap();
        assert_eq!(last["response"]["output"].as_array().unwrap().len(), 3);
        assert_eq!(last["response"]["output"][2]["arguments"], "{\"a\":1}");
    }

    #[test]
    fn errors_and_cut_answers_close_the_stream_as_the_api_does() {
        let mut e = Encoder::new("m", 1);
        let mut bytes = Vec::new();
        e.encode(&StreamEvent::Text("x".into()), &mut bytes);
        e.encode(
            &StreamEvent::Error(crate::canonical::ProviderError::ended_early()),
            &mut bytes,
        );
        e.encode(&StreamEvent::Done, &mut bytes);
        let s = String::from_utf8(bytes).unwrap();
        assert!(s.contains("event: error\n") && s.contains("event: response.failed\n"));
        assert!(!s.contains("response.completed"));
        let mut e = Encoder::new("m", 1);
        let mut bytes = Vec::new();
        for ev in [
            StreamEvent::Text("x".into()),
            StreamEvent::Finish {
                reason: FinishReason::Length,
                stop_sequence: None,
            },
            StreamEvent::Done,
        ] {
            e.encode(&ev, &mut bytes);
        }
        let s = String::from_utf8(bytes).unwrap();
        assert!(s.contains("event: response.incomplete\n") && s.contains("max_output_tokens"));
    }
}
