//! Stream translation: a backend's framed stream → canonical events → a
//! client API's SSE bytes, flushed per upstream event so time to first token
//! is kept.

use sluice_records::TokenUsage;

use crate::api::StreamEncoder;
use crate::backend::StreamDecoder;
use crate::canonical::StreamEvent;
use crate::framing::{FrameParser, Framing};

#[derive(Debug)]
pub struct StreamTranslator {
    parser: FrameParser,
    decoder: Box<dyn StreamDecoder>,
    encoder: Box<dyn StreamEncoder>,
    /// Reused between callbacks: no allocation per event once warm.
    events: Vec<StreamEvent>,
    pub usage: Option<TokenUsage>,
    /// A provider error event was seen.
    pub errored: bool,
    finished: bool,
    /// Response guardrails on the text, when configured.
    pub guard: Option<crate::guardrails::StreamGuard>,
    /// Text sent to the client (bounded), to estimate completion tokens if
    /// the provider reports no usage.
    pub text: String,
}

/// Bound on the text kept for a usage estimate.
const MAX_ESTIMATE_TEXT: usize = 1 << 20;

/// What a guarded stream needs from the request: policy, model, key.
pub struct GuardCtx<'a> {
    pub policy: &'a crate::guardrails::Policy,
    pub model: &'a str,
    pub key: &'a str,
    pub hits: &'a mut Vec<crate::guardrails::Hit>,
}

impl StreamTranslator {
    /// `framing`: the backend's; `max_event_bytes` bounds one frame.
    pub fn new(
        framing: Framing,
        max_event_bytes: usize,
        decoder: Box<dyn StreamDecoder>,
        encoder: Box<dyn StreamEncoder>,
    ) -> Self {
        StreamTranslator {
            parser: framing.parser(max_event_bytes),
            decoder,
            encoder,
            events: Vec::with_capacity(8),
            usage: None,
            errored: false,
            finished: false,
            guard: None,
            text: String::new(),
        }
    }

    /// A translator from `backend`'s stream to `api`'s (`model`: the name
    /// the client asked for; `created`: unix seconds; `include_usage`: the
    /// client asked for a usage chunk).
    pub fn between(
        backend: &dyn crate::backend::Backend,
        api: &dyn crate::api::ClientApi,
        max_event_bytes: usize,
        model: &str,
        created: u64,
        include_usage: bool,
    ) -> Self {
        Self::new(
            backend.framing(),
            max_event_bytes,
            backend.stream_decoder(),
            api.stream_encoder(model, created, include_usage),
        )
    }

    /// Translates one upstream chunk; returns the bytes for the client.
    pub fn feed(&mut self, chunk: &[u8], end_of_stream: bool) -> Vec<u8> {
        self.feed_guarded(chunk, end_of_stream, None)
    }

    /// As `feed`, with response guardrails applied to the text.
    pub fn feed_guarded(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        ctx: Option<GuardCtx<'_>>,
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(chunk.len().saturating_add(64));
        if self.finished {
            return out;
        }
        let decoder = &mut self.decoder;
        let events = &mut self.events;
        let res = self
            .parser
            .feed(chunk, end_of_stream, |ev| decoder.decode(&ev, events));
        if let Err(e) = res {
            self.events
                .push(StreamEvent::Error(crate::canonical::ProviderError {
                    status: 502,
                    kind: crate::canonical::ErrorClass::Server,
                    message: format!(
                        "The provider sent a stream event larger than {} bytes.",
                        e.limit
                    ),
                }));
            self.events.push(StreamEvent::Done);
        } else if end_of_stream {
            self.decoder.finish(&mut self.events);
        }
        if let (Some(g), Some(c)) = (self.guard.as_mut(), ctx) {
            g.filter(c.policy, c.model, c.key, &mut self.events, c.hits);
        }
        for ev in self.events.drain(..) {
            match &ev {
                StreamEvent::Usage(u) => self.usage = Some(*u),
                StreamEvent::Error(_) => self.errored = true,
                StreamEvent::Text(t)
                | StreamEvent::Thinking(t)
                | StreamEvent::ToolCallArgs { fragment: t, .. }
                    if self.usage.is_none()
                        && self.text.len().saturating_add(t.len()) <= MAX_ESTIMATE_TEXT =>
                {
                    self.text.push_str(t)
                }
                _ => {}
            }
            if self.finished {
                continue;
            }
            self.encoder.encode(&ev, &mut out);
            if matches!(ev, StreamEvent::Done | StreamEvent::Error(_)) {
                // Error events end the client stream too (the encoder writes
                // its dialect's terminator).
                self.finished = matches!(ev, StreamEvent::Done) || self.errored;
            }
        }
        out
    }
}
