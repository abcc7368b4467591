//! One request through the gateway, as a sans-IO state machine.
//!
//! The proxy-wasm glue reads headers and bodies from Envoy, hands them to a
//! `Flow`, and applies what the flow answers (reply locally, rewrite headers
//! and body, pause, pass). Nothing here calls the host, so every path is
//! unit-tested natively and under a wasm runtime.
//!
//! A request arrives in one of three client dialects and goes to a provider
//! of one of three kinds. Same dialect: passthrough, only `model` (and the
//! usage option) touched. Different: decode to the canonical model, encode
//! for the provider, and translate the response back event by event.

use std::borrow::Cow;

use crate::auth::{presented_key, CLIENT_KEY_HEADERS};
use crate::budget::{self, Reservation, SharedStore};
use crate::canonical::{Dialect, Request};
use crate::error::GatewayError;
use crate::gateway::{Credential, Gateway, KeyEntry};
use crate::guardrails::{Blocked, Hit};
use crate::limits;
use sluice_config::GuardDirection;

fn blocked(b: &Blocked) -> GatewayError {
    GatewayError::new(
        400,
        crate::error::ErrorKind::GuardrailBlocked,
        format!("Blocked by the gateway's guardrail '{}'.", b.rule),
    )
}
use crate::openai::chat_request::ChatRequest;
use crate::sse::SseParser;
use crate::translate::stream::{Decoder, Encoder, StreamTranslator};
use crate::translate::usage_probe::{self, StreamMeter};
use crate::translate::Warnings;
use crate::usage::{TokenUsage, UsageRecord, RECORD_VERSION};
use crate::{anthropic, gemini, openai};

/// Bytes of the client's `x-request-id` kept in the usage record.
const MAX_REQUEST_ID: usize = 128;

/// Header the route uses (`cluster_header`) to pick the upstream cluster.
pub const CLUSTER_HEADER: &str = "x-sluice-cluster";
/// Response header listing what a translation could not carry over.
pub const WARNINGS_HEADER: &str = "x-sluice-warnings";

/// The request headers the flow looks at.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestHead<'a> {
    /// `:authority` (matched against the configured `hosts`).
    pub authority: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub x_api_key: Option<&'a str>,
    pub x_goog_api_key: Option<&'a str>,
    pub anthropic_version: Option<&'a str>,
    pub content_length: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// The request has no body (headers carried end of stream).
    pub end_of_stream: bool,
}

impl<'a> RequestHead<'a> {
    /// The fields the flow reads, from a parsed header map
    /// (`header_map::parse`; names lower-case, as Envoy keeps them).
    pub fn from_headers(headers: &[(&'a str, &'a str)], end_of_stream: bool) -> Self {
        let get = |name: &str| crate::header_map::get(headers, name);
        RequestHead {
            authority: get(":authority"),
            method: get(":method").unwrap_or_default(),
            path: get(":path").unwrap_or_default(),
            authorization: get("authorization"),
            x_api_key: get("x-api-key"),
            x_goog_api_key: get("x-goog-api-key"),
            anthropic_version: get("anthropic-version"),
            content_length: get("content-length"),
            request_id: get("x-request-id"),
            end_of_stream,
        }
    }
}

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
        for name in self.remove {
            let replaced = self.set.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
            if !replaced && present.iter().any(|(k, _)| k.eq_ignore_ascii_case(name)) {
                out.push((*name, None));
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

#[derive(Debug, PartialEq, Eq)]
pub enum HeadersStep {
    /// Not a host the gateway serves (`hosts`): let the request through
    /// untouched, and record nothing for it.
    NotServed,
    Reply(LocalReply),
    /// Hold the headers and read the whole body.
    ReadBody,
}

#[derive(Debug, PartialEq, Eq)]
pub enum BodyStep<'a> {
    /// More body to come: keep buffering.
    Wait,
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

#[derive(Debug)]
enum ResponseMode {
    Unknown,
    /// Too large to meter, or not ours to read: pass through.
    Pass,
    /// Non-stream: buffer, meter, and translate if needed.
    Buffer,
    /// Passthrough stream, metered event by event.
    StreamPass {
        parser: SseParser,
        meter: StreamMeter,
        strip_usage_chunk: bool,
    },
    StreamTranslate(Box<StreamTranslator>),
    /// The gateway already answered in the client's dialect (the provider's
    /// body was too large to translate or check): the rest of the
    /// provider's bytes are dropped, never appended to that answer.
    Discard,
}

/// How the request reached its provider.
#[derive(Debug, Clone, Copy)]
struct Route {
    client: Dialect,
    provider: Dialect,
}

impl Route {
    fn translating(self) -> bool {
        self.client != self.provider
    }
}

/// Which client endpoint a request hit.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    OpenAiChat,
    AnthropicMessages,
    /// Gemini carries the model and stream-ness in the URL.
    Gemini {
        model: String,
        stream: bool,
    },
}

impl Endpoint {
    fn dialect(&self) -> Dialect {
        match self {
            Endpoint::OpenAiChat => Dialect::OpenAi,
            Endpoint::AnthropicMessages => Dialect::Anthropic,
            Endpoint::Gemini { .. } => Dialect::Gemini,
        }
    }
}

#[derive(Debug)]
pub struct Flow {
    start_ms: u64,
    phase: Phase,
    mode: ResponseMode,
    record: UsageRecord,
    client: Dialect,
    endpoint: Option<Endpoint>,
    route: Option<Route>,
    public_model: String,
    client_wants_usage: bool,
    usage: Option<TokenUsage>,
    warnings: Warnings,
    /// Digest of the authenticated key (looked up again in the body phase
    /// in the same `Gateway` the request started with).
    key_digest: Option<[u8; 32]>,
    /// An Anthropic client sent no `anthropic-version` (e.g. plain curl).
    client_anthropic_version_missing: bool,
    /// Budget reserved for this request, and the price to settle it with.
    reservation: Option<(Reservation, sluice_config::TokenPrice)>,
    /// Rate-limit admission (settled at the end) and the status to report.
    admission: Option<(limits::Admission, sluice_config::KeyLimits)>,
    rate_status: Option<limits::Status>,
    /// Guardrail rules that matched (for metrics).
    guard_hits: Vec<Hit>,
    /// Prompt-token estimate made at admission, and the output text seen,
    /// for an `estimated` usage record when the provider reports none.
    prompt_estimate: u64,
    output_text: String,
    /// Events with content forwarded on a passthrough stream: the
    /// completion estimate (about a token each) when the stream ends before
    /// the provider's usage arrives.
    stream_events: u64,
    /// Response guardrails apply to this request.
    guard_response: bool,
    /// Capture configured: method, path and `anthropic-version` kept from
    /// the headers phase until the body decides whether to capture.
    capture_head: Option<(String, String, Option<String>)>,
    /// This request is being captured (sampled); the finished record.
    capture: Option<Box<crate::capture::Capture>>,
    capture_out: Option<Vec<u8>>,
}

/// Digest of an upstream request for the online shadow comparison: the
/// provider, path and JSON body in canonical form (sorted keys, no
/// formatting), so equal requests from two builds compare equal.
fn forward_digest(provider: &str, path: &str, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(provider.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    match serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok())
    {
        Some(canon) => h.update(&canon),
        None => h.update(body),
    }
    hex16(&h.finalize())
}

fn hex16(d: &[u8]) -> String {
    use std::fmt::Write;
    d.iter()
        .take(16)
        .fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Headers removed from every forwarded request: the caller's credentials
/// (never sent upstream), the length (recomputed), and `accept-encoding`
/// (the filter must read the provider's bytes; Envoy's compressor can
/// re-encode towards the client).
/// (`content-length` is not listed: `Forward::set` always replaces it, and
/// each header edit is a host crossing.)
const UPSTREAM_REMOVE: &[&str] = &[
    CLIENT_KEY_HEADERS[0],
    CLIENT_KEY_HEADERS[1],
    CLIENT_KEY_HEADERS[2],
    "transfer-encoding",
    "accept-encoding",
];

/// Also removed when an Anthropic client's request goes to another kind.
const UPSTREAM_REMOVE_TRANSLATED: &[&str] = &[
    CLIENT_KEY_HEADERS[0],
    CLIENT_KEY_HEADERS[1],
    CLIENT_KEY_HEADERS[2],
    "transfer-encoding",
    "accept-encoding",
    "anthropic-version",
    "anthropic-beta",
];

/// `key=` in a query string (Gemini SDKs may authenticate that way).
fn query_key(path: &str) -> Option<&str> {
    let q = path.split_once('?')?.1;
    q.split('&').find_map(|kv| kv.strip_prefix("key="))
}

fn query_has(path: &str, param: &str) -> bool {
    path.split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|kv| kv == param))
}

/// `/v1beta/models/M:action` or `/v1/models/M:action`.
fn gemini_endpoint(path: &str) -> Option<(&str, &str)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, action) = rest.rsplit_once(':')?;
    (!model.is_empty() && !model.contains('/')).then_some((model, action))
}

impl Flow {
    pub fn new(now_ms: u64) -> Self {
        Flow {
            start_ms: now_ms,
            phase: Phase::Request,
            mode: ResponseMode::Unknown,
            record: UsageRecord {
                v: RECORD_VERSION,
                client_dialect: "openai",
                usage_source: "none",
                ..UsageRecord::default()
            },
            client: Dialect::OpenAi,
            endpoint: None,
            route: None,
            public_model: String::new(),
            client_wants_usage: false,
            usage: None,
            warnings: Warnings::default(),
            key_digest: None,
            client_anthropic_version_missing: true,
            reservation: None,
            admission: None,
            rate_status: None,
            guard_hits: Vec::new(),
            prompt_estimate: 0,
            output_text: String::new(),
            stream_events: 0,
            guard_response: false,
            capture_head: None,
            capture: None,
            capture_out: None,
        }
    }

    fn reply_error(&mut self, err: GatewayError) -> LocalReply {
        self.phase = Phase::Local;
        self.record.status = err.status;
        self.record.error = Some(err.kind.code());
        let mut headers = self.rate_status.map(|s| s.headers()).unwrap_or_default();
        if err.kind == crate::error::ErrorKind::RateLimited {
            if let Some(s) = self.rate_status {
                headers.push(("retry-after", s.reset_s.to_string()));
            }
        }
        LocalReply {
            status: err.status,
            content_type: "application/json",
            body: err.render(self.client),
            headers,
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

    pub fn on_request_headers(&mut self, gw: &Gateway, head: &RequestHead<'_>) -> HeadersStep {
        if !sluice_config::host_matches(&gw.hosts, head.authority.unwrap_or_default()) {
            return HeadersStep::NotServed;
        }
        // Correlation only (the ledger keys on the gateway's own id), and
        // bounded: the header is the client's.
        self.record.request_id =
            crate::error::truncate(head.request_id.unwrap_or_default(), MAX_REQUEST_ID).to_string();
        self.record.config_version.clone_from(&gw.version);
        self.record.role = gw.shadow.map(|r| r.as_str());
        self.client_anthropic_version_missing = head.anthropic_version.is_none();
        let path = head.path.split(['?', '#']).next().unwrap_or_default();
        let gemini = gemini_endpoint(path);
        // Errors before routing use the dialect the path implies.
        self.client = if path == "/v1/messages" || head.anthropic_version.is_some() {
            Dialect::Anthropic
        } else if gemini.is_some() || path.starts_with("/v1beta/") {
            Dialect::Gemini
        } else {
            Dialect::OpenAi
        };
        self.record.client_dialect = self.client.as_str();
        let presented = presented_key(head.authorization, head.x_api_key, head.x_goog_api_key)
            .or_else(|| query_key(head.path));
        // Hashed once: the body phase finds the key again by its digest.
        self.key_digest = presented.map(crate::auth::digest);
        let key = match gw.authenticate_digest_at(self.key_digest.as_ref(), self.start_ms / 1000) {
            Ok(k) => k,
            Err(e) => return HeadersStep::Reply(self.reply_error(e)),
        };
        self.record.key_id = Some(key.id.clone());
        let endpoint = match (head.method, path, gemini) {
            ("POST", "/v1/chat/completions", _) => Endpoint::OpenAiChat,
            ("POST", "/v1/messages", _) => Endpoint::AnthropicMessages,
            ("POST", _, Some((model, "generateContent"))) => Endpoint::Gemini {
                model: model.to_string(),
                stream: false,
            },
            ("POST", _, Some((model, "streamGenerateContent"))) => {
                if !query_has(head.path, "alt=sse") {
                    return HeadersStep::Reply(self.reply_error(GatewayError::invalid_request(
                        "streamGenerateContent is served as server-sent events only: add ?alt=sse.",
                    )));
                }
                Endpoint::Gemini {
                    model: model.to_string(),
                    stream: true,
                }
            }
            ("GET", "/v1/models", _) => {
                return HeadersStep::Reply(self.reply_ok(self.models_list(gw, key)))
            }
            ("GET", "/v1beta/models", _) => {
                return HeadersStep::Reply(self.reply_ok(self.models_list(gw, key)))
            }
            ("GET", p, _) if p.starts_with("/v1/models/") || p.starts_with("/v1beta/models/") => {
                let name = p.rsplit('/').next().unwrap_or_default();
                return HeadersStep::Reply(match gw.model_for(key, name) {
                    Ok(m) => {
                        let body = self.model_object(&m.name).to_string().into_bytes();
                        self.reply_ok(body)
                    }
                    Err(e) => self.reply_error(e),
                });
            }
            (m, "/v1/chat/completions" | "/v1/messages" | "/v1/models", _) => {
                return HeadersStep::Reply(
                    self.reply_error(GatewayError::method_not_allowed(m, path)),
                )
            }
            (m, p, _) => {
                return HeadersStep::Reply(self.reply_error(GatewayError::not_found(m, p)))
            }
        };
        self.client = endpoint.dialect();
        self.record.client_dialect = self.client.as_str();
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
        if gw.capture.is_some() {
            self.capture_head = Some((
                head.method.to_string(),
                head.path.to_string(),
                head.anthropic_version.map(str::to_string),
            ));
        }
        HeadersStep::ReadBody
    }

    fn model_object(&self, name: &str) -> serde_json::Value {
        match self.client {
            Dialect::OpenAi => {
                serde_json::json!({"id": name, "object": "model", "created": 0, "owned_by": "sluice"})
            }
            Dialect::Anthropic => serde_json::json!({"type": "model", "id": name,
                "display_name": name, "created_at": "1970-01-01T00:00:00Z"}),
            Dialect::Gemini => serde_json::json!({"name": format!("models/{name}"),
                "displayName": name,
                "supportedGenerationMethods": ["generateContent", "streamGenerateContent"]}),
        }
    }

    /// `GET /v1/models` in the caller's dialect: the models this key may use.
    fn models_list(&self, gw: &Gateway, key: &KeyEntry) -> Vec<u8> {
        let data: Vec<_> = gw.models_for(key).map(|m| self.model_object(m)).collect();
        let body = match self.client {
            Dialect::OpenAi => serde_json::json!({"object": "list", "data": data}),
            Dialect::Anthropic => {
                let first = data.first().map(|m| m["id"].clone());
                let last = data.last().map(|m| m["id"].clone());
                serde_json::json!({"data": data, "has_more": false, "first_id": first, "last_id": last})
            }
            Dialect::Gemini => serde_json::json!({"models": data}),
        };
        body.to_string().into_bytes()
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
        if self.phase != Phase::Request {
            return BodyStep::Wait;
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
            Ok(f) => {
                self.phase = Phase::Upstream;
                let path = f.set.iter().find(|(k, _)| *k == ":path").map(|(_, v)| v);
                let path = path.map(|p| p.as_ref()).unwrap_or_default();
                let provider = self.record.provider.as_deref().unwrap_or_default();
                if gw.shadow.is_some() {
                    self.record.digest = Some(forward_digest(provider, path, &f.body));
                }
                if let (Some(c), Some(route)) = (&mut self.capture, self.route) {
                    c.upstream_request(provider, route.provider.as_str(), path, &f.body);
                }
                BodyStep::Forward(f)
            }
            Err(e) => {
                let r = self.reply_error(e);
                if let Some(c) = &mut self.capture {
                    c.client_content_type(Some(r.content_type));
                    c.client_bytes(&r.body);
                }
                BodyStep::Reply(r)
            }
        }
    }

    /// Decides (sampling by stratum) whether this request is captured.
    fn start_capture(&mut self, gw: &Gateway, body: &[u8]) {
        let (Some(cfg), Some((method, path, version))) = (&gw.capture, self.capture_head.take())
        else {
            return;
        };
        let (model, stream) = match &self.endpoint {
            Some(Endpoint::Gemini { model, stream }) => (model.clone(), *stream),
            _ => match ChatRequest::parse(body) {
                Ok(p) => (p.model.to_string(), p.stream),
                Err(_) => (String::new(), false),
            },
        };
        let (stratum, tools) = crate::capture::stratum(&model, body, stream);
        if gw.sampler.borrow_mut().take(cfg, &stratum) {
            self.capture = Some(Box::new(crate::capture::Capture::new(
                cfg,
                &method,
                &path,
                version.as_deref(),
                stratum,
                tools,
                body,
            )));
        }
    }

    /// Request guardrails run on the body the client sent (every dialect),
    /// before routing and translation see it.
    fn route_request<'g>(
        &mut self,
        gw: &'g Gateway,
        shared: &dyn SharedStore,
        body: &[u8],
    ) -> Result<Forward<'g>, GatewayError> {
        // The `model` probe, parsed once: guardrail scoping needs the model
        // before routing does, and routing reuses it unless a mask changed
        // the body.
        let mut probe = None;
        if let Some(policy) = &gw.guardrails {
            let model = match &self.endpoint {
                Some(Endpoint::Gemini { model, .. }) => Some(model.clone()),
                _ => {
                    probe = Some(ChatRequest::parse(body));
                    probe
                        .as_ref()
                        .and_then(|p| p.as_ref().ok())
                        .map(|p| p.model.to_string())
                }
            };
            let key_id = self
                .key_digest
                .and_then(|d| gw.key_by_digest(&d))
                .map(|k| k.id.as_str())
                .unwrap_or_default();
            if let Some(model) = model {
                if policy.active(GuardDirection::Request, &model, key_id) {
                    match policy.apply_json(
                        GuardDirection::Request,
                        &model,
                        key_id,
                        body,
                        &mut self.guard_hits,
                    ) {
                        Err(b) => return Err(blocked(&b)),
                        Ok(Some(masked)) => return self.route_body(gw, shared, &masked, None),
                        Ok(None) => {}
                    }
                }
            }
        }
        self.route_body(gw, shared, body, probe)
    }

    /// `probe`: the body's `ChatRequest` probe if already parsed.
    fn route_body<'g, 'b>(
        &mut self,
        gw: &'g Gateway,
        shared: &dyn SharedStore,
        body: &'b [u8],
        probe: Option<Result<ChatRequest<'b>, GatewayError>>,
    ) -> Result<Forward<'g>, GatewayError> {
        let endpoint = self
            .endpoint
            .clone()
            .ok_or_else(|| GatewayError::invalid_request("no endpoint"))?;
        // The body is parsed once. The model decides the route and the route
        // decides which parse serves: passthrough needs only the probe
        // (borrowed `model`/`stream`, validating the JSON); translation needs
        // the full decode, which validates just as well. So the model is
        // first found by a byte scan, and a body the scan cannot read gets
        // the probe at once (its errors say what is wrong).
        let gemini = matches!(endpoint, Endpoint::Gemini { .. });
        let mut probe = match probe {
            Some(p) if !gemini => Some(p?),
            _ => None,
        };
        if gemini && body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(GatewayError::invalid_request(
                "The request body must be a JSON object.",
            ));
        }
        let scanned = match (&endpoint, &probe) {
            (Endpoint::Gemini { .. }, _) | (_, Some(_)) => None,
            _ => crate::json_splice::top_level_member(body, b"model")
                .and_then(|raw| serde_json::from_slice::<String>(raw).ok()),
        };
        if !gemini && probe.is_none() && scanned.is_none() {
            probe = Some(ChatRequest::parse(body)?);
        }
        let (model_name, stream) = match (&endpoint, &probe, scanned) {
            (Endpoint::Gemini { model, stream }, _, _) => (model.clone(), *stream),
            (_, Some(p), _) => (p.model.to_string(), p.stream),
            // `stream` is known once the body is parsed, below.
            (_, None, Some(m)) => (m, false),
            _ => return Err(GatewayError::invalid_request("missing model")),
        };
        self.record.stream = stream;
        self.public_model.clone_from(&model_name);
        self.client_wants_usage = probe.as_ref().is_some_and(|p| p.client_wants_usage);
        let key = self
            .key_digest
            .and_then(|d| gw.key_by_digest(&d))
            .ok_or_else(|| GatewayError::invalid_api_key("Incorrect API key provided."))?;
        // Only a configured name reaches the record (metric labels, the
        // ledger): a client-chosen one would give every request its own
        // label and memo entry. (Looked up again only on the error path.)
        let model = gw.model_for(key, &model_name).inspect_err(|_| {
            if gw.is_model(&model_name) {
                self.record.model = Some(model_name.clone());
            }
            if !gemini && probe.is_none() {
                // Refused before the parse: the record's `stream` as the
                // scan reads it.
                self.record.stream =
                    crate::json_splice::top_level_member(body, b"stream") == Some(b"true");
            }
        })?;
        self.record.model = Some(model_name.clone());
        let target = model.pick();
        let provider = gw
            .provider(target.provider)
            .ok_or_else(|| GatewayError::unavailable("The model's provider is not configured."))?;
        self.record.provider = Some(provider.name.clone());
        self.record.upstream_model = Some(target.upstream_model.clone());
        let route = Route {
            client: self.client,
            provider: Dialect::from_kind(provider.kind),
        };
        self.route = Some(route);
        // The decoded request: needed to translate, or for policy checks.
        let policy = gw.guardrails.as_ref();
        let needs_canonical = route.translating() || policy.is_some_and(|p| p.needs_request());
        let canonical = if needs_canonical {
            Some(match &endpoint {
                Endpoint::OpenAiChat => openai::request::decode(body)?,
                Endpoint::AnthropicMessages => anthropic::request::decode(body)?,
                Endpoint::Gemini { model, stream } => {
                    gemini::request::decode(body, model, *stream)?
                }
            })
        } else {
            None
        };
        if probe.is_none() && !gemini {
            // Still unparsed: translation reads the decode (which rejects
            // duplicate keys, so its model is the one scanned); passthrough
            // needs the probe to rewrite the body, decoded or not.
            let (stream, wants_usage) = match &canonical {
                Some(req) if route.translating() => {
                    if req.model != model_name {
                        return Err(GatewayError::invalid_request("'model' is ambiguous")
                            .with_param("model"));
                    }
                    (req.stream, req.stream_usage)
                }
                _ => {
                    let p = probe.insert(ChatRequest::parse(body)?);
                    (p.stream, p.client_wants_usage)
                }
            };
            self.record.stream = stream;
            self.client_wants_usage = wants_usage;
        }
        let stream = self.record.stream;
        let mut max_tokens = probe
            .as_ref()
            .and_then(|p| p.max_tokens)
            .or(canonical.as_ref().and_then(|r| r.max_tokens));
        let choices = probe
            .as_ref()
            .and_then(|p| p.n)
            .or(canonical.as_ref().and_then(|r| r.n));
        let mut prompt_tokens = body.len() as u64 / 4;
        if let Some(p) = policy {
            let refuse = |msg: String| {
                GatewayError::new(400, crate::error::ErrorKind::GuardrailBlocked, msg)
            };
            p.check_model(&model_name).map_err(refuse)?;
            if let Some(req) = &canonical {
                max_tokens = max_tokens.or(req.max_tokens);
                // Counted only when the request could exceed the cap.
                let counted = p.max_input_tokens.and_then(|cap| {
                    crate::tokens::count_request_over(&target.upstream_model, req, cap)
                });
                if let Some(n) = counted {
                    prompt_tokens = n;
                }
                p.check_request(req, counted).map_err(refuse)?;
            }
        }
        self.prompt_estimate = prompt_tokens;
        // Every choice (`n`) is a completion of its own; client integers are
        // combined without overflow.
        let completion_estimate = max_tokens
            .unwrap_or(budget::DEFAULT_ESTIMATED_COMPLETION)
            .saturating_mul(choices.unwrap_or(1).max(1));
        if let Some(l) = key.limits {
            let estimate = prompt_tokens.saturating_add(completion_estimate);
            let (res, status) =
                limits::admit(shared, &key.id, &l, estimate, stream, self.start_ms / 1000);
            self.rate_status = Some(status);
            match res {
                Ok(a) => self.admission = Some((a, l)),
                Err(which) => {
                    let what = match which {
                        limits::Refusal::Requests => "requests per minute",
                        limits::Refusal::Tokens => "tokens per minute",
                        limits::Refusal::Streams => "concurrent streams",
                    };
                    return Err(GatewayError::new(
                        429,
                        crate::error::ErrorKind::RateLimited,
                        format!("Rate limit reached for this API key ({what}). Retry later."),
                    ));
                }
            }
        }
        if let Some(b) = key.budget {
            // A budget cannot be kept on a model whose price is unknown: the
            // ledger would charge it $0 forever. Refused, and said why.
            let Some(price) = target.price else {
                return Err(GatewayError::new(
                    403,
                    crate::error::ErrorKind::PermissionDenied,
                    format!(
                        "The model '{model_name}' has no price configured, so this API key's \
                         budget cannot be applied to it. Ask the gateway operator to set \
                         its price."
                    ),
                ));
            };
            let estimate = price.cost(prompt_tokens, completion_estimate, 0);
            match budget::reserve(shared, b.epoch, &key.id, b.remaining_usd, estimate) {
                Some(r) => self.reservation = Some((r, price)),
                None => {
                    return Err(GatewayError::new(
                        429,
                        crate::error::ErrorKind::QuotaExceeded,
                        "This request would exceed the budget of this API key.",
                    ))
                }
            }
        }

        let new_body = if !route.translating() {
            match (&endpoint, &probe) {
                (Endpoint::Gemini { .. }, _) => body.to_vec(),
                (Endpoint::OpenAiChat, Some(p)) => p.rewrite_with(&target.upstream_model, true),
                (_, Some(p)) => p.rewrite_with(&target.upstream_model, false),
                _ => body.to_vec(),
            }
        } else {
            // Decoded above whenever the request is translated.
            let req = canonical.ok_or_else(|| GatewayError::invalid_request("no request"))?;
            self.check_translatable(&req, route.provider)?;
            match route.provider {
                Dialect::OpenAi => {
                    openai::request::encode(&req, &target.upstream_model, &mut self.warnings)
                }
                Dialect::Anthropic => {
                    anthropic::request::encode(&req, &target.upstream_model, &mut self.warnings)
                }
                Dialect::Gemini => gemini::request::encode(&req, &mut self.warnings),
            }
        };

        let upstream_path = match route.provider {
            Dialect::OpenAi => format!("{}/chat/completions", provider.base_path),
            Dialect::Anthropic => format!("{}/messages", provider.base_path),
            Dialect::Gemini if stream => format!(
                "{}/models/{}:streamGenerateContent?alt=sse",
                provider.base_path, target.upstream_model
            ),
            Dialect::Gemini => format!(
                "{}/models/{}:generateContent",
                provider.base_path, target.upstream_model
            ),
        };
        let mut set = Vec::with_capacity(6);
        set.push((":path", Cow::Owned(upstream_path)));
        set.push((":authority", Cow::Borrowed(provider.host.as_str())));
        set.push((CLUSTER_HEADER, Cow::Borrowed(provider.cluster.as_str())));
        match &provider.credential {
            Credential::None => {}
            Credential::Header { name, value } => {
                set.push((name.as_str(), Cow::Borrowed(value.as_str())));
            }
            Credential::Missing { env } => {
                return Err(GatewayError::unavailable(format!(
                    "The provider '{}' has no credential: set {} in Envoy's environment.",
                    provider.name, env
                )));
            }
        }
        if route.provider == Dialect::Anthropic
            && (route.translating() || self.client_anthropic_version_missing)
        {
            set.push(("anthropic-version", Cow::Borrowed(anthropic::API_VERSION)));
        }
        set.push(("content-length", Cow::Owned(new_body.len().to_string())));
        Ok(Forward {
            remove: if route.translating() {
                UPSTREAM_REMOVE_TRANSLATED
            } else {
                UPSTREAM_REMOVE
            },
            set,
            body: new_body,
        })
    }

    /// Rejects what translation cannot carry without changing the meaning;
    /// records what it can drop with a warning.
    fn check_translatable(&mut self, req: &Request, provider: Dialect) -> Result<(), GatewayError> {
        if req.n.is_some_and(|n| n > 1) {
            return Err(GatewayError::invalid_request(format!(
                "Only one choice per request can be translated to a {} provider (n > 1).",
                provider.as_str()
            ))
            .with_param("n"));
        }
        for field in &req.unmapped {
            if field.contains("server tool") {
                return Err(GatewayError::invalid_request(format!(
                    "{field} runs only at Anthropic; this model is served by a {} provider.",
                    provider.as_str()
                ))
                .with_param("tools"));
            }
            self.warnings.dropped(field, provider.as_str());
        }
        Ok(())
    }

    pub fn on_response_headers(
        &mut self,
        gw: &Gateway,
        status: u16,
        content_type: Option<&str>,
    ) -> ResponseHeaders {
        let mut out = ResponseHeaders::default();
        let (Phase::Upstream, Some(route)) = (self.phase, self.route) else {
            return out;
        };
        self.record.status = status;
        let is_sse = content_type.is_some_and(|c| {
            c.trim_start()
                .get(..17)
                .is_some_and(|p| p.eq_ignore_ascii_case("text/event-stream"))
        });
        let max_event = gw.limits.max_sse_event_bytes as usize;
        if !self.warnings.is_empty() {
            out.set
                .push((WARNINGS_HEADER, self.warnings.header_value()));
        }
        if let Some(s) = self.rate_status {
            out.set.extend(s.headers());
        }
        // Response guardrails for this request (no work when none are set).
        self.guard_response = gw.guardrails.as_ref().is_some_and(|p| {
            let key_id = self.record.key_id.as_deref().unwrap_or_default();
            p.active(GuardDirection::Response, &self.public_model, key_id)
        });
        let guard_stream = self.guard_response;
        if is_sse && (200..300).contains(&status) {
            out.remove_content_length = true;
            // Response guardrails read the text as canonical events, so a
            // guarded stream is re-encoded even between same-dialect ends.
            self.mode = if route.translating() || guard_stream {
                let created = self.start_ms / 1000;
                let mut t = StreamTranslator::new(
                    max_event,
                    Decoder::for_provider(route.provider),
                    Encoder::for_client(
                        route.client,
                        &self.public_model,
                        created,
                        self.client_wants_usage,
                    ),
                );
                if guard_stream {
                    t.guard = Some(Default::default());
                }
                ResponseMode::StreamTranslate(Box::new(t))
            } else {
                ResponseMode::StreamPass {
                    parser: SseParser::new(max_event),
                    meter: StreamMeter::new(route.provider),
                    strip_usage_chunk: route.provider == Dialect::OpenAi
                        && !self.client_wants_usage,
                }
            };
        } else {
            self.mode = ResponseMode::Buffer;
            if route.translating() || self.guard_response {
                // The body is rewritten in the client's dialect, and its
                // status may change (e.g. 529 → 503): hold the headers.
                out.remove_content_length = true;
                out.hold = true;
                out.set.push(("content-type", "application/json".into()));
            }
        }
        if let Some(c) = &mut self.capture {
            c.upstream_headers(status, content_type);
            let set = out.set.iter().find(|(k, _)| *k == "content-type");
            c.client_content_type(set.map(|(_, v)| v.as_ref()).or(content_type));
            let warnings = out.set.iter().find(|(k, _)| *k == WARNINGS_HEADER);
            c.client_warnings(warnings.map(|(_, v)| v.as_ref()));
        }
        out
    }

    /// Whether the next response-body callback needs the bytes (so the glue
    /// copies them out of Envoy only when they are used).
    pub fn needs_response_bytes(&self, end_of_stream: bool) -> bool {
        match self.mode {
            _ if self.phase != Phase::Upstream => false,
            ResponseMode::StreamPass { .. } | ResponseMode::StreamTranslate(_) => true,
            ResponseMode::Buffer => end_of_stream,
            ResponseMode::Unknown | ResponseMode::Pass => self.capture.is_some(),
            ResponseMode::Discard => false,
        }
    }

    /// Whether the next response-body callback uses the time (only until a
    /// stream's first byte is timed): the glue reads the clock — a host
    /// crossing — only then.
    pub fn needs_clock(&self) -> bool {
        self.phase == Phase::Upstream
            && self.record.ttft_ms.is_none()
            && matches!(
                self.mode,
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
        if self.capture.is_none() || self.phase != Phase::Upstream {
            return self.response_body(gw, body_size, end_of_stream, now_ms, read);
        }
        // Captured: the upstream bytes are kept as well as handed on. A
        // held (`Wait`) chunk comes back whole in a later callback.
        let bytes = read();
        let copy = bytes.clone();
        let step = self.response_body(gw, body_size, end_of_stream, now_ms, move || bytes);
        if let Some(c) = &mut self.capture {
            match (&step, &copy) {
                (ResponseBodyStep::Wait, _) => {}
                (_, None) if body_size > 0 => c.invalidate(),
                (step, copy) => {
                    let up = copy.as_deref().unwrap_or_default();
                    c.upstream_bytes(up);
                    match step {
                        ResponseBodyStep::Replace(b)
                        | ResponseBodyStep::ReplaceWithStatus(_, b) => c.client_bytes(b),
                        _ => c.client_bytes(up),
                    }
                }
            }
        }
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
        match &mut self.mode {
            ResponseMode::Unknown | ResponseMode::Pass => ResponseBodyStep::Pass,
            ResponseMode::Discard => {
                // Never "delivered to the end": the client got an error.
                self.record.completed = false;
                ResponseBodyStep::Replace(Vec::new())
            }
            ResponseMode::Buffer => {
                if body_size as u64 > gw.limits.max_response_body_bytes {
                    // Only a body that is neither translated nor checked may
                    // pass unread; otherwise the client gets a clear error
                    // and nothing of the provider's body (a guardrail must
                    // not be skipped because the answer is large).
                    let why = if route.translating() {
                        "The provider's response is too large to translate."
                    } else if self.guard_response {
                        "The provider's response is too large for the gateway's guardrails to check."
                    } else {
                        self.mode = ResponseMode::Pass;
                        return ResponseBodyStep::Pass;
                    };
                    self.mode = ResponseMode::Discard;
                    self.record.completed = false;
                    let err = GatewayError::new(502, crate::error::ErrorKind::Internal, why);
                    self.record.status = 502;
                    self.record.error = Some(err.kind.code());
                    return ResponseBodyStep::ReplaceWithStatus(502, err.render(route.client));
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
                let mut out: Vec<u8> = Vec::new();
                let mut dropped = false;
                let mut usage = None;
                let strip = *strip_usage_chunk;
                let mut events = 0u64;
                let res = parser.feed(&chunk, end_of_stream, |ev| {
                    let info = meter.inspect(&ev);
                    if info.usage.is_some() {
                        usage = info.usage;
                    }
                    if !info.usage_only && ev.data.as_deref().is_some_and(|d| d != b"[DONE]") {
                        events = events.saturating_add(1);
                    }
                    if strip && info.usage_only {
                        dropped = true;
                    } else {
                        out.extend_from_slice(ev.raw);
                    }
                });
                let unchanged = !dropped && !had_carry && parser.pending() == 0;
                self.stream_events = self.stream_events.saturating_add(events);
                if usage.is_some() {
                    self.usage = usage;
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
                    let body = err.render(route.client);
                    let name = (route.client == Dialect::Anthropic).then_some("error");
                    crate::sse::write_event(&mut out, name, &body);
                    self.record.completed = false;
                    self.mode = ResponseMode::Pass;
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
                let guard = match (&gw.guardrails, self.guard_response) {
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
                    self.usage = t.usage;
                }
                if t.errored {
                    self.record.completed = false;
                }
                if end_of_stream && self.usage.is_none() {
                    self.output_text = std::mem::take(&mut t.text);
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
        let (Some(policy), true) = (&gw.guardrails, self.guard_response) else {
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
                self.record.error = Some(err.kind.code());
                ResponseBodyStep::ReplaceWithStatus(400, err.render(self.client))
            }
        }
    }

    fn finish_buffered(&mut self, route: Route, body: &[u8]) -> ResponseBodyStep {
        let status = self.record.status;
        if !route.translating() {
            if (200..300).contains(&status) {
                self.usage = usage_probe::body_usage(route.provider, body);
            }
            return ResponseBodyStep::Pass;
        }
        if !(200..300).contains(&status) {
            let (client_status, out) =
                usage_probe::translate_error(route.provider, route.client, status, body);
            self.record.status = client_status;
            return ResponseBodyStep::ReplaceWithStatus(client_status, out);
        }
        match usage_probe::decode_response(route.provider, body) {
            Some(mut r) => {
                self.usage = r.usage;
                if r.usage.is_none() {
                    self.output_text = crate::translate::text_of(&r.parts);
                    for p in &r.parts {
                        if let crate::canonical::Part::ToolCall { arguments, .. } = p {
                            self.output_text.push_str(arguments);
                        }
                    }
                }
                r.model.clone_from(&self.public_model);
                if r.created == 0 {
                    r.created = self.start_ms / 1000;
                }
                ResponseBodyStep::ReplaceWithStatus(
                    status,
                    usage_probe::encode_response(route.client, &r),
                )
            }
            None => {
                self.record.status = 502;
                self.record.completed = false;
                let err = GatewayError::new(
                    502,
                    crate::error::ErrorKind::Internal,
                    "The provider returned a response the gateway could not read.",
                );
                ResponseBodyStep::ReplaceWithStatus(502, err.render(route.client))
            }
        }
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
    /// budget reservation with the actual cost.
    pub fn finish(&mut self, now_ms: u64, shared: &dyn SharedStore) -> Vec<u8> {
        // What the provider will bill: its own count, or — when it reported
        // none but generated output (a stream cut off before its usage
        // chunk, a provider without usage) — an estimate, so an abandoned
        // stream is never free: the prompt as estimated at admission, the
        // output counted with the tokenizer, or one token per streamed event.
        let billed = match self.usage {
            Some(u) => Some((u, "provider")),
            None if !self.output_text.is_empty() || self.stream_events > 0 => {
                let completion = if self.output_text.is_empty() {
                    self.stream_events
                } else {
                    let model = self.record.upstream_model.as_deref().unwrap_or_default();
                    crate::tokens::count(model, &self.output_text)
                };
                let u = TokenUsage {
                    prompt_tokens: self.prompt_estimate,
                    completion_tokens: completion,
                    ..TokenUsage::default()
                };
                Some((u, "estimated"))
            }
            None => None,
        };
        if let Some((a, l)) = self.admission.take() {
            let actual = billed.map(|(u, _)| u.prompt_tokens.saturating_add(u.completion_tokens));
            limits::settle(shared, &l, &a, actual);
        }
        if let Some((r, price)) = self.reservation.take() {
            let actual = billed.map_or(0.0, |(u, _)| {
                price.cost_with_cache_writes(
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.cached_tokens,
                    u.cache_creation_tokens,
                )
            });
            budget::settle(shared, &r, actual);
        }
        self.record.latency_ms = now_ms.saturating_sub(self.start_ms);
        if self.phase == Phase::Local {
            self.record.completed = true;
        }
        if let Some((u, source)) = billed {
            self.record.tokens = u;
            self.record.usage_source = source;
        }
        if self.record.role.is_some() && self.record.digest.is_none() {
            // Answered by the gateway itself: the answer is the digest.
            let local = format!("local\n{}\n{:?}", self.record.status, self.record.error);
            self.record.digest = Some(forward_digest("", "", local.as_bytes()));
        }
        if let Some(c) = self.capture.take() {
            self.capture_out = c.finish(&self.record, self.start_ms);
        }
        self.record.to_json()
    }

    /// The capture record of this request, after `finish` (if it was sampled
    /// and fit within `max_record_bytes`).
    pub fn take_capture(&mut self) -> Option<Vec<u8>> {
        self.capture_out.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn gw() -> Gateway {
        Gateway::new(gw_config(), |_| Some("prov-secret".into())).unwrap()
    }

    fn gw_config() -> sluice_config::PluginConfig {
        serde_json::from_value(serde_json::json!({
            "version": "cfg-7",
            "keys": [
                {"id": "k1", "sha256": sluice_config::hash_key("sk-1")},
                {"id": "k2", "sha256": sluice_config::hash_key("sk-2"), "models": ["other"]}
            ],
            "providers": [{"name": "mock", "kind": "openai", "cluster": "mock_cluster",
                           "host": "mock.local", "base_path": "/v1",
                           "api_key_env": "MOCK_KEY"}],
            "models": [
                {"name": "mock-gpt", "targets": [{"provider": "mock", "model": "gpt-up"}]},
                {"name": "other", "targets": [{"provider": "mock", "model": "o"}]}
            ],
            "limits": {"max_request_body_bytes": 2048, "max_sse_event_bytes": 1024}
        }))
        .unwrap()
    }

    fn head<'a>(method: &'a str, path: &'a str, auth: Option<&'a str>) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            authorization: auth,
            request_id: Some("rid-1"),
            ..Default::default()
        }
    }

    fn reply_json(step: HeadersStep) -> (u16, Value) {
        match step {
            HeadersStep::Reply(r) => (r.status, serde_json::from_slice(&r.body).unwrap()),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn finish_json(f: &mut Flow, now: u64) -> Value {
        serde_json::from_slice(&f.finish(now, &crate::budget::MemoryStore::default())).unwrap()
    }

    #[test]
    fn missing_unknown_and_wrong_keys_get_openai_401() {
        let g = gw();
        for auth in [None, Some("Bearer sk-nope"), Some("Basic xyz")] {
            let mut f = Flow::new(0);
            let (status, v) =
                reply_json(f.on_request_headers(&g, &head("POST", "/v1/chat/completions", auth)));
            assert_eq!(status, 401);
            assert_eq!(v["error"]["code"], "invalid_api_key");
            let rec = finish_json(&mut f, 5);
            assert_eq!(rec["status"], 401);
            assert_eq!(rec["error"], "invalid_api_key");
            assert_eq!(rec["key_id"], Value::Null);
        }
    }

    #[test]
    fn models_list_is_per_key() {
        let g = gw();
        let (s, v) = reply_json(
            Flow::new(0).on_request_headers(&g, &head("GET", "/v1/models", Some("Bearer sk-2"))),
        );
        assert_eq!(s, 200);
        assert_eq!(v["data"].as_array().unwrap().len(), 1);
        assert_eq!(v["data"][0]["id"], "other");
        let (s, _) = reply_json(
            Flow::new(0)
                .on_request_headers(&g, &head("GET", "/v1/models/mock-gpt", Some("Bearer sk-2"))),
        );
        assert_eq!(s, 404);
    }

    #[test]
    fn unknown_paths_and_methods() {
        let g = gw();
        let (s, v) = reply_json(
            Flow::new(0)
                .on_request_headers(&g, &head("POST", "/v1/embeddings", Some("Bearer sk-1"))),
        );
        assert_eq!((s, v["error"]["code"].as_str()), (404, Some("not_found")));
        let (s, _) = reply_json(Flow::new(0).on_request_headers(
            &g,
            &head("GET", "/v1/chat/completions", Some("Bearer sk-1")),
        ));
        assert_eq!(s, 405);
    }

    #[test]
    fn declared_or_actual_oversize_is_413() {
        let g = gw();
        let mut h = head("POST", "/v1/chat/completions", Some("Bearer sk-1"));
        h.content_length = Some("4096");
        let (s, v) = reply_json(Flow::new(0).on_request_headers(&g, &h));
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (413, Some("payload_too_large"))
        );

        let mut f = Flow::new(0);
        let h = head("POST", "/v1/chat/completions", Some("Bearer sk-1"));
        assert_eq!(f.on_request_headers(&g, &h), HeadersStep::ReadBody);
        assert_eq!(
            f.on_request_body(
                &g,
                &crate::budget::MemoryStore::default(),
                1000,
                false,
                || None
            ),
            BodyStep::Wait
        );
        match f.on_request_body(
            &g,
            &crate::budget::MemoryStore::default(),
            3000,
            false,
            || None,
        ) {
            BodyStep::Reply(r) => assert_eq!(r.status, 413),
            other => panic!("{other:?}"),
        }
    }

    fn forward<'g>(g: &'g Gateway, f: &mut Flow, key: &str, body: &str) -> BodyStep<'g> {
        let auth = format!("Bearer {key}");
        let h = head("POST", "/v1/chat/completions", Some(&auth));
        assert_eq!(f.on_request_headers(g, &h), HeadersStep::ReadBody);
        let b = body.as_bytes().to_vec();
        f.on_request_body(
            g,
            &crate::budget::MemoryStore::default(),
            b.len(),
            true,
            || Some(b),
        )
    }

    /// A gateway whose key `k1` has a budget; `priced` sets the target's price.
    fn budget_gw(priced: bool) -> Gateway {
        let mut target = serde_json::json!({"provider": "mock", "model": "gpt-up"});
        if priced {
            target["price"] = serde_json::json!({"input": 0.001, "output": 0.001});
        }
        let cfg = serde_json::from_value(serde_json::json!({
            "version": "cfg-b",
            "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1"),
                      "budget": {"remaining_usd": 1.0, "epoch": 1}}],
            "providers": [{"name": "mock", "kind": "openai", "cluster": "mock_cluster",
                           "host": "mock.local", "base_path": "/v1", "api_key_env": "MOCK_KEY"}],
            "models": [{"name": "mock-gpt", "targets": [target]}]
        }))
        .unwrap();
        Gateway::new(cfg, |_| Some("prov-secret".into())).unwrap()
    }

    fn admit(g: &Gateway, store: &crate::budget::MemoryStore, f: &mut Flow, body: &str) -> u16 {
        let h = head("POST", "/v1/chat/completions", Some("Bearer sk-1"));
        assert_eq!(f.on_request_headers(g, &h), HeadersStep::ReadBody);
        let b = body.as_bytes().to_vec();
        match f.on_request_body(g, store, b.len(), true, || Some(b)) {
            BodyStep::Reply(r) => r.status,
            BodyStep::Forward(_) => 200,
            BodyStep::Wait => 0,
        }
    }

    #[test]
    fn client_chosen_names_never_reach_the_record_unbounded() {
        let mut cfg: sluice_config::PluginConfig = serde_json::from_value(serde_json::json!({
            "version": "v", "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
            "providers": [{"name": "mock", "kind": "openai", "cluster": "c",
                           "host": "h", "base_path": "/v1", "api_key_env": "K"}],
            "models": [{"name": "mock-gpt", "targets": [{"provider": "mock", "model": "u"}]}]
        }))
        .unwrap();
        cfg.limits.max_request_body_bytes = 2 << 20;
        let g = Gateway::new(cfg, |_| Some("s".into())).unwrap();
        // A 1 MiB model name and a huge multi-byte request id.
        let rid = "r\u{e9}".repeat(100_000);
        let h = RequestHead {
            request_id: Some(&rid),
            ..head("POST", "/v1/chat/completions", Some("Bearer sk-1"))
        };
        let mut f = Flow::new(0);
        assert_eq!(f.on_request_headers(&g, &h), HeadersStep::ReadBody);
        let b = format!(r#"{{"model":"{}","messages":[]}}"#, "m".repeat(1 << 20)).into_bytes();
        let store = crate::budget::MemoryStore::default();
        match f.on_request_body(&g, &store, b.len(), true, || Some(b)) {
            BodyStep::Reply(r) => assert_eq!(r.status, 404),
            other => panic!("expected 404, got {other:?}"),
        }
        let out = f.finish(1, &store);
        assert!(out.len() < 2048, "{} bytes", out.len());
        let rec: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(rec["model"], Value::Null, "an unknown model is not a label");
        assert!(rec["request_id"].as_str().unwrap().len() <= MAX_REQUEST_ID);
    }

    #[test]
    fn an_oversized_answer_is_an_error_and_nothing_of_the_raw_body() {
        // Translated (Anthropic client, OpenAI provider), and a passthrough
        // with response guardrails: neither may hand on unread bytes.
        for (path, guard) in [("/v1/messages", false), ("/v1/chat/completions", true)] {
            let mut cfg = serde_json::json!({
                "version": "v", "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
                "providers": [{"name": "mock", "kind": "openai", "cluster": "c",
                               "host": "h", "base_path": "/v1", "api_key_env": "K"}],
                "models": [{"name": "mock-gpt", "targets": [{"provider": "mock", "model": "u"}]}],
                "limits": {"max_response_body_bytes": 1024}
            });
            if guard {
                cfg["guardrails"] = serde_json::json!({"rules": [{"name": "e",
                    "detector": "email", "action": "mask", "on": "response"}]});
            }
            let g =
                Gateway::new(serde_json::from_value(cfg).unwrap(), |_| Some("s".into())).unwrap();
            let mut f = Flow::new(0);
            let h = RequestHead {
                method: "POST",
                path,
                x_api_key: Some("sk-1"),
                anthropic_version: Some("2023-06-01"),
                request_id: Some("r"),
                ..Default::default()
            };
            assert_eq!(f.on_request_headers(&g, &h), HeadersStep::ReadBody);
            let b = br#"{"model":"mock-gpt","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#.to_vec();
            let store = crate::budget::MemoryStore::default();
            assert!(matches!(
                f.on_request_body(&g, &store, b.len(), true, || Some(b)),
                BodyStep::Forward(_)
            ));
            let hs = f.on_response_headers(&g, 200, Some("application/json"));
            assert!(hs.hold, "{path}");
            let raw = vec![b'x'; 2000];
            match f.on_response_body(&g, raw.len(), false, 1, || Some(raw.clone())) {
                ResponseBodyStep::ReplaceWithStatus(502, body) => {
                    assert!(!body.windows(3).any(|w| w == b"xxx"));
                }
                other => panic!("{path}: expected a 502, got {other:?}"),
            }
            for eos in [false, true] {
                assert!(!f.needs_response_bytes(eos));
                assert_eq!(
                    f.on_response_body(&g, 2000, eos, 2, || Some(vec![b'y'; 2000])),
                    ResponseBodyStep::Replace(Vec::new()),
                    "{path}: the rest of the provider's body is dropped"
                );
            }
            let rec = finish_json(&mut f, 3);
            assert_eq!(
                (rec["status"].as_u64(), rec["completed"].as_bool()),
                (Some(502), Some(false))
            );
        }
    }

    #[test]
    fn other_hosts_on_a_shared_listener_are_not_touched() {
        let mut cfg = gw_config();
        cfg.hosts = vec!["llm.example.com".into()];
        let g = Gateway::new(cfg, |_| Some("s".into())).unwrap();
        let at = |authority| {
            let h = RequestHead {
                authority: Some(authority),
                ..head("POST", "/v1/chat/completions", None)
            };
            Flow::new(0).on_request_headers(&g, &h)
        };
        // Another application's request: no 401, nothing read.
        assert_eq!(at("shop.example.com"), HeadersStep::NotServed);
        // The gateway's own host answers as always (here: no key → 401).
        assert!(matches!(at("llm.example.com:443"), HeadersStep::Reply(r) if r.status == 401));
    }

    #[test]
    fn a_budget_is_never_silently_skipped_on_an_unpriced_model() {
        let g = budget_gw(false);
        let mut f = Flow::new(0);
        let store = crate::budget::MemoryStore::default();
        let body = r#"{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(admit(&g, &store, &mut f, body), 403);
        assert_eq!(finish_json(&mut f, 1)["error"], "permission_denied");
    }

    #[test]
    fn every_choice_counts_in_the_budget_estimate() {
        // $1 left at $0.001 a token: 100 output tokens fit once, not ×20.
        let g = budget_gw(true);
        let store = crate::budget::MemoryStore::default();
        let one = r#"{"model":"mock-gpt","max_tokens":100,"messages":[]}"#;
        let many = r#"{"model":"mock-gpt","max_tokens":100,"n":20,"messages":[]}"#;
        assert_eq!(admit(&g, &store, &mut Flow::new(0), many), 429);
        assert_eq!(admit(&g, &store, &mut Flow::new(0), one), 200);
        // Client integers that would wrap are saturated, not wrapped.
        let huge = format!(
            r#"{{"model":"mock-gpt","max_tokens":{},"n":{},"messages":[]}}"#,
            u64::MAX,
            u64::MAX
        );
        assert_eq!(admit(&g, &store, &mut Flow::new(0), &huge), 429);
    }

    #[test]
    fn an_abandoned_passthrough_stream_is_charged_an_estimate() {
        let g = budget_gw(true);
        let store = crate::budget::MemoryStore::default();
        let mut f = Flow::new(0);
        let body = r#"{"model":"mock-gpt","max_tokens":100,"stream":true,"messages":[{"role":"user","content":"hello there"}]}"#;
        assert_eq!(admit(&g, &store, &mut f, body), 200);
        f.on_response_headers(&g, 200, Some("text/event-stream"));
        // Three content chunks, then the client goes away: no usage chunk.
        let chunk = br#"data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a"}}]}

"#
        .repeat(3);
        f.on_response_body(&g, chunk.len(), false, 1, || Some(chunk.clone()));
        let rec = serde_json::from_slice::<Value>(&f.finish(5, &store)).unwrap();
        assert_eq!(rec["usage_source"], "estimated");
        assert_eq!(rec["completion_tokens"], 3);
        assert!(rec["prompt_tokens"].as_u64().unwrap() > 0);
        // The budget was settled with that estimate, not $0: the spend is
        // in the shared counter (prompt + 3 completion tokens at $0.001).
        let spent = {
            let (v, _) = crate::budget::SharedStore::get(&store, "sluice.budget.1.k1");
            let v = v.unwrap();
            u64::from_le_bytes(v[..8].try_into().unwrap())
        };
        let want = (rec["prompt_tokens"].as_u64().unwrap() + 3) * 1000;
        assert_eq!(spent, want);
    }

    #[test]
    fn a_masked_passthrough_body_is_still_rewritten_for_the_provider() {
        let cfg: sluice_config::PluginConfig = serde_json::from_value(serde_json::json!({
            "version": "cfg-m",
            "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
            "providers": [{"name": "mock", "kind": "openai", "cluster": "mock_cluster",
                           "host": "mock.local", "base_path": "/v1", "api_key_env": "MOCK_KEY"}],
            "models": [{"name": "mock-gpt", "targets": [{"provider": "mock", "model": "gpt-up"}]}],
            // A cap makes the policy decode the request (the canonical form)
            // even though the request passes through (an output cap: the
            // lite module refuses input-token caps).
            "guardrails": {"rules": [{"name": "pii", "detector": "email", "action": "mask"}],
                           "max_tokens": 100000}
        }))
        .unwrap();
        let g = Gateway::new(cfg, |_| Some("prov-secret".into())).unwrap();
        let mut f = Flow::new(0);
        let body = r#"{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"mail a@b.example"}]}"#;
        let BodyStep::Forward(fw) = forward(&g, &mut f, "sk-1", body) else {
            panic!("expected forward")
        };
        let up: Value = serde_json::from_slice(&fw.body).unwrap();
        assert!(!up.to_string().contains("a@b.example"), "masked");
        assert_eq!(
            up["model"], "gpt-up",
            "the provider's model name, masked or not"
        );
        assert_eq!(up["stream_options"]["include_usage"], true);
    }

    #[test]
    fn translated_body_is_parsed_once_and_still_checked() {
        let g = gw();
        let send = |body: &str| {
            let mut f = Flow::new(0);
            let h = RequestHead {
                method: "POST",
                path: "/v1/messages",
                x_api_key: Some("sk-1"),
                anthropic_version: Some("2023-06-01"),
                request_id: Some("r"),
                ..Default::default()
            };
            assert_eq!(f.on_request_headers(&g, &h), HeadersStep::ReadBody);
            let b = body.as_bytes().to_vec();
            let store = crate::budget::MemoryStore::default();
            let step = f.on_request_body(&g, &store, b.len(), true, || Some(b));
            let status = match step {
                BodyStep::Reply(r) => r.status,
                BodyStep::Forward(fw) => {
                    let up: Value = serde_json::from_slice(&fw.body).unwrap();
                    assert_eq!(
                        (up["model"].as_str(), up["stream"].as_bool()),
                        (Some("gpt-up"), Some(true))
                    );
                    200
                }
                BodyStep::Wait => 0,
            };
            (status, finish_json(&mut f, 1))
        };
        // Anthropic client → OpenAI provider: `stream` from the one decode.
        let (status, rec) = send(
            r#"{"model":"mock-gpt","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        );
        assert_eq!((status, rec["stream"].as_bool()), (200, Some(true)));
        // Duplicate `model` keys are refused whichever parse runs.
        let (status, _) =
            send(r#"{"model":"mock-gpt","model":"other","max_tokens":5,"messages":[]}"#);
        assert_eq!(status, 400);
        // Broken JSON after a readable model: refused by the decode.
        let (status, _) = send(r#"{"model":"mock-gpt","messages":[{"#);
        assert_eq!(status, 400);
        // An unknown model is refused before any parse; the record still
        // says it was a stream.
        let (status, rec) = send(r#"{"model":"nope","max_tokens":5,"messages":[],"stream":true}"#);
        assert_eq!((status, rec["stream"].as_bool()), (404, Some(true)));
    }

    #[test]
    fn clock_is_needed_only_until_a_streams_first_byte() {
        let g = gw();
        let mut f = Flow::new(0);
        let body = r#"{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}"#;
        assert!(matches!(
            forward(&g, &mut f, "sk-1", body),
            BodyStep::Forward(_)
        ));
        f.on_response_headers(&g, 200, Some("application/json"));
        assert!(
            !f.needs_clock(),
            "a buffered answer has no first byte to time"
        );

        let mut f = Flow::new(0);
        let body =
            r#"{"model":"mock-gpt","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        assert!(matches!(
            forward(&g, &mut f, "sk-1", body),
            BodyStep::Forward(_)
        ));
        assert!(!f.needs_clock());
        f.on_response_headers(&g, 200, Some("text/event-stream"));
        assert!(f.needs_clock());
        let chunk =
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"}}]}\n\n".to_vec();
        f.on_response_body(&g, chunk.len(), false, 7, || Some(chunk));
        assert!(!f.needs_clock());
        let rec = finish_json(&mut f, 9);
        assert_eq!(rec["ttft_ms"], 7);
    }

    #[test]
    fn malformed_and_unknown_model_bodies() {
        let g = gw();
        let mut f = Flow::new(0);
        match forward(&g, &mut f, "sk-1", "{not json") {
            BodyStep::Reply(r) => {
                assert_eq!(r.status, 400);
                let v: Value = serde_json::from_slice(&r.body).unwrap();
                assert_eq!(v["error"]["type"], "invalid_request_error");
            }
            other => panic!("{other:?}"),
        }
        let mut f = Flow::new(0);
        match forward(&g, &mut f, "sk-2", r#"{"model":"mock-gpt","messages":[]}"#) {
            BodyStep::Reply(r) => assert_eq!(r.status, 404),
            other => panic!("{other:?}"),
        }
        let rec = finish_json(&mut f, 1);
        assert_eq!(rec["model"], "mock-gpt");
        assert_eq!(rec["error"], "model_not_found");
    }

    #[test]
    fn forward_rewrites_everything_the_provider_needs() {
        let g = gw();
        let mut f = Flow::new(0);
        let BodyStep::Forward(fw) = forward(
            &g,
            &mut f,
            "sk-1",
            r#"{"model":"mock-gpt","messages":[{"role":"user","content":"hi"}]}"#,
        ) else {
            panic!("expected forward")
        };
        let get = |n: &str| {
            fw.set
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
        };
        assert_eq!(get(":path").as_deref(), Some("/v1/chat/completions"));
        assert_eq!(get(":authority").as_deref(), Some("mock.local"));
        assert_eq!(get(CLUSTER_HEADER).as_deref(), Some("mock_cluster"));
        assert_eq!(get("authorization").as_deref(), Some("Bearer prov-secret"));
        assert_eq!(get("content-length"), Some(fw.body.len().to_string()));
        assert!(fw.remove.contains(&"x-api-key") && fw.remove.contains(&"accept-encoding"));
        let body: Value = serde_json::from_slice(&fw.body).unwrap();
        assert_eq!(body["model"], "gpt-up");

        // What the glue actually sends to Envoy: the client's key replaced
        // (not removed, then set), absent headers not removed, the unchanged
        // `:path` left alone, a duplicated header replaced whole.
        let h = |k: &'static str, v: &'static str| (k, v);
        let present = [
            h(":path", "/v1/chat/completions"),
            h(":authority", "127.0.0.1:10000"),
            h("authorization", "Bearer sk-1"),
            h("accept-encoding", "gzip"),
            h("content-length", "60"),
            h("x-sluice-cluster", "mock_cluster"),
            h("x-sluice-cluster", "other"),
        ];
        let len = fw.body.len().to_string();
        let edits = fw.header_edits(&present);
        assert_eq!(
            edits,
            vec![
                ("accept-encoding", None),
                (":authority", Some("mock.local")),
                (CLUSTER_HEADER, Some("mock_cluster")),
                ("authorization", Some("Bearer prov-secret")),
                ("content-length", Some(len.as_str())),
            ]
        );
        // Nothing present: every set is made, no removal is.
        let all = fw.header_edits(&[]);
        assert!(all.iter().all(|(_, v)| v.is_some()));
        assert_eq!(all.len(), fw.set.len());
    }

    #[test]
    fn missing_provider_credential_is_503_not_a_leak() {
        let cfg = serde_json::from_value(serde_json::json!({
            "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
            "providers": [{"name": "p", "kind": "openai", "cluster": "c", "host": "h",
                           "api_key_env": "UNSET_KEY"}],
            "models": [{"name": "m", "targets": [{"provider": "p", "model": "u"}]}]
        }))
        .unwrap();
        let g = Gateway::new(cfg, |_| None).unwrap();
        let mut f = Flow::new(0);
        match forward(&g, &mut f, "sk-1", r#"{"model":"m"}"#) {
            BodyStep::Reply(r) => {
                assert_eq!(r.status, 503);
                assert!(String::from_utf8_lossy(&r.body).contains("UNSET_KEY"));
            }
            other => panic!("{other:?}"),
        }
    }

    const STREAM: &str = concat!(
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n",
        "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":2,\"prompt_tokens_details\":{\"cached_tokens\":4}}}\n\n",
        "data: [DONE]\n\n"
    );

    /// Runs STREAM through a flow split at `cut`; returns (client bytes, record).
    fn run_stream(body: &str, cut: usize) -> (String, Value) {
        let g = gw();
        let mut f = Flow::new(100);
        assert!(matches!(
            forward(&g, &mut f, "sk-1", body),
            BodyStep::Forward(_)
        ));
        assert!(
            f.on_response_headers(&g, 200, Some("text/event-stream; charset=utf-8"))
                .remove_content_length
        );
        let mut client = Vec::new();
        let bytes = STREAM.as_bytes();
        let pieces = [&bytes[..cut], &bytes[cut..], &b""[..]];
        for (i, p) in pieces.iter().enumerate() {
            let v = p.to_vec();
            match f.on_response_body(&g, v.len(), i == 2, 150 + i as u64, || Some(v.clone())) {
                ResponseBodyStep::Pass => client.extend_from_slice(p),
                ResponseBodyStep::Replace(r) => client.extend_from_slice(&r),
                other => panic!("streams never wait or change status: {other:?}"),
            }
        }
        (String::from_utf8(client).unwrap(), finish_json(&mut f, 400))
    }

    #[test]
    fn stream_usage_chunk_stripped_when_client_did_not_ask_at_any_split() {
        for cut in 0..=STREAM.len() {
            let (client, rec) = run_stream(r#"{"model":"mock-gpt","stream":true}"#, cut);
            assert!(!client.contains("\"choices\":[]"), "cut {cut}: {client}");
            assert!(client.ends_with("data: [DONE]\n\n"));
            assert_eq!(client.matches("data: ").count(), 3);
            assert_eq!(rec["prompt_tokens"], 11, "cut {cut}");
            assert_eq!(rec["completion_tokens"], 2);
            assert_eq!(rec["cached_tokens"], 4);
            assert_eq!(rec["usage_source"], "provider");
            assert_eq!(rec["stream"], true);
            assert_eq!(rec["completed"], true);
            assert_eq!(rec["latency_ms"], 300);
            assert_eq!(rec["config_version"], "cfg-7");
        }
    }

    #[test]
    fn stream_usage_chunk_kept_when_client_asked() {
        let (client, rec) = run_stream(
            r#"{"model":"mock-gpt","stream":true,"stream_options":{"include_usage":true}}"#,
            40,
        );
        assert_eq!(client, STREAM);
        assert_eq!(rec["prompt_tokens"], 11);
    }

    #[test]
    fn oversized_stream_event_ends_with_error_event() {
        let g = gw();
        let mut f = Flow::new(0);
        assert!(matches!(
            forward(&g, &mut f, "sk-1", r#"{"model":"mock-gpt","stream":true}"#),
            BodyStep::Forward(_)
        ));
        f.on_response_headers(&g, 200, Some("text/event-stream"));
        let big = format!("data: {}", "x".repeat(2000));
        let v = big.into_bytes();
        match f.on_response_body(&g, v.len(), false, 1, || Some(v.clone())) {
            ResponseBodyStep::Replace(out) => {
                let s = String::from_utf8(out).unwrap();
                assert!(s.starts_with("data: {\"error\""), "{s}");
            }
            other => panic!("{other:?}"),
        }
        let rec = finish_json(&mut f, 2);
        assert_eq!(rec["completed"], false);
    }

    #[test]
    fn non_stream_usage_read_from_whole_body() {
        let g = gw();
        let mut f = Flow::new(0);
        assert!(matches!(
            forward(&g, &mut f, "sk-1", r#"{"model":"mock-gpt"}"#),
            BodyStep::Forward(_)
        ));
        assert_eq!(
            f.on_response_headers(&g, 200, Some("application/json")),
            ResponseHeaders::default()
        );
        let body = br#"{"choices":[],"usage":{"prompt_tokens":5,"completion_tokens":7}}"#.to_vec();
        assert_eq!(
            f.on_response_body(&g, 10, false, 1, || None),
            ResponseBodyStep::Wait
        );
        assert_eq!(
            f.on_response_body(&g, body.len(), true, 2, || Some(body.clone())),
            ResponseBodyStep::Pass
        );
        let rec = finish_json(&mut f, 3);
        assert_eq!(
            (
                rec["prompt_tokens"].as_u64(),
                rec["completion_tokens"].as_u64()
            ),
            (Some(5), Some(7))
        );
        assert_eq!(rec["provider"], "mock");
        assert_eq!(rec["upstream_model"], "gpt-up");
        assert_eq!(rec["ttft_ms"], Value::Null);
    }

    #[test]
    fn local_reply_passes_through_response_callbacks_untouched() {
        let g = gw();
        let mut f = Flow::new(0);
        let _ = f.on_request_headers(&g, &head("GET", "/v1/models", Some("Bearer sk-1")));
        assert_eq!(
            f.on_response_headers(&g, 200, Some("application/json")),
            ResponseHeaders::default()
        );
        assert_eq!(
            f.on_response_body(&g, 5, true, 1, || panic!("must not read")),
            ResponseBodyStep::Pass
        );
    }

    // ---- translation through the flow ----

    fn multi_gw() -> Gateway {
        let cfg = serde_json::from_value(serde_json::json!({
            "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
            "providers": [
                {"name": "oa", "kind": "openai", "cluster": "c_oa", "host": "oa", "auth": {"type": "none"}},
                {"name": "an", "kind": "anthropic", "cluster": "c_an", "host": "an",
                 "auth": {"type": "header", "name": "x-api-key"}, "api_key_env": "AN_KEY"},
                {"name": "ge", "kind": "gemini", "cluster": "c_ge", "host": "ge",
                 "auth": {"type": "header", "name": "x-goog-api-key"}, "api_key_env": "GE_KEY"}
            ],
            "models": [
                {"name": "gpt", "targets": [{"provider": "oa", "model": "gpt-up"}]},
                {"name": "claude", "targets": [{"provider": "an", "model": "claude-up"}]},
                {"name": "gem", "targets": [{"provider": "ge", "model": "gem-up"}]}
            ]
        }))
        .unwrap();
        Gateway::new(cfg, |v| Some(format!("secret-{v}"))).unwrap()
    }

    fn send<'g>(
        g: &'g Gateway,
        f: &mut Flow,
        method: &str,
        path: &str,
        body: &str,
    ) -> BodyStep<'g> {
        let mut h = head(method, path, None);
        h.x_api_key = Some("sk-1");
        match f.on_request_headers(g, &h) {
            HeadersStep::ReadBody => {}
            HeadersStep::Reply(r) => return BodyStep::Reply(r),
            HeadersStep::NotServed => panic!("every host is served here"),
        }
        let b = body.as_bytes().to_vec();
        f.on_request_body(
            g,
            &crate::budget::MemoryStore::default(),
            b.len(),
            true,
            || Some(b),
        )
    }

    fn header<'a>(fw: &'a Forward<'_>, name: &str) -> Option<&'a str> {
        fw.set
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_ref())
    }

    #[test]
    fn openai_client_to_anthropic_provider() {
        let g = multi_gw();
        let mut f = Flow::new(0);
        let BodyStep::Forward(fw) = send(
            &g,
            &mut f,
            "POST",
            "/v1/chat/completions",
            r#"{"model":"claude","messages":[{"role":"system","content":"S"},{"role":"user","content":"hi"}],"seed":3}"#,
        ) else {
            panic!()
        };
        assert_eq!(header(&fw, ":path"), Some("/v1/messages"));
        assert_eq!(header(&fw, "x-api-key"), Some("secret-AN_KEY"));
        assert_eq!(
            header(&fw, "anthropic-version"),
            Some(anthropic::API_VERSION)
        );
        let up: serde_json::Value = serde_json::from_slice(&fw.body).unwrap();
        assert_eq!(up["model"], "claude-up");
        assert_eq!(up["system"], "S");
        assert_eq!(up["max_tokens"], anthropic::DEFAULT_MAX_TOKENS);
        let rh = f.on_response_headers(&g, 200, Some("application/json"));
        assert!(rh.hold && rh.remove_content_length);
        assert!(rh
            .set
            .iter()
            .any(|(k, v)| *k == WARNINGS_HEADER && v.contains("seed")));
        let body = br#"{"id":"msg_1","model":"claude-up","content":[{"type":"text","text":"Hello"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":2}}"#.to_vec();
        let ResponseBodyStep::ReplaceWithStatus(200, out) =
            f.on_response_body(&g, body.len(), true, 5, || Some(body.clone()))
        else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello");
        assert_eq!(v["model"], "claude");
        assert_eq!(v["id"], "chatcmpl-msg_1");
        let rec: serde_json::Value =
            serde_json::from_slice(&f.finish(6, &crate::budget::MemoryStore::default())).unwrap();
        assert_eq!(
            (
                rec["prompt_tokens"].as_u64(),
                rec["completion_tokens"].as_u64()
            ),
            (Some(5), Some(2))
        );
        assert_eq!(rec["client_dialect"], "openai");
    }

    #[test]
    fn anthropic_client_passthrough_touches_only_model() {
        let g = multi_gw();
        let mut f = Flow::new(0);
        let body =
            r#"{"model":"claude","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
        let BodyStep::Forward(fw) = send(&g, &mut f, "POST", "/v1/messages", body) else {
            panic!()
        };
        assert_eq!(
            String::from_utf8(fw.body).unwrap(),
            body.replace("\"claude\"", "\"claude-up\"")
        );
        assert_eq!(fw.remove, UPSTREAM_REMOVE);
    }

    #[test]
    fn gemini_client_paths_and_errors() {
        let g = multi_gw();
        // Passthrough: body untouched, model from the URL rewritten in the path.
        let mut f = Flow::new(0);
        let body = r#"{"contents":[{"role":"user","parts":[{"text":"hi"}]}]}"#;
        let BodyStep::Forward(fw) = send(
            &g,
            &mut f,
            "POST",
            "/v1beta/models/gem:streamGenerateContent?alt=sse",
            body,
        ) else {
            panic!()
        };
        assert_eq!(
            header(&fw, ":path"),
            Some("/v1beta/models/gem-up:streamGenerateContent?alt=sse")
        );
        assert_eq!(fw.body, body.as_bytes());
        // Translated to OpenAI.
        let mut f = Flow::new(0);
        let BodyStep::Forward(fw) =
            send(&g, &mut f, "POST", "/v1/models/gpt:generateContent", body)
        else {
            panic!()
        };
        assert_eq!(header(&fw, ":path"), Some("/v1/chat/completions"));
        // Unknown model: Gemini-shaped 404.
        let mut f = Flow::new(0);
        let BodyStep::Reply(r) = send(
            &g,
            &mut f,
            "POST",
            "/v1beta/models/nope:generateContent",
            body,
        ) else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            (r.status, v["error"]["status"].as_str()),
            (404, Some("NOT_FOUND"))
        );
        // Stream without alt=sse is refused clearly.
        let mut f = Flow::new(0);
        let BodyStep::Reply(r) = send(
            &g,
            &mut f,
            "POST",
            "/v1beta/models/gem:streamGenerateContent",
            body,
        ) else {
            panic!()
        };
        assert_eq!(r.status, 400);
    }

    #[test]
    fn anthropic_errors_for_anthropic_clients() {
        let g = multi_gw();
        let mut f = Flow::new(0);
        let h = RequestHead {
            method: "POST",
            path: "/v1/messages",
            x_api_key: Some("bad"),
            ..Default::default()
        };
        let HeadersStep::Reply(r) = f.on_request_headers(&g, &h) else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "authentication_error");
    }

    #[test]
    fn provider_overload_becomes_503_for_openai_clients() {
        let g = multi_gw();
        let mut f = Flow::new(0);
        assert!(matches!(
            send(
                &g,
                &mut f,
                "POST",
                "/v1/chat/completions",
                r#"{"model":"claude","messages":[]}"#
            ),
            BodyStep::Forward(_)
        ));
        f.on_response_headers(&g, 529, Some("application/json"));
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                .to_vec();
        let ResponseBodyStep::ReplaceWithStatus(s, out) =
            f.on_response_body(&g, body.len(), true, 1, || Some(body.clone()))
        else {
            panic!()
        };
        assert_eq!(s, 503);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["error"]["message"], "Overloaded");
    }

    #[test]
    fn n_greater_than_one_and_server_tools_are_rejected_when_translating() {
        let g = multi_gw();
        let mut f = Flow::new(0);
        let BodyStep::Reply(r) = send(
            &g,
            &mut f,
            "POST",
            "/v1/chat/completions",
            r#"{"model":"claude","n":2,"messages":[]}"#,
        ) else {
            panic!()
        };
        assert_eq!(r.status, 400);
        let mut f = Flow::new(0);
        let BodyStep::Reply(r) = send(
            &g,
            &mut f,
            "POST",
            "/v1/messages",
            r#"{"model":"gpt","max_tokens":5,"messages":[],"tools":[{"type":"web_search_20250305","name":"web_search"}]}"#,
        ) else {
            panic!()
        };
        assert_eq!(r.status, 400);
        assert!(String::from_utf8_lossy(&r.body).contains("invalid_request_error"));
    }

    #[test]
    fn translated_stream_through_the_flow() {
        let g = multi_gw();
        let mut f = Flow::new(1_000);
        assert!(matches!(
            send(
                &g,
                &mut f,
                "POST",
                "/v1/messages",
                r#"{"model":"gpt","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#
            ),
            BodyStep::Forward(_)
        ));
        assert!(
            f.on_response_headers(&g, 200, Some("text/event-stream"))
                .remove_content_length
        );
        let up = concat!(
            "data: {\"id\":\"c\",\"model\":\"g\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
            "data: [DONE]\n\n").as_bytes().to_vec();
        let ResponseBodyStep::Replace(out) =
            f.on_response_body(&g, up.len(), true, 1_004, || Some(up.clone()))
        else {
            panic!()
        };
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("event: message_start"), "{s}");
        assert!(s.contains("\"text\":\"Hi\""));
        assert!(s.trim_end().ends_with("data: {\"type\":\"message_stop\"}"));
        let rec: serde_json::Value =
            serde_json::from_slice(&f.finish(1_010, &crate::budget::MemoryStore::default()))
                .unwrap();
        assert_eq!(rec["completion_tokens"], 1);
        assert_eq!(rec["ttft_ms"], 4);
        assert_eq!(rec["client_dialect"], "anthropic");
    }

    fn capturing_gw(shadow: bool) -> Gateway {
        let cfg = serde_json::from_value(serde_json::json!({
            "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
            "providers": [{"name": "oa", "kind": "openai", "cluster": "c_oa", "host": "oa",
                           "auth": {"type": "bearer"}, "api_key_env": "OA_KEY"}],
            "models": [{"name": "gpt", "targets": [{"provider": "oa", "model": "gpt-up"}]}],
            "capture": {"sample_rate": 0.0, "min_per_stratum": 1},
            "shadow": if shadow { serde_json::json!({"role": "shadow"}) } else { serde_json::Value::Null }
        }))
        .unwrap();
        Gateway::new(cfg, |_| Some("provider-secret".to_string())).unwrap()
    }

    #[test]
    fn captured_requests_carry_both_exchanges_and_never_credentials() {
        let g = capturing_gw(false);
        let body = r#"{"model":"gpt","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
        let mut f = Flow::new(1_000);
        assert!(matches!(
            send(&g, &mut f, "POST", "/v1/messages", body),
            BodyStep::Forward(_)
        ));
        f.on_response_headers(&g, 200, Some("text/event-stream"));
        let up = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
        // Split across callbacks: both sides are kept whole.
        let (a, b) = up.split_at(20);
        for (part, end) in [(a, false), (b, true)] {
            let bytes = part.as_bytes().to_vec();
            f.on_response_body(&g, bytes.len(), end, 1_002, || Some(bytes));
        }
        f.finish(1_003, &crate::budget::MemoryStore::default());
        let cap: serde_json::Value = serde_json::from_slice(&f.take_capture().unwrap()).unwrap();
        assert_eq!(cap["upstream"]["response_body"], up);
        assert_eq!(cap["upstream"]["kind"], "openai");
        assert_eq!(cap["upstream"]["path"], "/v1/chat/completions");
        let client = cap["response_body"].as_str().unwrap();
        assert!(client.starts_with("event: message_start"), "{client}");
        assert_eq!(cap["stratum"], "gpt|tools=false|stream=true");
        let text = cap.to_string();
        assert!(!text.contains("provider-secret") && !text.contains("sk-1"));
        // Sampling: the stratum's minimum (1) is spent; rate 0 takes no more.
        let mut f2 = Flow::new(1_000);
        send(&g, &mut f2, "POST", "/v1/messages", body);
        f2.finish(1_001, &crate::budget::MemoryStore::default());
        assert!(f2.take_capture().is_none());
        // A gateway-answered request is captured with its answer.
        let mut f3 = Flow::new(1_000);
        let BodyStep::Reply(r) = send(
            &g,
            &mut f3,
            "POST",
            "/v1/messages",
            r#"{"model":"nope","max_tokens":1,"messages":[]}"#,
        ) else {
            panic!()
        };
        f3.finish(1_001, &crate::budget::MemoryStore::default());
        let cap: serde_json::Value = serde_json::from_slice(&f3.take_capture().unwrap()).unwrap();
        assert!(cap["upstream"].is_null());
        assert_eq!(cap["status"], r.status);
        assert_eq!(
            cap["response_body"].as_str().unwrap().as_bytes(),
            &r.body[..]
        );
    }

    #[test]
    fn shadow_digest_is_of_the_upstream_request_in_canonical_form() {
        let g = capturing_gw(true);
        let digest = |body: &str| {
            let mut f = Flow::new(1_000);
            send(&g, &mut f, "POST", "/v1/chat/completions", body);
            let rec: serde_json::Value =
                serde_json::from_slice(&f.finish(1_001, &crate::budget::MemoryStore::default()))
                    .unwrap();
            assert_eq!(rec["role"], "shadow");
            rec["digest"].as_str().unwrap().to_string()
        };
        let a = digest(r#"{"model":"gpt","messages":[{"role":"user","content":"hi"}]}"#);
        let b = digest(r#"{ "messages": [{"content": "hi", "role": "user"}], "model": "gpt" }"#);
        let c = digest(r#"{"model":"gpt","messages":[{"role":"user","content":"ho"}]}"#);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, digest(r#"{"model":"nope","messages":[]}"#));
    }

    #[test]
    fn vertex_ai_is_the_gemini_kind_under_another_base_path() {
        let cfg = serde_json::from_value(serde_json::json!({
            "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
            "providers": [{"name": "vx", "kind": "gemini", "cluster": "vertex",
                "host": "us-central1-aiplatform.googleapis.com",
                "base_path": "/v1/projects/p1/locations/us-central1/publishers/google",
                "auth": {"type": "bearer"}, "api_key_env": "VERTEX_TOKEN"}],
            "models": [{"name": "gem", "targets": [{"provider": "vx", "model": "gemini-2.5-pro"}]}]
        }))
        .unwrap();
        let g = Gateway::new(cfg, |_| Some("ya29.token".into())).unwrap();
        let mut f = Flow::new(0);
        let BodyStep::Forward(fw) = send(
            &g,
            &mut f,
            "POST",
            "/v1/chat/completions",
            r#"{"model":"gem","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
        ) else {
            panic!()
        };
        assert_eq!(
            header(&fw, ":path"),
            Some("/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-pro:streamGenerateContent?alt=sse")
        );
        assert_eq!(header(&fw, "authorization"), Some("Bearer ya29.token"));
    }

    #[test]
    fn response_guardrails_hold_and_block_translated_streams() {
        let mut cfg: sluice_config::PluginConfig = serde_json::from_value(serde_json::json!({
            "keys": [{"id": "k1", "sha256": sluice_config::hash_key("sk-1")}],
            "providers": [{"name": "ge", "kind": "gemini", "cluster": "c", "host": "h",
                           "auth": {"type": "none"}}],
            "models": [{"name": "gem", "targets": [{"provider": "ge", "model": "g"}]}]
        }))
        .unwrap();
        cfg.guardrails = serde_json::from_value(serde_json::json!({"rules": [
            {"name": "nope", "detector": {"regex": "mock provider"}, "action": "block",
             "on": "response", "models": ["gem"]}]}))
        .unwrap();
        let g = Gateway::new(cfg, |_| None).unwrap();
        let mut f = Flow::new(0);
        assert!(matches!(
            send(
                &g,
                &mut f,
                "POST",
                "/v1/chat/completions",
                r#"{"model":"gem","stream":true,"messages":[{"role":"user","content":"x"}]}"#
            ),
            BodyStep::Forward(_)
        ));
        f.on_response_headers(&g, 200, Some("text/event-stream"));
        let mut client = Vec::new();
        let mut all = Vec::new();
        for (i, w) in ["the", " mock", " provider"].iter().enumerate() {
            let finish = if i == 2 {
                r#","finishReason":"STOP""#
            } else {
                ""
            };
            // Gemini repeats usage in every chunk: it must not release text.
            all.extend(format!(
                "data: {{\"candidates\":[{{\"content\":{{\"role\":\"model\",\"parts\":[{{\"text\":\"{w}\"}}]}}{finish}}}],\"usageMetadata\":{{\"promptTokenCount\":3}}}}\r\n\r\n"
            ).into_bytes());
        }
        // Everything in one callback, then the empty end-of-stream one.
        for (chunk, last) in [(all, false), (Vec::new(), true)] {
            match f.on_response_body(&g, chunk.len(), last, 1, || Some(chunk.clone())) {
                ResponseBodyStep::Replace(b) => client.extend(b),
                other => panic!("{other:?}"),
            }
        }
        let s = String::from_utf8(client).unwrap();
        assert!(!s.contains("mock"), "{s}");
        assert!(s.contains("nope"), "{s}");
    }

    #[test]
    fn usage_is_estimated_when_the_provider_reports_none() {
        let g = multi_gw();
        let mut f = Flow::new(0);
        assert!(matches!(
            send(
                &g,
                &mut f,
                "POST",
                "/v1/messages",
                r#"{"model":"gpt","max_tokens":5,"stream":true,"messages":[{"role":"user","content":"hi"}]}"#
            ),
            BodyStep::Forward(_)
        ));
        f.on_response_headers(&g, 200, Some("text/event-stream"));
        // An OpenAI-compatible provider that ignores include_usage.
        let up = concat!(
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hello world\"}}]}\n\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n").as_bytes().to_vec();
        f.on_response_body(&g, up.len(), true, 2, || Some(up.clone()));
        let rec: serde_json::Value =
            serde_json::from_slice(&f.finish(3, &crate::budget::MemoryStore::default())).unwrap();
        assert_eq!(rec["usage_source"], "estimated");
        assert_eq!(rec["completion_tokens"], 2);
        assert!(rec["prompt_tokens"].as_u64().unwrap() > 0);
    }
}
