//! One request through the gateway, as a sans-IO state machine.
//!
//! The proxy-wasm glue reads headers and bodies from Envoy, hands them to a
//! `Flow`, and applies what the flow answers (reply locally, rewrite headers
//! and body, pause, pass). Nothing here calls the host, so every path is
//! unit-tested natively and under a wasm runtime.

use std::borrow::Cow;

use crate::auth::{presented_key, CLIENT_KEY_HEADERS};
use crate::error::GatewayError;
use crate::gateway::{Credential, Gateway};
use crate::openai;
use crate::sse::SseParser;
use crate::usage::{TokenUsage, UsageRecord, RECORD_VERSION};

/// Header the route uses (`cluster_header`) to pick the upstream cluster.
pub const CLUSTER_HEADER: &str = "x-sluice-cluster";

/// The request headers the flow looks at.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub x_api_key: Option<&'a str>,
    pub x_goog_api_key: Option<&'a str>,
    pub content_length: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// The request has no body (headers carried end of stream).
    pub end_of_stream: bool,
}

/// A response the gateway sends itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Headers and body to send upstream (borrowing from the gateway config).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forward<'a> {
    /// Removed before `set` is applied.
    pub remove: &'static [&'static str],
    pub set: Vec<(&'a str, Cow<'a, str>)>,
    pub body: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum HeadersStep {
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

#[derive(Debug, PartialEq, Eq)]
pub enum ResponseBodyStep {
    /// Send the chunk as it is.
    Pass,
    /// Buffer: the whole body is needed.
    Wait,
    /// Send these bytes instead of the chunk.
    Replace(Vec<u8>),
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
    /// Non-stream: buffer for usage, pass unchanged.
    Buffer,
    /// Too large to meter, or not ours to read: pass through.
    Pass,
    Stream(StreamState),
}

#[derive(Debug)]
struct StreamState {
    parser: SseParser,
    strip_usage_chunk: bool,
}

#[derive(Debug)]
pub struct Flow {
    start_ms: u64,
    phase: Phase,
    mode: ResponseMode,
    record: UsageRecord,
    client_wants_usage: bool,
    usage: Option<TokenUsage>,
    /// Digest of the authenticated key (looked up again in the body phase
    /// in the same `Gateway` the request started with).
    key_digest: Option<[u8; 32]>,
}

/// Headers removed from every forwarded request: the caller's credentials
/// (never sent upstream), the length (recomputed), and `accept-encoding`
/// (the filter must read the provider's bytes; Envoy's compressor can
/// re-encode towards the client).
const UPSTREAM_REMOVE: &[&str] = &[
    CLIENT_KEY_HEADERS[0],
    CLIENT_KEY_HEADERS[1],
    CLIENT_KEY_HEADERS[2],
    "content-length",
    "transfer-encoding",
    "accept-encoding",
];

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
            client_wants_usage: false,
            usage: None,
            key_digest: None,
        }
    }

    fn reply_error(&mut self, err: GatewayError) -> LocalReply {
        self.phase = Phase::Local;
        self.record.status = err.status;
        self.record.error = Some(err.kind.code());
        LocalReply {
            status: err.status,
            content_type: "application/json",
            body: openai::errors::render(&err),
        }
    }

    fn reply_ok(&mut self, body: Vec<u8>) -> LocalReply {
        self.phase = Phase::Local;
        self.record.status = 200;
        LocalReply {
            status: 200,
            content_type: "application/json",
            body,
        }
    }

    pub fn on_request_headers(&mut self, gw: &Gateway, head: &RequestHead<'_>) -> HeadersStep {
        self.record.request_id = head.request_id.unwrap_or_default().to_string();
        self.record.config_version.clone_from(&gw.version);
        let path = head.path.split(['?', '#']).next().unwrap_or_default();
        let presented = presented_key(head.authorization, head.x_api_key, head.x_goog_api_key);
        let key = match gw.authenticate(presented) {
            Ok(k) => k,
            Err(e) => return HeadersStep::Reply(self.reply_error(e)),
        };
        self.key_digest = presented.map(crate::auth::digest);
        self.record.key_id = Some(key.id.clone());
        match (head.method, path) {
            ("POST", "/v1/chat/completions") => {
                let limit = gw.limits.max_request_body_bytes;
                let declared = head
                    .content_length
                    .and_then(|v| v.trim().parse::<u64>().ok());
                if declared.is_some_and(|n| n > limit) {
                    return HeadersStep::Reply(
                        self.reply_error(GatewayError::payload_too_large(limit)),
                    );
                }
                if head.end_of_stream {
                    return HeadersStep::Reply(self.reply_error(GatewayError::invalid_request(
                        "The request body must be a JSON object.",
                    )));
                }
                HeadersStep::ReadBody
            }
            ("GET", "/v1/models") => {
                let data: Vec<_> = gw.models_for(key).map(model_object).collect();
                let body = serde_json::json!({"object": "list", "data": data});
                HeadersStep::Reply(self.reply_ok(body.to_string().into_bytes()))
            }
            ("GET", p) if p.starts_with("/v1/models/") => {
                let name = &p["/v1/models/".len()..];
                match gw.model_for(key, name) {
                    Ok(m) => {
                        let body = model_object(&m.name).to_string().into_bytes();
                        HeadersStep::Reply(self.reply_ok(body))
                    }
                    Err(e) => HeadersStep::Reply(self.reply_error(e)),
                }
            }
            (m, "/v1/chat/completions" | "/v1/models") => {
                HeadersStep::Reply(self.reply_error(GatewayError::method_not_allowed(m, path)))
            }
            (m, p) => HeadersStep::Reply(self.reply_error(GatewayError::not_found(m, p))),
        }
    }

    /// `read` returns the whole buffered body (`body_size` bytes).
    pub fn on_request_body<'g>(
        &mut self,
        gw: &'g Gateway,
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
        match self.route_chat(gw, &body) {
            Ok(f) => {
                self.phase = Phase::Upstream;
                BodyStep::Forward(f)
            }
            Err(e) => BodyStep::Reply(self.reply_error(e)),
        }
    }

    fn route_chat<'g>(
        &mut self,
        gw: &'g Gateway,
        body: &[u8],
    ) -> Result<Forward<'g>, GatewayError> {
        let req = openai::chat_request::ChatRequest::parse(body)?;
        self.record.stream = req.stream;
        self.record.model = Some(req.model.to_string());
        let key = self
            .key_digest
            .and_then(|d| gw.key_by_digest(&d))
            .ok_or_else(|| GatewayError::invalid_api_key("Incorrect API key provided."))?;
        let model = gw.model_for(key, &req.model)?;
        let target = model.pick();
        let provider = gw
            .provider(target.provider)
            .ok_or_else(|| GatewayError::unavailable("The model's provider is not configured."))?;
        self.record.provider = Some(provider.name.clone());
        self.record.upstream_model = Some(target.upstream_model.clone());
        self.client_wants_usage = req.client_wants_usage;

        let mut set = Vec::with_capacity(5);
        set.push((
            ":path",
            Cow::Owned(format!("{}/chat/completions", provider.base_path)),
        ));
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
        let new_body = req.rewrite(&target.upstream_model);
        set.push(("content-length", Cow::Owned(new_body.len().to_string())));
        Ok(Forward {
            remove: UPSTREAM_REMOVE,
            set,
            body: new_body,
        })
    }

    /// Returns true when the glue must drop `content-length` (the body will
    /// be rewritten).
    pub fn on_response_headers(
        &mut self,
        gw: &Gateway,
        status: u16,
        content_type: Option<&str>,
    ) -> bool {
        if self.phase != Phase::Upstream {
            return false;
        }
        self.record.status = status;
        let is_sse = content_type.is_some_and(|c| {
            c.trim_start()
                .get(..17)
                .is_some_and(|p| p.eq_ignore_ascii_case("text/event-stream"))
        });
        if is_sse {
            self.mode = ResponseMode::Stream(StreamState {
                parser: SseParser::new(gw.limits.max_sse_event_bytes as usize),
                strip_usage_chunk: !self.client_wants_usage,
            });
            true
        } else {
            self.mode = ResponseMode::Buffer;
            false
        }
    }

    /// Whether the next response-body callback needs the bytes (so the glue
    /// copies them out of Envoy only when they are used).
    pub fn needs_response_bytes(&self, end_of_stream: bool) -> bool {
        match self.mode {
            _ if self.phase != Phase::Upstream => false,
            ResponseMode::Stream(_) => true,
            ResponseMode::Buffer => end_of_stream && (200..300).contains(&self.record.status),
            ResponseMode::Unknown | ResponseMode::Pass => false,
        }
    }

    pub fn on_response_body(
        &mut self,
        gw: &Gateway,
        body_size: usize,
        end_of_stream: bool,
        now_ms: u64,
        read: impl FnOnce() -> Option<Vec<u8>>,
    ) -> ResponseBodyStep {
        if self.phase != Phase::Upstream {
            return ResponseBodyStep::Pass;
        }
        if end_of_stream {
            self.record.completed = true;
        }
        match &mut self.mode {
            ResponseMode::Unknown | ResponseMode::Pass => ResponseBodyStep::Pass,
            ResponseMode::Buffer => {
                if body_size as u64 > gw.limits.max_response_body_bytes {
                    self.mode = ResponseMode::Pass;
                    return ResponseBodyStep::Pass;
                }
                if !end_of_stream {
                    return ResponseBodyStep::Wait;
                }
                if (200..300).contains(&self.record.status) {
                    if let Some(u) = read().and_then(|b| openai::usage::from_response(&b)) {
                        self.usage = Some(u);
                    }
                }
                ResponseBodyStep::Pass
            }
            ResponseMode::Stream(st) => {
                let chunk = if body_size == 0 {
                    Vec::new()
                } else {
                    read().unwrap_or_default()
                };
                if self.record.ttft_ms.is_none() && !chunk.is_empty() {
                    self.record.ttft_ms = Some(now_ms.saturating_sub(self.start_ms));
                }
                let had_carry = st.parser.pending() > 0;
                let mut out: Vec<u8> = Vec::new();
                let mut dropped = false;
                let mut usage = None;
                let strip = st.strip_usage_chunk;
                let res = st.parser.feed(&chunk, end_of_stream, |ev| {
                    let info = match &ev.data {
                        Some(d) => openai::usage::inspect_chunk(d),
                        None => Default::default(),
                    };
                    if info.usage.is_some() {
                        usage = info.usage;
                    }
                    if strip && info.usage_only {
                        dropped = true;
                    } else {
                        out.extend_from_slice(ev.raw);
                    }
                });
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
                    crate::sse::write_event(&mut out, None, &openai::errors::render(&err));
                    self.record.completed = false;
                    self.mode = ResponseMode::Pass;
                    return ResponseBodyStep::Replace(out);
                }
                let unchanged = !dropped && !had_carry && st.parser.pending() == 0;
                if unchanged {
                    ResponseBodyStep::Pass
                } else {
                    ResponseBodyStep::Replace(out)
                }
            }
        }
    }

    /// The usage record, at the end of the request (`on_log`).
    pub fn finish(&mut self, now_ms: u64) -> Vec<u8> {
        self.record.latency_ms = now_ms.saturating_sub(self.start_ms);
        if self.phase == Phase::Local {
            self.record.completed = true;
        }
        if let Some(u) = self.usage {
            self.record.tokens = u;
            self.record.usage_source = "provider";
        }
        self.record.to_json()
    }
}

fn model_object(name: &str) -> serde_json::Value {
    serde_json::json!({"id": name, "object": "model", "created": 0, "owned_by": "sluice"})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn gw() -> Gateway {
        let cfg = serde_json::from_value(serde_json::json!({
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
        .unwrap();
        Gateway::new(cfg, |_| Some("prov-secret".into())).unwrap()
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
        serde_json::from_slice(&f.finish(now)).unwrap()
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
        assert_eq!(f.on_request_body(&g, 1000, false, || None), BodyStep::Wait);
        match f.on_request_body(&g, 3000, false, || None) {
            BodyStep::Reply(r) => assert_eq!(r.status, 413),
            other => panic!("{other:?}"),
        }
    }

    fn forward<'g>(g: &'g Gateway, f: &mut Flow, key: &str, body: &str) -> BodyStep<'g> {
        let auth = format!("Bearer {key}");
        let h = head("POST", "/v1/chat/completions", Some(&auth));
        assert_eq!(f.on_request_headers(g, &h), HeadersStep::ReadBody);
        let b = body.as_bytes().to_vec();
        f.on_request_body(g, b.len(), true, || Some(b))
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
        assert!(f.on_response_headers(&g, 200, Some("text/event-stream; charset=utf-8")));
        let mut client = Vec::new();
        let bytes = STREAM.as_bytes();
        let pieces = [&bytes[..cut], &bytes[cut..], &b""[..]];
        for (i, p) in pieces.iter().enumerate() {
            let v = p.to_vec();
            match f.on_response_body(&g, v.len(), i == 2, 150 + i as u64, || Some(v.clone())) {
                ResponseBodyStep::Pass => client.extend_from_slice(p),
                ResponseBodyStep::Replace(r) => client.extend_from_slice(&r),
                ResponseBodyStep::Wait => panic!("streams never wait"),
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
        assert!(!f.on_response_headers(&g, 200, Some("application/json")));
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
        assert!(!f.on_response_headers(&g, 200, Some("application/json")));
        assert_eq!(
            f.on_response_body(&g, 5, true, 1, || panic!("must not read")),
            ResponseBodyStep::Pass
        );
    }
}
