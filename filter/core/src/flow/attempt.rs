//! One attempt of a resilient model's request, in the attempt filter (an
//! upstream HTTP filter of the model's cluster, so it runs once per attempt
//! after Envoy picked the endpoint). It reads which target the endpoint is
//! (`provider`, `model` from the endpoint's metadata), finds the request's
//! plan, and makes the request that provider's: body encoded for its
//! backend (or passed through with the model renamed), path, authority,
//! credential. It leaves the answer alone — the router must see the
//! provider's own status to retry — and logs the attempt's status and
//! latency in the plan, where the gateway half reads which target answered.

use super::{Forward, LocalReply};
use crate::error::GatewayError;
use crate::request_probe::RequestProbe;
use crate::resilience::plans::{self, AttemptLog};

// An attempt removes no header of the client's: Envoy gives the next
// attempt the header map this one left (plans.rs), so a header removed
// here would be missing for a provider that needs it (`anthropic-beta` on
// a fallback to Anthropic). Only the other targets' credentials go.

/// What the endpoint Envoy picked says about itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptHead<'a> {
    /// `PLAN_HEADER`'s value.
    pub plan: Option<&'a str>,
    /// The endpoint's `sluice` metadata: provider name and upstream model.
    pub provider: Option<&'a str>,
    pub model: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum AttemptStep<'a> {
    /// Keep buffering.
    Wait,
    /// Send this request to the provider.
    Forward(Forward<'a>),
    /// Answer this attempt locally (the gateway half renders the error in
    /// the client's API: the plan records it).
    Reply(LocalReply),
}

#[derive(Debug)]
pub struct Attempt {
    plan: u64,
    /// Index of this attempt in the plan's log.
    index: usize,
    started_ms: u64,
    answered: bool,
    /// Headers the forward borrows from (the provider's, from the plan).
    provider: Option<std::rc::Rc<crate::gateway::ProviderEntry>>,
    upstream_model: String,
    /// The credential headers of the plan's other providers.
    others: Vec<String>,
}

fn refuse(status: u16, message: &str) -> LocalReply {
    let body = serde_json::json!({"error": {"message": message, "type": "sluice_attempt"}});
    LocalReply {
        status,
        content_type: "application/json",
        body: body.to_string().into_bytes(),
        headers: Vec::new(),
    }
}

impl Attempt {
    /// Starts an attempt (request headers). Err: answer it locally.
    pub fn start(head: &AttemptHead<'_>, now_ms: u64) -> Result<Attempt, LocalReply> {
        let id = head
            .plan
            .and_then(|p| p.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                refuse(
                500,
                "sluice: this request reached a model cluster without the gateway filter's plan \
                 (is the Sluice filter before the router, with the same vm_id as this one?)",
            )
            })?;
        let (provider, model) =
            match (head.provider, head.model) {
                (Some(p), Some(m)) => (p, m),
                _ => return Err(refuse(
                    500,
                    "sluice: the selected endpoint has no 'sluice' metadata naming its provider",
                )),
            };
        let started = plans::with_plan(id, |plan| {
            let target = plan.target_index(provider, model)?;
            let t = plan.targets.get(target)?;
            let provider = t.provider.clone();
            let upstream_model = t.upstream_model.clone();
            let mut others: Vec<String> = plan
                .targets
                .iter()
                .filter_map(|o| o.provider.credential_header.clone())
                .filter(|h| Some(h) != provider.credential_header.as_ref())
                .collect();
            others.sort_unstable();
            others.dedup();
            plan.attempts.push(AttemptLog {
                target,
                started_ms: now_ms,
                status: 0,
                latency_ms: 0,
                warnings: Default::default(),
                local_error: None,
            });
            Some((
                plan.attempts.len().saturating_sub(1),
                provider,
                upstream_model,
                others,
            ))
        });
        match started {
            Some(Some((index, provider, upstream_model, others))) => Ok(Attempt {
                others,
                plan: id,
                index,
                started_ms: now_ms,
                answered: false,
                provider: Some(provider),
                upstream_model,
            }),
            Some(None) => Err(refuse(
                500,
                "sluice: the selected endpoint names a target this model does not have \
                 (a configuration push in flight?)",
            )),
            None => Err(refuse(
                500,
                "sluice: no plan for this request in this VM (the attempt filter must share the \
                 gateway filter's vm_id and code)",
            )),
        }
    }

    /// The request body (Envoy's copy is not read: the attempt encodes from
    /// the plan).
    pub fn on_request_body(&self, end_of_stream: bool) -> AttemptStep<'_> {
        if !end_of_stream {
            return AttemptStep::Wait;
        }
        match self.encode() {
            Ok(f) => AttemptStep::Forward(f),
            Err(e) => {
                let status = e.status;
                let message = e.message.clone();
                self.note_local(e);
                AttemptStep::Reply(refuse(status, &message))
            }
        }
    }

    fn note_local(&self, e: GatewayError) {
        let index = self.index;
        plans::with_plan(self.plan, |p| {
            if let Some(a) = p.attempts.get_mut(index) {
                a.local_error = Some(e);
            }
        });
    }

    fn encode(&self) -> Result<Forward<'_>, GatewayError> {
        let provider = self
            .provider
            .as_deref()
            .ok_or_else(|| GatewayError::unavailable("no provider"))?;
        let model = self.upstream_model.as_str();
        let index = self.index;
        // Encoded inside the plan (the canonical request lives there);
        // what leaves is the body and what the forward needs.
        let encoded = plans::with_plan(self.plan, |plan| {
            let backend = provider.backend_for(plan.api.wire());
            let translating = plan.api.wire() != backend.wire();
            let mut warnings = Default::default();
            let body = if translating {
                let req = plan
                    .canonical
                    .as_ref()
                    .ok_or_else(|| GatewayError::invalid_request("no request"))?;
                super::route::note_unmapped(req, backend.kind(), &mut warnings);
                backend.encode_request(req, model, &mut warnings)
            } else {
                let body = plan
                    .body
                    .as_deref()
                    .ok_or_else(|| GatewayError::invalid_request("no body"))?;
                let probe = match plan.endpoint.model {
                    Some(_) => None,
                    None => Some(RequestProbe::parse(body)?),
                };
                plan.api.rewrite_passthrough(body, probe.as_ref(), model)
            };
            if let Some(a) = plan.attempts.get_mut(index) {
                a.warnings = warnings;
            }
            Ok::<_, GatewayError>((
                body,
                backend,
                translating,
                plan.stream,
                plan.client_version_missing,
            ))
        })
        .ok_or_else(|| GatewayError::unavailable("The request's plan is gone."))??;
        let (body, backend, translating, stream, version_missing) = encoded;
        let mut f = super::upstream::forward(
            backend,
            translating,
            provider,
            model,
            stream,
            version_missing,
            body,
        )?;
        // The gateway half routed already; the attempt only rewrites, and
        // names the provider for its credential injector (if Envoy injects
        // its key).
        f.set.retain(|(k, _)| *k != super::CLUSTER_HEADER);
        f.set.push((
            crate::resilience::CREDENTIAL_HEADER,
            std::borrow::Cow::Borrowed(provider.name.as_str()),
        ));
        f.remove = &[];
        // The plan header stays (the next attempt needs it), and the
        // router's headers are the gateway's own.
        f.strip_client_routing = false;
        f.remove_more = self.others.iter().map(String::as_str).collect();
        Ok(f)
    }

    /// The provider answered (its response headers).
    pub fn on_response_headers(&mut self, status: u16, now_ms: u64) {
        self.answered = true;
        let (index, latency) = (self.index, now_ms.saturating_sub(self.started_ms));
        plans::with_plan(self.plan, |p| {
            if let Some(a) = p.attempts.get_mut(index) {
                a.status = status;
                a.latency_ms = latency;
            }
        });
    }

    /// The attempt is over (its stream is gone). Without an answer it was a
    /// connect failure, a reset or a first-byte timeout: its latency is
    /// until now.
    pub fn on_done(&mut self, now_ms: u64) {
        if self.answered {
            return;
        }
        self.answered = true;
        let (index, latency) = (self.index, now_ms.saturating_sub(self.started_ms));
        plans::with_plan(self.plan, |p| {
            if let Some(a) = p.attempts.get_mut(index) {
                a.latency_ms = latency;
            }
        });
    }
}
