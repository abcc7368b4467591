//! The answer: metered, translated and checked on its way to the client.
//! A non-stream answer is buffered (bounded) and decoded by the backend,
//! encoded for the client API; a stream is cut into frames by the backend's
//! framing and either metered as it passes or translated event by event.

use std::borrow::Cow;

use sluice_config::GuardDirection;
use sluice_records::TokenUsage;

use super::{blocked, Flow, Phase, ResponseBodyStep, ResponseHeaders, Route, WARNINGS_HEADER};
use crate::backend::UsageMeter;
use crate::error::{ErrorKind, GatewayError};
use crate::framing::FrameParser;
use crate::gateway::Gateway;
use crate::translate::stream::StreamTranslator;

#[derive(Debug, Default)]
pub(super) enum ResponseMode {
    #[default]
    Unknown,
    /// Too large to meter, or not ours to read: pass through.
    Pass,
    /// Non-stream: buffer, meter, and translate if needed.
    Buffer,
    /// Passthrough stream, metered event by event.
    StreamPass {
        parser: FrameParser,
        meter: Box<dyn UsageMeter>,
        /// The client did not ask for the usage chunk the gateway did.
        strip_usage_chunk: bool,
    },
    StreamTranslate(Box<StreamTranslator>),
    /// The gateway already answered in the client's dialect (the provider's
    /// body was too large to translate or check): the rest of the
    /// provider's bytes are dropped, never appended to that answer.
    Discard,
    /// No provider answered a resilient request (Envoy's own 503/504, or
    /// the attempt filter's refusal): this answer, in the client's API,
    /// replaces the body once it is complete.
    Answer(u16, Vec<u8>),
}

/// What the response phase keeps between callbacks.
#[derive(Debug, Default)]
pub(super) struct ResponseState {
    pub mode: ResponseMode,
    /// Usage as the provider reported it.
    pub usage: Option<TokenUsage>,
    /// Output text seen, for an `estimated` usage record when the provider
    /// reports none.
    pub output_text: String,
    /// Events with content forwarded on a passthrough stream: the
    /// completion estimate (about a token each) when the stream ends before
    /// the provider's usage arrives.
    pub stream_events: u64,
    /// Response guardrails apply to this request.
    pub guard: bool,
    /// A passthrough stream carried the provider's error event: it failed
    /// mid-way, so it is not `completed`.
    pub stream_failed: bool,
    /// `usage` is the gateway's count (embeddings the provider did not
    /// count), not the provider's.
    pub usage_estimated: bool,
}

/// `chunk` up to `end`, without the `drops` ranges (in order, inside it).
/// Cut in place: the usage chunk is at the end of a stream, so only the
/// few bytes after it move.
fn without(mut chunk: Vec<u8>, end: usize, drops: &[std::ops::Range<usize>]) -> Vec<u8> {
    chunk.truncate(end);
    for d in drops.iter().rev() {
        if d.start <= d.end && d.end <= chunk.len() {
            chunk.drain(d.clone());
        }
    }
    chunk
}

impl Flow {
    pub fn on_response_headers(
        &mut self,
        gw: &Gateway,
        status: u16,
        content_type: Option<&str>,
    ) -> ResponseHeaders {
        let mut out = ResponseHeaders::default();
        if self.phase == Phase::Upstream && self.route.is_none() {
            if let Some(failed) = self.answered_by(status, &mut out) {
                return self.answer_locally(failed, out);
            }
        }
        let (Phase::Upstream, Some(route)) = (self.phase, self.route) else {
            return out;
        };
        self.record.status = status;
        if self.endpoint_mode {
            // A provider endpoint passed through: only a JSON answer is
            // read (for its usage); audio, files and streams pass as they are.
            let json = content_type.is_some_and(|c| c.trim_start().starts_with("application/json"));
            self.response.mode = if json {
                ResponseMode::Buffer
            } else {
                ResponseMode::Pass
            };
            return out;
        }
        let framing = route.backend.framing();
        let is_stream = framing.is_stream(content_type);
        let max_event = gw.limits.max_sse_event_bytes as usize;
        if !self.warnings.is_empty() {
            out.set
                .push((WARNINGS_HEADER, self.warnings.header_value()));
        }
        if let Some(s) = self.admission.rate_status {
            out.set.extend(s.headers());
        }
        // Response guardrails for this request (no work when none are set).
        self.response.guard = gw.guardrails.as_ref().is_some_and(|p| {
            let key_id = self.record.key_id.as_deref().unwrap_or_default();
            p.active(GuardDirection::Response, &self.public_model, key_id)
        });
        let guard_stream = self.response.guard;
        if is_stream && (200..300).contains(&status) {
            out.remove_content_length = true;
            // Response guardrails read the text as canonical events, so a
            // guarded stream is re-encoded even between same-dialect ends.
            self.response.mode = if route.translating() || guard_stream {
                let created = self.start_ms / 1000;
                let mut t = StreamTranslator::between(
                    route.backend,
                    route.api,
                    max_event,
                    &self.public_model,
                    created,
                    self.client_wants_usage,
                );
                if guard_stream {
                    t.guard = Some(Default::default());
                }
                ResponseMode::StreamTranslate(Box::new(t))
            } else {
                ResponseMode::StreamPass {
                    parser: framing.parser(max_event),
                    meter: route.backend.usage_meter(),
                    strip_usage_chunk: !self.client_wants_usage,
                }
            };
        } else {
            self.response.mode = ResponseMode::Buffer;
            if route.translating() || self.response.guard {
                // The body is rewritten in the client's dialect, and its
                // status may change (e.g. 529 → 503): hold the headers.
                out.remove_content_length = true;
                out.hold = true;
                out.set.push(("content-type", "application/json".into()));
            }
        }
        self.capture.response_headers(status, content_type, &out);
        out
    }

    /// Envoy's global rate limiting refused the request after Sluice let it
    /// go (its ratelimit filter answers 429 with `x-envoy-ratelimited`): the
    /// refusal is written in the client's API, as the filter's own limits
    /// are, whatever dialect the route's provider speaks.
    /// `budget`: the service said the key's budget refused it (its
    /// `x-sluice-limit: budget` header) rather than a rate limit.
    pub fn on_global_rate_limit(&mut self, budget: bool) -> ResponseHeaders {
        let mut out = ResponseHeaders::default();
        if self.phase != Phase::Upstream {
            return out;
        }
        self.globally_refused = true;
        let err = if budget {
            GatewayError::over_budget_across_gateways()
        } else {
            if let Some(s) = self.admission.rate_status {
                out.set.extend(s.headers());
            }
            GatewayError::new(
                429,
                ErrorKind::RateLimited,
                "Rate limit reached for this API key across all gateways. Retry later.",
            )
        };
        self.answer_locally(err, out)
    }

    /// A resilient request's answer: which attempt it is, from the plan's
    /// log. Sets the route (that target's backend), the record's provider
    /// and model, the budget's price, and the attempt headers. Some(error):
    /// no provider answered — the response is Envoy's or the attempt
    /// filter's own, answered in the client's API instead.
    fn answered_by(&mut self, status: u16, out: &mut ResponseHeaders) -> Option<GatewayError> {
        let ticket = self.plan.as_ref()?;
        let api = self.api;
        let model = self.public_model.clone();
        let found = ticket.with(|p| {
            let count = p.attempts.len();
            let answering = p
                .attempts
                .iter()
                .rev()
                .find(|a| a.status != 0 && a.status == status);
            let summary = || {
                let parts: Vec<String> = p
                    .attempts
                    .iter()
                    .map(|a| {
                        let name = p
                            .targets
                            .get(a.target)
                            .map_or("?", |t| t.provider.name.as_str());
                        match a.status {
                            0 => format!("{name}: no answer after {} ms", a.latency_ms),
                            s => format!("{name}: {s}"),
                        }
                    })
                    .collect();
                parts.join(", ")
            };
            let fallback_backend = p
                .targets
                .first()
                .map(|t| t.provider.backend_for(p.api.wire()));
            match answering.and_then(|a| Some((a, p.targets.get(a.target)?))) {
                Some((a, t)) => match &a.local_error {
                    Some(e) => (
                        count,
                        Err((e.clone(), Some(t.provider.backend_for(p.api.wire())))),
                    ),
                    None => (
                        count,
                        Ok((
                            t.provider.name.clone(),
                            t.upstream_model.clone(),
                            t.provider.backend_for(p.api.wire()),
                            t.price,
                            a.warnings.clone(),
                        )),
                    ),
                },
                None => {
                    let attempts = summary();
                    let err = if status == 504 {
                        GatewayError::new(
                            504,
                            crate::error::ErrorKind::Unavailable,
                            format!(
                                "No provider of the model '{model}' answered in time ({attempts})."
                            ),
                        )
                    } else {
                        let what = if attempts.is_empty() {
                            "no provider is available".to_string()
                        } else {
                            attempts
                        };
                        GatewayError::new(
                            if (500..600).contains(&status) {
                                status
                            } else {
                                503
                            },
                            crate::error::ErrorKind::Unavailable,
                            format!("No provider of the model '{model}' could answer ({what})."),
                        )
                    };
                    (count, Err((err, fallback_backend)))
                }
            }
        });
        let (count, found) = found?;
        out.set
            .push((crate::resilience::ATTEMPTS_HEADER, count.max(1).to_string()));
        match found {
            Ok((provider, upstream_model, backend, price, warnings)) => {
                out.set
                    .push((crate::resilience::PROVIDER_HEADER, provider.clone()));
                self.record.provider = Some(provider);
                self.record.upstream_model = Some(upstream_model);
                self.route = Some(Route::new(api, backend));
                self.admission.reprice(price);
                for w in warnings.0 {
                    self.warnings.push(w);
                }
                None
            }
            Err((err, backend)) => {
                if let Some(b) = backend {
                    self.route = Some(Route::new(api, b));
                }
                Some(err)
            }
        }
    }

    /// Answers in the client's API once Envoy's own body is complete.
    fn answer_locally(&mut self, err: GatewayError, mut out: ResponseHeaders) -> ResponseHeaders {
        self.record.status = err.status;
        self.record.error = Some(Cow::Borrowed(err.kind.code()));
        out.remove_content_length = true;
        out.hold = true;
        out.set.push(("content-type", "application/json".into()));
        self.response.mode = ResponseMode::Answer(err.status, self.api.render_error(&err));
        out
    }

    /// Whether the next response-body callback needs the bytes (so the glue
    /// copies them out of Envoy only when they are used).
    pub fn needs_response_bytes(&self, end_of_stream: bool) -> bool {
        match self.response.mode {
            _ if self.phase != Phase::Upstream => false,
            ResponseMode::StreamPass { .. } | ResponseMode::StreamTranslate(_) => true,
            ResponseMode::Buffer => end_of_stream,
            ResponseMode::Unknown | ResponseMode::Pass => self.capture.active(),
            ResponseMode::Discard | ResponseMode::Answer(..) => false,
        }
    }

    /// Whether the next response-body callback uses the time (only until a
    /// stream's first byte is timed): the glue reads the clock — a host
    /// crossing — only then.
    pub fn needs_clock(&self) -> bool {
        self.phase == Phase::Upstream
            && self.record.ttft_ms.is_none()
            && matches!(
                self.response.mode,
                ResponseMode::StreamPass { .. } | ResponseMode::StreamTranslate(_)
            )
    }

    pub fn on_response_body(
        &mut self,
        gw: &Gateway,
        body_size: usize,
        end_of_stream: bool,
        now_ms: u64,
        read: impl FnOnce() -> Option<Vec<u8>>,
    ) -> ResponseBodyStep {
        if !self.capture.active() || self.phase != Phase::Upstream {
            return self.response_body(gw, body_size, end_of_stream, now_ms, read);
        }
        // Captured: the upstream bytes are kept as well as handed on. A
        // held (`Wait`) chunk comes back whole in a later callback.
        let bytes = read();
        let copy = bytes.clone();
        let step = self.response_body(gw, body_size, end_of_stream, now_ms, move || bytes);
        self.capture
            .response_body(&step, copy.as_deref(), body_size);
        step
    }

    fn response_body(
        &mut self,
        gw: &Gateway,
        body_size: usize,
        end_of_stream: bool,
        now_ms: u64,
        read: impl FnOnce() -> Option<Vec<u8>>,
    ) -> ResponseBodyStep {
        let (Phase::Upstream, Some(route)) = (self.phase, self.route) else {
            return ResponseBodyStep::Pass;
        };
        if end_of_stream {
            self.record.completed = true;
        }
        match &mut self.response.mode {
            ResponseMode::Unknown | ResponseMode::Pass => ResponseBodyStep::Pass,
            ResponseMode::Discard => {
                // Never "delivered to the end": the client got an error.
                self.record.completed = false;
                ResponseBodyStep::Replace(Vec::new())
            }
            ResponseMode::Answer(status, body) => {
                if !end_of_stream {
                    return ResponseBodyStep::Wait;
                }
                ResponseBodyStep::ReplaceWithStatus(*status, std::mem::take(body))
            }
            ResponseMode::Buffer => {
                if body_size as u64 > gw.limits.max_response_body_bytes {
                    // Only a body that is neither translated nor checked may
                    // pass unread; otherwise the client gets a clear error
                    // and nothing of the provider's body (a guardrail must
                    // not be skipped because the answer is large).
                    let why = if route.translating() {
                        "The provider's response is too large to translate."
                    } else if self.response.guard {
                        "The provider's response is too large for the gateway's guardrails to check."
                    } else {
                        self.response.mode = ResponseMode::Pass;
                        return ResponseBodyStep::Pass;
                    };
                    self.response.mode = ResponseMode::Discard;
                    self.record.completed = false;
                    let err = GatewayError::new(502, crate::error::ErrorKind::Internal, why);
                    self.record.status = 502;
                    self.record.error = Some(Cow::Borrowed(err.kind.code()));
                    return ResponseBodyStep::ReplaceWithStatus(502, route.api.render_error(&err));
                }
                if !end_of_stream {
                    return ResponseBodyStep::Wait;
                }
                let body = read().unwrap_or_default();
                let step = self.finish_buffered(route, &body);
                self.guard_response_body(gw, step, &body)
            }
            ResponseMode::StreamPass {
                parser,
                meter,
                strip_usage_chunk,
            } => {
                let chunk = if body_size == 0 {
                    Vec::new()
                } else {
                    read().unwrap_or_default()
                };
                if self.record.ttft_ms.is_none() && !chunk.is_empty() {
                    self.record.ttft_ms = Some(now_ms.saturating_sub(self.start_ms));
                }
                let had_carry = parser.pending() > 0;
                // Without a carried tail, events borrow from `chunk`: they
                // are not copied out one by one (12 KB per 50-event answer)
                // but located, and the chunk itself is what is forwarded —
                // unchanged, cut before an unfinished event, or with the
                // usage chunk the client did not ask for taken out.
                let copy = had_carry;
                let base = chunk.as_ptr() as usize;
                let mut out: Vec<u8> = Vec::new();
                let mut drops: Vec<std::ops::Range<usize>> = Vec::new();
                let mut complete = 0usize;
                let mut dropped = false;
                let mut usage = None;
                let strip = *strip_usage_chunk;
                let mut events = 0u64;
                let mut failed = false;
                let res = parser.feed(&chunk, end_of_stream, |ev| {
                    let info = meter.inspect(&ev);
                    failed |= info.error;
                    if info.usage.is_some() {
                        usage = info.usage;
                    }
                    if !info.usage_only && ev.data.as_deref().is_some_and(|d| d != b"[DONE]") {
                        events = events.saturating_add(1);
                    }
                    let at = (ev.raw.as_ptr() as usize).saturating_sub(base);
                    let end = at.saturating_add(ev.raw.len());
                    if !copy {
                        complete = end;
                    }
                    if strip && info.usage_only {
                        dropped = true;
                        if !copy {
                            drops.push(at..end);
                        }
                    } else if copy {
                        out.extend_from_slice(ev.raw);
                    }
                });
                let unchanged = !dropped && !had_carry && parser.pending() == 0 && res.is_ok();
                if !copy && !unchanged {
                    out = without(chunk, complete, &drops);
                }
                self.response.stream_events = self.response.stream_events.saturating_add(events);
                self.response.stream_failed |= failed;
                if usage.is_some() {
                    self.response.usage = usage;
                }
                if let Err(e) = res {
                    // Pass what we have and end the stream with an error
                    // event rather than growing without bound.
                    let err = GatewayError::new(
                        502,
                        crate::error::ErrorKind::Internal,
                        format!(
                            "The upstream sent a stream event larger than {} bytes.",
                            e.limit
                        ),
                    );
                    let body = route.api.render_error(&err);
                    let name = route.api.stream_error_event();
                    crate::framing::sse::write_event(&mut out, name, &body);
                    self.record.completed = false;
                    self.response.mode = ResponseMode::Pass;
                    return ResponseBodyStep::Replace(out);
                }
                if unchanged {
                    ResponseBodyStep::Pass
                } else {
                    ResponseBodyStep::Replace(out)
                }
            }
            ResponseMode::StreamTranslate(t) => {
                let chunk = if body_size == 0 {
                    Vec::new()
                } else {
                    read().unwrap_or_default()
                };
                let guard = match (&gw.guardrails, self.response.guard) {
                    (Some(policy), true) => Some(crate::translate::stream::GuardCtx {
                        policy,
                        model: &self.public_model,
                        key: self.record.key_id.as_deref().unwrap_or_default(),
                        hits: &mut self.guard_hits,
                    }),
                    _ => None,
                };
                let out = t.feed_guarded(&chunk, end_of_stream, guard);
                if self.record.ttft_ms.is_none() && !out.is_empty() {
                    self.record.ttft_ms = Some(now_ms.saturating_sub(self.start_ms));
                }
                if t.usage.is_some() {
                    self.response.usage = t.usage;
                }
                if t.errored {
                    self.record.completed = false;
                }
                if end_of_stream && self.response.usage.is_none() {
                    self.response.output_text = std::mem::take(&mut t.text);
                }
                ResponseBodyStep::Replace(out)
            }
        }
    }

    /// Response guardrails on the body the client would receive.
    fn guard_response_body(
        &mut self,
        gw: &Gateway,
        step: ResponseBodyStep,
        original: &[u8],
    ) -> ResponseBodyStep {
        let (Some(policy), true) = (&gw.guardrails, self.response.guard) else {
            return step;
        };
        let status = self.record.status;
        let out: &[u8] = match &step {
            ResponseBodyStep::Replace(b) | ResponseBodyStep::ReplaceWithStatus(_, b) => b,
            _ => original,
        };
        let key_id = self.record.key_id.clone().unwrap_or_default();
        match policy.apply_json(
            GuardDirection::Response,
            &self.public_model,
            &key_id,
            out,
            &mut self.guard_hits,
        ) {
            Ok(None) => match step {
                // Headers were held: release them with the status as is.
                ResponseBodyStep::Pass => {
                    ResponseBodyStep::ReplaceWithStatus(status, original.to_vec())
                }
                other => other,
            },
            Ok(Some(masked)) => ResponseBodyStep::ReplaceWithStatus(status, masked),
            Err(b) => {
                self.record.status = 400;
                let err = blocked(&b);
                self.record.error = Some(Cow::Borrowed(err.kind.code()));
                ResponseBodyStep::ReplaceWithStatus(400, self.api.render_error(&err))
            }
        }
    }

    fn finish_buffered(&mut self, route: Route, body: &[u8]) -> ResponseBodyStep {
        if let Some(step) = self.finish_embeddings(route, body) {
            return step;
        }
        if self.endpoint_mode {
            if (200..300).contains(&self.record.status) {
                self.response.usage = super::endpoints::reported_usage(body);
            }
            return ResponseBodyStep::Pass;
        }
        let status = self.record.status;
        if !route.translating() {
            if (200..300).contains(&status) {
                self.response.usage = route.backend.body_usage(body);
            }
            return ResponseBodyStep::Pass;
        }
        if !(200..300).contains(&status) {
            let (client_status, out) =
                crate::translate::response::translate_error(route.backend, route.api, status, body);
            self.record.status = client_status;
            return ResponseBodyStep::ReplaceWithStatus(client_status, out);
        }
        match route.backend.decode_response(body) {
            Some(mut r) => {
                self.response.usage = r.usage;
                if r.usage.is_none() {
                    let text = &mut self.response.output_text;
                    *text = crate::canonical::parts::text_of(&r.parts);
                    for p in &r.parts {
                        if let crate::canonical::Part::ToolCall { arguments, .. } = p {
                            text.push_str(arguments);
                        }
                    }
                }
                r.model.clone_from(&self.public_model);
                if r.created == 0 {
                    r.created = self.start_ms / 1000;
                }
                ResponseBodyStep::ReplaceWithStatus(status, route.api.encode_response(&r))
            }
            None => {
                self.record.status = 502;
                self.record.completed = false;
                let err = GatewayError::new(
                    502,
                    crate::error::ErrorKind::Internal,
                    "The provider returned a response the gateway could not read.",
                );
                ResponseBodyStep::ReplaceWithStatus(502, route.api.render_error(&err))
            }
        }
    }
}
