//! Capture of sampled requests for replay baselines (`crate::capture` holds
//! the record and the sampler; this room decides when the flow feeds it).

use super::{Flow, LocalReply, ResponseBodyStep, ResponseHeaders, WARNINGS_HEADER};
use crate::api::RequestHead;
use crate::capture::Capture;
use crate::gateway::Gateway;
use crate::request_probe::RequestProbe;

#[derive(Debug, Default)]
pub(super) struct CaptureState {
    /// Capture configured: method, path and `anthropic-version` kept from
    /// the headers phase until the body decides whether to capture.
    head: Option<(String, String, Option<String>)>,
    /// This request is being captured (sampled).
    capture: Option<Box<Capture>>,
    /// The finished record.
    out: Option<Vec<u8>>,
}

impl CaptureState {
    #[inline]
    pub fn keep_head(&mut self, gw: &Gateway, head: &RequestHead<'_>) {
        if gw.capture.is_some() {
            self.head = Some((
                head.method.to_string(),
                head.path.to_string(),
                head.anthropic_version.map(str::to_string),
            ));
        }
    }

    #[inline]
    pub fn active(&self) -> bool {
        self.capture.is_some()
    }

    #[inline]
    pub fn local_reply(&mut self, r: &LocalReply) {
        if let Some(c) = &mut self.capture {
            c.client_content_type(Some(r.content_type));
            c.client_bytes(&r.body);
        }
    }

    #[inline]
    pub fn upstream_request(
        &mut self,
        provider: &str,
        kind: &'static str,
        path: &str,
        body: &[u8],
    ) {
        if let Some(c) = &mut self.capture {
            c.upstream_request(provider, kind, path, body);
        }
    }

    #[inline]
    pub fn response_headers(
        &mut self,
        status: u16,
        content_type: Option<&str>,
        out: &ResponseHeaders,
    ) {
        if let Some(c) = &mut self.capture {
            c.upstream_headers(status, content_type);
            let set = out.set.iter().find(|(k, _)| *k == "content-type");
            c.client_content_type(set.map(|(_, v)| v.as_ref()).or(content_type));
            let warnings = out.set.iter().find(|(k, _)| *k == WARNINGS_HEADER);
            c.client_warnings(warnings.map(|(_, v)| v.as_ref()));
        }
    }

    /// One response callback: the provider's bytes (`upstream`, `None` if
    /// they could not be read) and what the client got instead (`step`).
    #[inline]
    pub fn response_body(
        &mut self,
        step: &ResponseBodyStep,
        upstream: Option<&[u8]>,
        body_size: usize,
    ) {
        let Some(c) = &mut self.capture else {
            return;
        };
        match (step, upstream) {
            (ResponseBodyStep::Wait, _) => {}
            (_, None) if body_size > 0 => c.invalidate(),
            (step, up) => {
                let up = up.unwrap_or_default();
                c.upstream_bytes(up);
                match step {
                    ResponseBodyStep::Replace(b) | ResponseBodyStep::ReplaceWithStatus(_, b) => {
                        c.client_bytes(b)
                    }
                    _ => c.client_bytes(up),
                }
            }
        }
    }

    #[inline]
    pub fn finish(&mut self, rec: &sluice_records::UsageRecord, start_ms: u64) {
        if let Some(c) = self.capture.take() {
            self.out = c.finish(rec, start_ms);
        }
    }

    #[inline]
    pub fn take(&mut self) -> Option<Vec<u8>> {
        self.out.take()
    }
}

impl Flow {
    /// Decides (sampling by stratum) whether this request is captured.
    pub(super) fn start_capture(&mut self, gw: &Gateway, body: &[u8]) {
        let (Some(cfg), Some((method, path, version))) = (&gw.capture, self.capture.head.take())
        else {
            return;
        };
        let (model, stream) = match self.endpoint.as_ref().and_then(|e| e.model.as_ref()) {
            Some(model) => (
                model.clone(),
                self.endpoint.as_ref().is_some_and(|e| e.stream),
            ),
            None => match RequestProbe::parse(body) {
                Ok(p) => (p.model.to_string(), p.stream),
                Err(_) => (String::new(), false),
            },
        };
        let (stratum, tools) = crate::capture::stratum(&model, body, stream);
        if gw.sampler.borrow_mut().take(cfg, &stratum) {
            self.capture.capture = Some(Box::new(Capture::new(
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
}
