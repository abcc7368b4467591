//! The floor of `make bench`: a wasm HTTP filter that lets every request and
//! response through untouched, loaded exactly like Sluice (same runtime, same
//! plugin options). What it costs is what any proxy-wasm filter costs in this
//! Envoy before doing any work.
//!
//! Its plugin configuration may name host operations to perform per request
//! (`{"probe": "hold_request,set_body"}`): `make bench-profile --probes` adds
//! them one at a time to price each kind of host crossing Sluice makes, so the
//! profile says which of them dominate rather than guessing.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root::default()) });
}}

/// Host operations the probe performs per request.
#[derive(Clone, Copy, Default)]
struct Ops {
    /// One `get_http_request_headers` (the header map crossing).
    headers_map: bool,
    /// Request headers held while the body is buffered; the body read at end.
    hold_request: bool,
    /// The request body written back (needs `hold_request`).
    set_body: bool,
    /// Three request headers set and one removed.
    set_headers: bool,
    /// `:status` and `content-type` read from the response.
    response_headers: bool,
    /// The response body buffered and read at its end.
    response_buffer: bool,
    /// A ~600-byte filter-state property written in `on_log` (the usage record).
    usage_property: bool,
    /// Six metric updates per request (ids defined once).
    metrics: bool,
    /// Four clock reads.
    clock: bool,
    /// The request header map read once and written back whole, edited, in
    /// one call (instead of `set_headers`' one call per header).
    set_map: bool,
    /// The response header map read in one call.
    response_map: bool,
}

impl Ops {
    fn parse(config: &[u8]) -> Ops {
        let s = String::from_utf8_lossy(config);
        let has = |w: &str| s.contains(w);
        Ops {
            headers_map: has("headers_map"),
            hold_request: has("hold_request"),
            set_body: has("set_body"),
            set_headers: has("set_headers"),
            response_headers: has("response_headers"),
            response_buffer: has("response_buffer"),
            usage_property: has("usage_property"),
            metrics: has("metrics"),
            clock: has("clock"),
            set_map: has("set_map"),
            response_map: has("response_map"),
        }
    }
}

#[derive(Default)]
struct Root {
    ops: Ops,
    metric_ids: Vec<u32>,
}

impl Context for Root {}
impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.ops = Ops::parse(&self.get_plugin_configuration().unwrap_or_default());
        if self.ops.metrics {
            self.metric_ids = (0..6)
                .filter_map(|i| {
                    proxy_wasm::hostcalls::define_metric(
                        MetricType::Counter,
                        &format!("probe_metric_{i}"),
                    )
                    .ok()
                })
                .collect();
        }
        true
    }
    fn create_http_context(&self, _id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            ops: self.ops,
            metric_ids: self.metric_ids.clone(),
            headers: Vec::new(),
        }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    ops: Ops,
    metric_ids: Vec<u32>,
    headers: Vec<(String, String)>,
}

impl Context for Probe {}
impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, _n: usize, _end: bool) -> Action {
        if self.ops.clock {
            let _ = self.get_current_time();
        }
        if self.ops.headers_map || self.ops.set_map {
            self.headers = self.get_http_request_headers();
        }
        if self.ops.hold_request {
            Action::Pause
        } else {
            Action::Continue
        }
    }

    fn on_http_request_body(&mut self, size: usize, end: bool) -> Action {
        if !self.ops.hold_request {
            return Action::Continue;
        }
        if !end {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        if self.ops.set_headers {
            self.set_http_request_header("x-probe-a", Some("1"));
            self.set_http_request_header("x-probe-b", Some("2"));
            self.set_http_request_header("x-probe-c", Some("3"));
            self.set_http_request_header("x-probe-absent", None);
        }
        if self.ops.set_map {
            let mut map: Vec<(&str, &str)> = self
                .headers
                .iter()
                .filter(|(k, _)| k != "authorization" && k != "accept-encoding")
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            map.extend([("x-probe-a", "1"), ("x-probe-b", "2"), ("x-probe-c", "3")]);
            self.set_http_request_headers(map);
        }
        if self.ops.set_body {
            self.set_http_request_body(0, size, &body);
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _n: usize, _end: bool) -> Action {
        if self.ops.response_headers {
            let _ = self.get_http_response_header(":status");
            let _ = self.get_http_response_header("content-type");
        }
        if self.ops.response_map {
            let _ = self.get_http_response_headers();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, size: usize, end: bool) -> Action {
        if self.ops.clock {
            let _ = self.get_current_time();
        }
        if !self.ops.response_buffer {
            return Action::Continue;
        }
        if !end {
            return Action::Pause;
        }
        let _ = self.get_http_response_body(0, size);
        Action::Continue
    }

    fn on_log(&mut self) {
        if self.ops.clock {
            let _ = self.get_current_time();
            let _ = self.get_current_time();
        }
        if self.ops.usage_property {
            let record = [b'x'; 600];
            self.set_property(vec!["wasm.sluice_usage"], Some(&record));
        }
        for id in &self.metric_ids {
            let _ = proxy_wasm::hostcalls::increment_metric(*id, 1);
        }
    }
}
