//! One request through the gateway, as a sans-IO state machine.
//!
//! The proxy-wasm glue reads headers and bodies from Envoy, hands them to a
//! `Flow`, and applies what the flow answers (reply locally, rewrite headers
//! and body, pause, pass). Nothing here calls the host, so every path is
//! unit-tested natively and under a wasm runtime.
//!
//! A request arrives in a client API (`api`) and goes to a provider's
//! backend (`backend`). Same wire: passthrough, only `model` (and the usage
//! option) touched. Different: decode to the canonical model, encode for the
//! backend, and translate the response back event by event.
//!
//! The state machine is here; each stage has a room of its own:
//! `route` (the request body: model, route, policy), `admission` (limits and
//! budget, reserved and settled), `upstream` (the request the provider
//! gets), `response` (metering, translating and checking the answer) and
//! `capture` (sampled exchanges for replay baselines).

mod admission;
pub mod attempt;
mod capture;
mod endpoints;
mod operations;
mod response;
mod route;
#[cfg(test)]
mod tests;
mod upstream;

use std::borrow::Cow;

use sluice_records::{TokenUsage, UsageRecord, RECORD_VERSION};

use crate::api::{ClientApi, Endpoint};
use crate::backend::Backend;
use crate::budget::SharedStore;
use crate::canonical::Warnings;
use crate::error::GatewayError;
use crate::gateway::{Gateway, KeyEntry};
use crate::guardrails::{Blocked, Hit};
use crate::registry::Recognized;

pub use crate::api::RequestHead;
pub use operations::TOKEN_COUNT_HEADER;
pub use upstream::CLUSTER_HEADER;

/// Bytes of the client's `x-request-id` kept in the usage record.
const MAX_REQUEST_ID: usize = 128;

/// Response header listing what a translation could not carry over.
pub const WARNINGS_HEADER: &str = "x-sluice-warnings";

/// A response the gateway sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
    /// Extra headers (rate-limit status, `retry-after`).
    pub headers: Vec<(&'static str, String)>,
}

/// Headers and body to send upstream (borrowing from the gateway config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward<'a> {
    /// Removed before `set` is applied.
    pub remove: &'static [&'static str],
    /// Removed as well (names known only at run time: an attempt removes
    /// the other targets' credential headers).
    pub remove_more: Vec<&'a str>,
    /// Remove a client's own router headers (`x-envoy-max-retries`, …) and
    /// plan id: on every request the gateway forwards (not on an attempt,
    /// whose plan id and router headers are the gateway's).
    pub strip_client_routing: bool,
    pub set: Vec<(&'a str, Cow<'a, str>)>,
    pub body: Vec<u8>,
}

impl Forward<'_> {
    /// The header edits to make on a request whose headers are `present`
    /// (name, value; names lower-case as Envoy gives them): removals of
    /// headers that are there and not set anyway, and sets whose value
    /// differs. Each edit is a host crossing (~5k instructions in Envoy), so
    /// a no-op edit — `:path` already right, a removal of an absent header, a
    /// removal followed by a set — is not made.
    pub fn header_edits<'s>(&'s self, present: &[(&str, &str)]) -> Vec<(&'s str, Option<&'s str>)> {
        let mut out = Vec::with_capacity(self.remove.len().saturating_add(self.set.len()));
        for name in self.remove.iter().chain(&self.remove_more) {
            let replaced = self.set.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
            if !replaced && present.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
                out.push((*name, None));
            }
        }
        if self.strip_client_routing {
            // One pass over what is there (names are lower-case): the list
            // is long and these headers are rare.
            for (k, _) in present {
                if !k.starts_with("x-") {
                    continue;
                }
                let routing = crate::retry_policy::CLIENT_ROUTER_HEADERS
                    .iter()
                    .chain(std::iter::once(&crate::resilience::PLAN_HEADER))
                    .find(|n| **n == *k);
                if let Some(name) = routing {
                    if !self.set.iter().any(|(s, _)| s == name) {
                        out.push((*name, None));
                    }
                }
            }
        }
        for (name, value) in &self.set {
            let mut same = present.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
            let unchanged = match (same.next(), same.next()) {
                (Some((_, v)), None) => v == value,
                _ => false,
            };
            if !unchanged {
                out.push((*name, Some(value.as_ref())));
            }
        }
        out
    }
}

/// Where a request body's path ends: upstream, or answered by the gateway
/// (a token count it made itself).
#[derive(Debug)]
enum Routed<'g> {
    Forward(Forward<'g>),
    Answer(LocalReply),
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadersStep<'a> {
    /// Not a host the gateway serves (`hosts`): let the request through
    /// untouched, and record nothing for it.
    NotServed,
    Reply(LocalReply),
    /// Hold the headers and read the whole body.
    ReadBody,
    /// Send the request on now with these header edits; its body (if any)
    /// streams through unread (`Forward::body` is unused). A configured
    /// passthrough endpoint that reads no body.
    Forward(Forward<'a>),
}

#[derive(Debug, PartialEq, Eq)]
pub enum BodyStep<'a> {
    /// More body to come: keep buffering.
    Wait,
    /// The request went on at its headers: let the body through.
    Pass,
    Reply(LocalReply),
    Forward(Forward<'a>),
}

/// What to do with the response headers.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResponseHeaders {
    /// Drop `content-length`: the body will be rewritten.
    pub remove_content_length: bool,
    pub set: Vec<(&'static str, String)>,
    /// Hold the headers until the body is complete (a translated non-stream
    /// response may still change its status).
    pub hold: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum ResponseBodyStep {
    /// Send the chunk as it is.
    Pass,
    /// Buffer: the whole body is needed.
    Wait,
    /// Send these bytes instead of the chunk (or the buffered body).
    Replace(Vec<u8>),
    /// Replace the whole buffered body and set the (held) status.
    ReplaceWithStatus(u16, Vec<u8>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Request,
    /// The gateway answered itself; the response callbacks see that reply.
    Local,
    Upstream,
}

/// How the request reached its provider: the client's API and the backend
/// of the provider this attempt went to.
#[derive(Debug, Clone, Copy)]
struct Route {
    api: &'static dyn ClientApi,
    backend: &'static dyn Backend,
    /// Different wires: the request and the answer are translated
    /// (compared once; the response callbacks ask on every chunk).
    translate: bool,
}

impl Route {
    fn new(api: &'static dyn ClientApi, backend: &'static dyn Backend) -> Route {
        Route {
            api,
            backend,
            translate: api.wire() != backend.wire(),
        }
    }

    fn translating(self) -> bool {
        self.translate
    }
}

#[derive(Debug)]
pub struct Flow {
    start_ms: u64,
    phase: Phase,
    record: UsageRecord,
    /// The client's API (a guess from the path until an endpoint matched).
    api: &'static dyn ClientApi,
    endpoint: Option<Endpoint>,
    route: Option<Route>,
    public_model: String,
    client_wants_usage: bool,
    warnings: Warnings,
    /// The client sent no `anthropic-version` (e.g. plain curl): the
    /// backend's version header is set even on passthrough.
    client_version_missing: bool,
    /// Guardrail rules that matched, request and response (for metrics).
    guard_hits: Vec<Hit>,
    admission: admission::Admission,
    response: response::ResponseState,
    capture: capture::CaptureState,
    /// A resilient model's request: its plan, read by the attempts (the
    /// route is known once one answered).
    plan: Option<crate::resilience::plans::Ticket>,
    /// An embeddings request: what its answer needs.
    embed: Option<operations::EmbedCtx>,
    /// A configured passthrough endpoint's request whose body is read.
    passthrough: Option<endpoints::EndpointCtx>,
    /// A configured passthrough endpoint's request: its answer is only
    /// metered (JSON usage), never translated.
    endpoint_mode: bool,
    /// Envoy's global rate limiting refused the request: nothing was taken
    /// or reserved across Envoys, so nothing is settled at stream end.
    globally_refused: bool,
    /// What was billed, worked out once at the response's end for the
    /// settlement across Envoys and kept for `finish` (an answer without
    /// usage is counted with the tokenizer: not twice).
    billed_at_end: Option<Option<(TokenUsage, &'static str)>>,
}

fn blocked(b: &Blocked) -> GatewayError {
    GatewayError::new(
        400,
        crate::error::ErrorKind::GuardrailBlocked,
        format!("Blocked by the gateway's guardrail '{}'.", b.rule),
    )
}

impl Flow {
    pub fn new(now_ms: u64) -> Self {
        let api = crate::registry::default_api();
        Flow {
            start_ms: now_ms,
            phase: Phase::Request,
            record: UsageRecord {
                v: RECORD_VERSION,
                client_dialect: Cow::Borrowed(api.name()),
                usage_source: Cow::Borrowed("none"),
                ..UsageRecord::default()
            },
            api,
            endpoint: None,
            route: None,
            public_model: String::new(),
            client_wants_usage: false,
            warnings: Warnings::default(),
            client_version_missing: true,
            guard_hits: Vec::new(),
            admission: admission::Admission::default(),
            response: response::ResponseState::default(),
            capture: capture::CaptureState::default(),
            plan: None,
            embed: None,
            passthrough: None,
            endpoint_mode: false,
            globally_refused: false,
            billed_at_end: None,
        }
    }

    fn reply_error(&mut self, err: GatewayError) -> LocalReply {
        self.phase = Phase::Local;
        self.record.status = err.status;
        self.record.error = Some(Cow::Borrowed(err.kind.code()));
        LocalReply {
            status: err.status,
            content_type: "application/json",
            body: self.api.render_error(&err),
            headers: self.admission.reply_headers(&err),
        }
    }

    fn reply_ok(&mut self, body: Vec<u8>) -> LocalReply {
        self.phase = Phase::Local;
        self.record.status = 200;
        LocalReply {
            status: 200,
            content_type: "application/json",
            body,
            headers: Vec::new(),
        }
    }

    fn set_api(&mut self, api: &'static dyn ClientApi) {
        self.api = api;
        self.record.client_dialect = Cow::Borrowed(api.name());
    }

    pub fn on_request_headers<'g>(
        &mut self,
        gw: &'g Gateway,
        shared: &dyn SharedStore,
        head: &RequestHead<'_>,
    ) -> HeadersStep<'g> {
        if !sluice_config::host_matches(&gw.hosts, head.authority.unwrap_or_default()) {
            return HeadersStep::NotServed;
        }
        // Correlation only (the ledger keys on the gateway's own id), and
        // bounded: the header is the client's.
        self.record.request_id =
            crate::error::truncate(head.request_id.unwrap_or_default(), MAX_REQUEST_ID).to_string();
        self.record.config_version.clone_from(&gw.version);
        self.record.role = gw.shadow.map(|r| Cow::Borrowed(r.as_str()));
        self.client_version_missing = head.anthropic_version.is_none();
        let path = head.path.split(['?', '#']).next().unwrap_or_default();
        // Errors before routing use the API the path implies.
        self.set_api(crate::registry::guess(path, head));
        let key = match self.admission.authenticate(gw, head, self.start_ms) {
            Ok(k) => k,
            Err(e) => return HeadersStep::Reply(self.reply_error(e)),
        };
        self.record.key_id = Some(key.id.clone());
        let endpoint = match crate::registry::recognize(head.method, path, head.path) {
            Recognized::Generate(ep) => ep,
            Recognized::ListModels => {
                return HeadersStep::Reply(self.reply_ok(self.models_list(gw, key)))
            }
            Recognized::GetModel(name) => {
                return HeadersStep::Reply(match gw.model_for(key, name) {
                    Ok(m) => {
                        let families = gw.families(&m.name);
                        let body = self
                            .api
                            .model_object(&m.name, &families)
                            .to_string()
                            .into_bytes();
                        self.reply_ok(body)
                    }
                    Err(e) => self.reply_error(e),
                });
            }
            Recognized::Refused(e) if e.kind == crate::error::ErrorKind::NotFound => {
                // Not Sluice's: a configured provider endpoint, or a 404.
                let step = match gw.passthrough_endpoint(head.method, path) {
                    Ok(Some((ep, provider))) => {
                        self.endpoint_headers(gw, shared, head, ep, provider)
                    }
                    Ok(None) => Err(e),
                    Err(e) => Err(e),
                };
                return match step {
                    Ok(s) => s,
                    Err(e) => HeadersStep::Reply(self.reply_error(e)),
                };
            }
            Recognized::Refused(e) => return HeadersStep::Reply(self.reply_error(e)),
        };
        self.set_api(endpoint.api);
        self.endpoint = Some(endpoint);
        let limit = gw.limits.max_request_body_bytes;
        let declared = head
            .content_length
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return HeadersStep::Reply(self.reply_error(GatewayError::payload_too_large(limit)));
        }
        if head.end_of_stream {
            return HeadersStep::Reply(self.reply_error(GatewayError::invalid_request(
                "The request body must be a JSON object.",
            )));
        }
        self.capture.keep_head(gw, head);
        HeadersStep::ReadBody
    }

    /// `GET /v1/models` in the caller's API: the models this key may use.
    fn models_list(&self, gw: &Gateway, key: &KeyEntry) -> Vec<u8> {
        let data: Vec<_> = gw
            .models_for(key)
            .map(|m| self.api.model_object(m, &gw.families(m)))
            .collect();
        self.api.models_list(data).to_string().into_bytes()
    }

    /// `read` returns the whole buffered body (`body_size` bytes).
    pub fn on_request_body<'g>(
        &mut self,
        gw: &'g Gateway,
        shared: &dyn SharedStore,
        body_size: usize,
        end_of_stream: bool,
        read: impl FnOnce() -> Option<Vec<u8>>,
    ) -> BodyStep<'g> {
        if self.phase == Phase::Upstream {
            return BodyStep::Pass;
        }
        if self.phase != Phase::Request {
            return BodyStep::Wait;
        }
        if let Some(ctx) = &self.passthrough {
            if body_size as u64 > ctx.max_body {
                let e = GatewayError::payload_too_large(ctx.max_body);
                return BodyStep::Reply(self.reply_error(e));
            }
            if !end_of_stream {
                return BodyStep::Wait;
            }
            let body = read().unwrap_or_default();
            return match self.endpoint_body(gw, shared, &body) {
                Ok(f) => {
                    self.phase = Phase::Upstream;
                    BodyStep::Forward(f)
                }
                Err(e) => BodyStep::Reply(self.reply_error(e)),
            };
        }
        let limit = gw.limits.max_request_body_bytes;
        if body_size as u64 > limit {
            return BodyStep::Reply(self.reply_error(GatewayError::payload_too_large(limit)));
        }
        if !end_of_stream {
            return BodyStep::Wait;
        }
        let body = read().unwrap_or_default();
        self.start_capture(gw, &body);
        match self.route_request(gw, shared, &body) {
            Ok(Routed::Answer(r)) => {
                self.capture.local_reply(&r);
                BodyStep::Reply(r)
            }
            Ok(Routed::Forward(f)) => {
                self.phase = Phase::Upstream;
                self.forwarded(gw, &f);
                BodyStep::Forward(f)
            }
            Err(e) => {
                let r = self.reply_error(e);
                self.capture.local_reply(&r);
                BodyStep::Reply(r)
            }
        }
    }

    /// The key id Envoy's global rate limiting counts this request under
    /// (set as filter state before the request leaves; docs/fleet.md): only
    /// for an admitted key with an rpm or tpm limit or a budget, so requests
    /// of other keys make no call to the rate limit service.
    pub fn globally_limited_key(&self) -> Option<&str> {
        if self.admission.globally_limited() {
            self.record.key_id.as_deref()
        } else {
            None
        }
    }

    /// The budget the request holds across Envoys while in flight
    /// (micro-dollars, the admission estimate; 0 without a budget).
    pub fn global_budget_hold(&self) -> u64 {
        self.admission.budget_hold_micros()
    }

    /// At the response's end, what is charged across Envoys, under
    /// `globally_limited_key`: (billed tokens, billed micro-dollars). `None`
    /// for keys Envoy's global limiting does not count, and for a request it
    /// refused (it took and reserved nothing).
    pub fn global_settlement(&mut self) -> Option<(u64, u64)> {
        if self.globally_refused || !self.admission.globally_limited() {
            return None;
        }
        let billed = self.billed();
        self.billed_at_end = Some(billed);
        let billed = billed.map(|(u, _)| u);
        let tokens = billed.map_or(0, |u| u.prompt_tokens.saturating_add(u.completion_tokens));
        Some((tokens, self.admission.billed_micros(billed)))
    }

    /// The tokens (prompt + completion) the provider billed, once the
    /// response has ended: charged to the global tpm counter at stream end.
    pub fn billed_tokens(&self) -> Option<u64> {
        self.billed()
            .map(|(u, _)| u.prompt_tokens.saturating_add(u.completion_tokens))
    }

    /// The finished record (for metrics), after `finish`.
    pub fn record(&self) -> &UsageRecord {
        &self.record
    }

    /// Guardrail rules that matched during the request.
    pub fn guardrail_hits(&self) -> &[Hit] {
        &self.guard_hits
    }

    /// Tags the record with the producing VM instance and its sequence number.
    pub fn set_sequence(&mut self, vm: &str, seq: u64) {
        self.record.vm = vm.to_string();
        self.record.seq = seq;
    }

    /// The usage record, at the end of the request (`on_log`); settles the
    /// budget reservation and the rate-limit admission with what the
    /// provider will bill.
    pub fn finish(&mut self, now_ms: u64, shared: &dyn SharedStore) -> Vec<u8> {
        if let Some(ticket) = self.plan.take() {
            // Dropping the ticket frees the plan.
            self.record.attempts = ticket.with(|p| p.attempt_records()).unwrap_or_default();
        }
        let billed = self.billed_at_end.take().unwrap_or_else(|| self.billed());
        self.admission.settle(shared, billed.map(|(u, _)| u));
        self.record.latency_ms = now_ms.saturating_sub(self.start_ms);
        if self.phase == Phase::Local {
            self.record.completed = true;
        }
        if self.response.stream_failed {
            self.record.completed = false;
        }
        if let Some((u, source)) = billed {
            self.record.tokens = u;
            self.record.usage_source = Cow::Borrowed(source);
        }
        if self.record.role.is_some() && self.record.digest.is_none() {
            // Answered by the gateway itself: the answer is the digest.
            let local = format!("local\n{}\n{:?}", self.record.status, self.record.error);
            self.record.digest = Some(upstream::forward_digest("", "", local.as_bytes()));
        }
        self.capture.finish(&self.record, self.start_ms);
        self.record.to_json()
    }

    /// What the provider will bill: its own count, or — when it reported
    /// none but generated output (a stream cut off before its usage chunk, a
    /// provider without usage) — an estimate, so an abandoned stream is
    /// never free: the prompt as estimated at admission, the output counted
    /// with the tokenizer, or one token per streamed event.
    fn billed(&self) -> Option<(TokenUsage, &'static str)> {
        let r = &self.response;
        match r.usage {
            Some(u) if r.usage_estimated => Some((u, "estimated")),
            Some(u) => Some((u, "provider")),
            None if !r.output_text.is_empty() || r.stream_events > 0 => {
                let completion = if r.output_text.is_empty() {
                    r.stream_events
                } else {
                    let model = self.record.upstream_model.as_deref().unwrap_or_default();
                    crate::tokens::count(model, &r.output_text)
                };
                let u = TokenUsage {
                    prompt_tokens: self.admission.prompt_estimate,
                    completion_tokens: completion,
                    ..TokenUsage::default()
                };
                Some((u, "estimated"))
            }
            None => None,
        }
    }

    /// The capture record of this request, after `finish` (if it was sampled
    /// and fit within `max_record_bytes`).
    pub fn take_capture(&mut self) -> Option<Vec<u8>> {
        self.capture.take()
    }
}
