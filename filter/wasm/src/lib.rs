//! proxy-wasm glue: moves headers and bodies between Envoy and a
//! `sluice_core::flow::Flow`. No decisions are made here.

// Tests may do arithmetic and slice strings freely (clippy.toml covers the
// other no-panic lints for tests).
#![cfg_attr(test, allow(clippy::arithmetic_side_effects, clippy::string_slice))]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, Status};
use sluice_core::budget::SharedStore;
use sluice_core::config::PluginConfig;
use sluice_core::flow::{
    BodyStep, Flow, Forward, HeadersStep, LocalReply, RequestHead, ResponseBodyStep,
};
use sluice_core::gateway::Gateway;
use sluice_core::header_map;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> {
        Box::new(Root { gateway: None, context_id, attempts: false })
    });
}}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// A header map as the host serializes it, unparsed: read in place by
/// `sluice_core::header_map` (the SDK's reader copies every pair into
/// `String`s and panics on a value that is not UTF-8).
fn header_map_bytes(map: MapType) -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: on success the host has written `size` bytes it allocated
    // through this module's `proxy_on_memory_allocate` (the global
    // allocator, as the SDK assumes too), so the buffer is ours to own.
    unsafe {
        match proxy_get_header_map_pairs(map, &mut data, &mut size) {
            Status::Ok if !data.is_null() => Vec::from_raw_parts(data, size, size),
            _ => Vec::new(),
        }
    }
}

/// proxy-wasm shared data: one store per Envoy, shared by its worker VMs
/// (same `vm_id`), with compare-and-swap.
struct HostShared;

impl SharedStore for HostShared {
    fn get(&self, key: &str) -> (Option<Vec<u8>>, Option<u32>) {
        proxy_wasm::hostcalls::get_shared_data(key).unwrap_or((None, None))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> bool {
        // Envoy creates an absent key whatever the cas, but writes an
        // existing one unconditionally when the cas is 0. A create-only
        // write therefore passes a cas no live entry holds (the host's cas
        // counter would have to reach exactly this value for this key): a
        // key another VM created since our read then answers a mismatch
        // instead of being overwritten.
        const CREATE_ONLY: u32 = u32::MAX;
        proxy_wasm::hostcalls::set_shared_data(key, Some(value), Some(cas.unwrap_or(CREATE_ONLY)))
            .is_ok()
    }
}

use sluice_core::flow::attempt::{Attempt, AttemptHead, AttemptStep};
use sluice_core::resilience::{ATTEMPT_ROOT_ID, METADATA_NAMESPACE, PLAN_HEADER};

/// Filter state name of the usage record (`wasm.sluice_usage` in access logs).
const USAGE_PROPERTY: &str = sluice_core::records::names::USAGE;
/// Filter state name of a capture record (`wasm.sluice_capture`), set only
/// for sampled requests when capture is configured.
const CAPTURE_PROPERTY: &str = sluice_core::records::names::CAPTURE;
const LIMIT_KEY_PROPERTY: &str = sluice_core::records::names::LIMIT_KEY;
const LIMIT_TOKENS_PROPERTY: &str = sluice_core::records::names::LIMIT_TOKENS;
const BUDGET_HOLD_PROPERTY: &str = sluice_core::records::names::BUDGET_HOLD;
const BUDGET_SPENT_PROPERTY: &str = sluice_core::records::names::BUDGET_SPENT;
const SETTLE_KEY_PROPERTY: &str = sluice_core::records::names::SETTLE_KEY;

struct Root {
    gateway: Option<Rc<Gateway>>,
    context_id: u32,
    /// The attempt filter (root id `sluice_attempt`: an upstream filter of
    /// a resilient model's cluster) rather than the gateway filter.
    attempts: bool,
}

// Metric ids: `define_metric` once per name and VM; per request, the ids
// are found by label values without building names (MetricIds).
thread_local! {
    static METRICS: RefCell<std::collections::HashMap<String, u32>> = RefCell::new(Default::default());
    static METRIC_IDS: RefCell<sluice_core::metrics::MetricIds<u32>> = RefCell::new(Default::default());
}

fn record_metrics(flow: &Flow, per_key: bool) {
    use proxy_wasm::hostcalls::{define_metric, increment_metric, record_metric};
    use proxy_wasm::types::MetricType;
    use sluice_core::metrics::{guardrail_updates, Kind};
    let ty = |k: Kind| match k {
        Kind::Counter => MetricType::Counter,
        Kind::Histogram => MetricType::Histogram,
    };
    METRIC_IDS.with(|ids| {
        ids.borrow_mut().emit(
            flow.record(),
            per_key,
            |name, kind| define_metric(ty(kind), name).ok(),
            |id, kind, value| {
                let _ = match kind {
                    Kind::Counter => increment_metric(id, value as i64),
                    Kind::Histogram => record_metric(id, value),
                };
            },
        )
    });
    for u in guardrail_updates(flow.guardrail_hits()) {
        let id = METRICS.with(|m| {
            let mut m = m.borrow_mut();
            if let Some(id) = m.get(&u.name) {
                return Some(*id);
            }
            let ty = match u.kind {
                Kind::Counter => MetricType::Counter,
                Kind::Histogram => MetricType::Histogram,
            };
            let id = define_metric(ty, &u.name).ok()?;
            m.insert(u.name.clone(), id);
            Some(id)
        });
        if let Some(id) = id {
            let _ = match u.kind {
                Kind::Counter => increment_metric(id, u.value as i64),
                Kind::Histogram => record_metric(id, u.value),
            };
        }
    }
}

// Usage records carry (VM instance, sequence) so the control plane can count
// records lost in transit. Both live for the whole VM: a config push creates a
// fresh root context, and restarting the sequence there would hide the loss of
// the records just before it. (A VM is single-threaded.)
thread_local! {
    static VM_INSTANCE: RefCell<Option<Rc<str>>> = const { RefCell::new(None) };
    static SEQ: Cell<u64> = const { Cell::new(0) };
}

fn next_seq() -> u64 {
    SEQ.with(|s| {
        let n = s.get().saturating_add(1);
        s.set(n);
        n
    })
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let root_id = self
            .get_property(vec!["plugin_root_id"])
            .unwrap_or_default();
        if root_id == ATTEMPT_ROOT_ID.as_bytes() {
            // Everything an attempt needs comes with its request's plan.
            self.attempts = true;
            return true;
        }
        let Some(bytes) = self.get_plugin_configuration() else {
            log::error!("sluice: no plugin configuration");
            return false;
        };
        let compiled = PluginConfig::from_json(&bytes)
            .and_then(|cfg| Gateway::new(cfg, |var| std::env::var(var).ok()));
        let nanos = self
            .get_current_time()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = self.context_id;
        VM_INSTANCE.with(|v| {
            v.borrow_mut()
                .get_or_insert_with(|| format!("{nanos:x}-{id}").into());
        });
        match compiled {
            Ok(gw) => {
                log::info!("sluice: configuration '{}' loaded", gw.version);
                self.gateway = Some(Rc::new(gw));
                true
            }
            Err(errs) => {
                // Returning false makes Envoy reject (NACK) the config and
                // keep serving the last good one.
                for e in &errs {
                    log::error!("sluice: invalid configuration: {e}");
                }
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        if self.attempts {
            return Some(Box::new(AttemptHttp {
                attempt: None,
                present: Vec::new(),
            }));
        }
        Some(Box::new(Http {
            gateway: self.gateway.clone(),
            flow: Flow::new(now_ms(self)),
            instance: VM_INSTANCE
                .with(|v| v.borrow().clone())
                .unwrap_or_else(|| Rc::from("")),
            present: Vec::new(),
            not_served: false,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Http {
    gateway: Option<Rc<Gateway>>,
    flow: Flow,
    instance: Rc<str>,
    /// Request headers as they arrived (the serialized map): the body phase
    /// edits only what changes (`Forward::header_edits`).
    present: Vec<u8>,
    /// A request for a host the gateway does not serve (`hosts`).
    not_served: bool,
}

fn now_ms(ctx: &dyn Context) -> u64 {
    ctx.get_current_time()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Answers the request locally (the gateway's reply, or an attempt's).
fn send_reply(c: &dyn HttpContext, r: LocalReply) -> Action {
    let mut headers = vec![("content-type", r.content_type)];
    headers.extend(r.headers.iter().map(|(k, v)| (*k, v.as_str())));
    c.send_http_response(u32::from(r.status), headers, Some(&r.body));
    Action::Pause
}

/// Sends the request on as `f` says: only the header edits that change
/// something against the headers as they arrived (`raw`), and the body.
fn apply_forward(c: &dyn HttpContext, raw: &[u8], f: &Forward<'_>, body_size: usize) -> Action {
    let present = header_map::parse(raw);
    for (name, value) in f.header_edits(&present) {
        c.set_http_request_header(name, value);
    }
    c.set_http_request_body(0, body_size, &f.body);
    Action::Continue
}

impl Http {
    fn reply(&self, r: LocalReply) -> Action {
        send_reply(self, r)
    }

    /// Before the request leaves: the key Envoy's global rate limiting
    /// counts it under and the budget it holds (only for keys with rpm/tpm
    /// limits or a budget).
    fn mark_limited_key(&self) {
        if let Some(key) = self.flow.globally_limited_key() {
            self.set_property(vec![LIMIT_KEY_PROPERTY], Some(key.as_bytes()));
            let hold = self.flow.global_budget_hold().to_string();
            self.set_property(vec![BUDGET_HOLD_PROPERTY], Some(hold.as_bytes()));
        }
    }
}

impl Context for Http {}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _n: usize, end_of_stream: bool) -> Action {
        let Some(gw) = self.gateway.clone() else {
            self.send_http_response(503, vec![], Some(b"sluice: not configured"));
            return Action::Pause;
        };
        // One hostcall for the whole map rather than one per header (each
        // crossing allocates inside the VM); names are lower-case.
        let raw = header_map_bytes(MapType::HttpRequestHeaders);
        let headers = header_map::parse(&raw);
        let head = RequestHead::from_headers(&headers, end_of_stream);
        let step = self.flow.on_request_headers(&gw, &HostShared, &head);
        // Kept (already allocated) so the body phase edits only what changes.
        drop(headers);
        self.present = raw;
        match step {
            HeadersStep::NotServed => {
                // Another application's request on a shared listener: no
                // further callbacks do anything, and no record is made.
                self.gateway = None;
                self.not_served = true;
                self.present = Vec::new();
                Action::Continue
            }
            HeadersStep::Reply(r) => self.reply(r),
            // Needs `allow_on_headers_stop_iteration: true` in the plugin
            // config: headers stay held (and editable) while the body arrives.
            HeadersStep::ReadBody => Action::Pause,
            // A provider endpoint that reads no body: headers edited now,
            // the body (if any) streams through.
            HeadersStep::Forward(f) => {
                self.mark_limited_key();
                let raw = std::mem::take(&mut self.present);
                let present = header_map::parse(&raw);
                for (name, value) in f.header_edits(&present) {
                    self.set_http_request_header(name, value);
                }
                Action::Continue
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(gw) = self.gateway.clone() else {
            return Action::Continue;
        };
        let body = if end_of_stream {
            self.get_http_request_body(0, body_size)
        } else {
            None
        };
        match self
            .flow
            .on_request_body(&gw, &HostShared, body_size, end_of_stream, move || body)
        {
            BodyStep::Wait => Action::Pause,
            BodyStep::Pass => Action::Continue,
            BodyStep::Reply(r) => self.reply(r),
            BodyStep::Forward(f) => {
                self.mark_limited_key();
                // Not needed past this point: freed rather than held for the
                // rest of the request.
                let raw = std::mem::take(&mut self.present);
                apply_forward(self, &raw, &f, body_size)
            }
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let Some(gw) = self.gateway.clone() else {
            return Action::Continue;
        };
        // One crossing for the map rather than one per header read.
        let raw = header_map_bytes(MapType::HttpResponseHeaders);
        let headers = header_map::parse(&raw);
        let get = |name: &str| header_map::get(&headers, name);
        let status = get(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let edits = if status == 429
            && get("x-envoy-ratelimited").is_some()
            && self.flow.globally_limited_key().is_some()
        {
            // Envoy's global rate limiting refused it (its ratelimit filter
            // sits after this one): answered in the client's API.
            let budget = get("x-sluice-limit") == Some("budget");
            self.flow.on_global_rate_limit(budget)
        } else {
            self.flow
                .on_response_headers(&gw, status, get("content-type"))
        };
        if edits.remove_content_length && get("content-length").is_some() {
            // The body will be rewritten: a stale length would truncate it.
            self.set_http_response_header("content-length", None);
        }
        for (name, value) in &edits.set {
            self.set_http_response_header(name, Some(value));
        }
        if edits.hold {
            // Held until the translated body (and its status) is ready;
            // needs `allow_on_headers_stop_iteration: true`.
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(gw) = self.gateway.clone() else {
            return Action::Continue;
        };
        let body = if body_size > 0 && self.flow.needs_response_bytes(end_of_stream) {
            self.get_http_response_body(0, body_size)
        } else {
            None
        };
        // The clock is a host crossing: read only while a stream's first
        // byte is still to be timed.
        let now = if self.flow.needs_clock() {
            now_ms(self)
        } else {
            0
        };
        let step = self
            .flow
            .on_response_body(&gw, body_size, end_of_stream, now, move || body);
        if end_of_stream {
            if let Some((tokens, micros)) = self.flow.global_settlement() {
                // The charges Envoy's ratelimit filter sends when the stream
                // is done read these (tpm, budget) and are made under this
                // key; a request it refused gets none and settles nothing.
                self.set_property(
                    vec![LIMIT_TOKENS_PROPERTY],
                    Some(tokens.to_string().as_bytes()),
                );
                self.set_property(
                    vec![BUDGET_SPENT_PROPERTY],
                    Some(micros.to_string().as_bytes()),
                );
                if let Some(key) = self.flow.globally_limited_key() {
                    self.set_property(vec![SETTLE_KEY_PROPERTY], Some(key.as_bytes()));
                }
            }
        }
        match step {
            ResponseBodyStep::Pass => Action::Continue,
            ResponseBodyStep::Wait => Action::Pause,
            ResponseBodyStep::Replace(bytes) => {
                self.set_http_response_body(0, body_size, &bytes);
                Action::Continue
            }
            ResponseBodyStep::ReplaceWithStatus(status, bytes) => {
                self.set_http_response_header(":status", Some(&status.to_string()));
                self.set_http_response_body(0, body_size, &bytes);
                Action::Continue
            }
        }
    }

    fn on_log(&mut self) {
        if self.not_served {
            return;
        }
        self.flow.set_sequence(&self.instance, next_seq());
        let record = self.flow.finish(now_ms(self), &HostShared);
        let per_key = self.gateway.as_ref().is_some_and(|g| g.metrics_per_key);
        record_metrics(&self.flow, per_key);
        self.set_property(vec![USAGE_PROPERTY], Some(&record));
        if let Some(capture) = self.flow.take_capture() {
            self.set_property(vec![CAPTURE_PROPERTY], Some(&capture));
        }
    }
}

/// One attempt of a resilient model's request (the attempt filter).
struct AttemptHttp {
    attempt: Option<Attempt>,
    /// Request headers as they arrived (edits only what changes).
    present: Vec<u8>,
}

impl AttemptHttp {
    /// The selected endpoint's `sluice` metadata field.
    fn endpoint_field(&self, field: &str) -> Option<String> {
        let path = vec![
            "xds",
            "upstream_host_metadata",
            "filter_metadata",
            METADATA_NAMESPACE,
            field,
        ];
        self.get_property(path)
            .and_then(|b| String::from_utf8(b).ok())
    }
}

impl Context for AttemptHttp {}

impl HttpContext for AttemptHttp {
    fn on_http_request_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let raw = header_map_bytes(MapType::HttpRequestHeaders);
        let provider = self.endpoint_field("provider");
        let model = self.endpoint_field("model");
        let started = {
            let headers = header_map::parse(&raw);
            let head = AttemptHead {
                plan: header_map::get(&headers, PLAN_HEADER),
                provider: provider.as_deref(),
                model: model.as_deref(),
            };
            Attempt::start(&head, now_ms(self))
        };
        match started {
            Ok(a) => {
                self.attempt = Some(a);
                self.present = raw;
                // Headers held until the body is encoded for this provider.
                Action::Pause
            }
            Err(r) => send_reply(self, r),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(attempt) = self.attempt.as_ref() else {
            return Action::Continue;
        };
        match attempt.on_request_body(end_of_stream) {
            AttemptStep::Wait => Action::Pause,
            AttemptStep::Reply(r) => send_reply(self, r),
            AttemptStep::Forward(f) => apply_forward(self, &self.present, &f, body_size),
        }
    }

    fn on_http_response_headers(&mut self, _n: usize, _end_of_stream: bool) -> Action {
        let status = self
            .get_http_response_header(":status")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let now = now_ms(self);
        if let Some(a) = self.attempt.as_mut() {
            a.on_response_headers(status, now);
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        let now = now_ms(self);
        if let Some(a) = self.attempt.as_mut() {
            a.on_done(now);
        }
    }
}

impl Drop for AttemptHttp {
    fn drop(&mut self) {
        // An attempt cut off without `on_log` (reset, timeout) still gets
        // its latency.
        if self.attempt.is_some() {
            let now = now_ms(self);
            if let Some(a) = self.attempt.as_mut() {
                a.on_done(now);
            }
        }
    }
}
