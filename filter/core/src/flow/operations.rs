//! The endpoints beside generation: token counting and embeddings. Both
//! are routed like a generation request (the key's models, the model's
//! target, its provider); they differ in what goes upstream and what comes
//! back. Resilient models serve them from their first target, without
//! retries (docs/translation.md).

use sluice_records::TokenUsage;

use super::{Flow, Route, Routed};
use crate::api::{Endpoint, Operation};
use crate::budget::SharedStore;
use crate::canonical::embeddings::{EmbedInput, EmbedRequest};
use crate::error::GatewayError;
use crate::gateway::{Gateway, KeyEntry, ModelEntry, ProviderEntry, TargetEntry};
use crate::request_probe::RequestProbe;

/// Response header on a token count the gateway made itself.
pub const TOKEN_COUNT_HEADER: &str = "x-sluice-token-count";

/// What the answer of an embeddings request needs.
#[derive(Debug)]
pub(super) struct EmbedCtx {
    pub req: EmbedRequest,
    /// Input tokens as the gateway counts them: billed when the provider
    /// reports none (Gemini never does).
    pub estimate: u64,
}

pub(super) struct Target<'g> {
    pub key: &'g KeyEntry,
    pub model: &'g ModelEntry,
    pub target: &'g TargetEntry,
    pub provider: &'g ProviderEntry,
}

impl Flow {
    pub(super) fn route_operation<'g>(
        &mut self,
        gw: &'g Gateway,
        shared: &dyn SharedStore,
        body: &[u8],
        probe: Option<RequestProbe<'_>>,
        endpoint: &Endpoint,
        t: Target<'g>,
    ) -> Result<Routed<'g>, GatewayError> {
        self.record.operation = endpoint.op.record_name().map(std::borrow::Cow::Borrowed);
        self.record.stream = false;
        if let Some(p) = &gw.guardrails {
            p.check_model(&self.public_model).map_err(|msg| {
                GatewayError::new(400, crate::error::ErrorKind::GuardrailBlocked, msg)
            })?;
        }
        match endpoint.op {
            Operation::CountTokens => self.count_tokens(shared, body, probe, endpoint, t),
            Operation::Embed => self.embed(shared, body, probe, endpoint, t),
            Operation::Generate => Err(GatewayError::invalid_request("not an operation")),
        }
    }

    /// The provider's own count when it speaks the client's API and has
    /// the endpoint; otherwise the gateway's tokenizer, labelled an
    /// estimate. Free at every provider: admitted as a request (rpm), never
    /// billed.
    fn count_tokens<'g>(
        &mut self,
        shared: &dyn SharedStore,
        body: &[u8],
        probe: Option<RequestProbe<'_>>,
        endpoint: &Endpoint,
        t: Target<'g>,
    ) -> Result<Routed<'g>, GatewayError> {
        let api = self.api;
        let counter = api.token_count().ok_or_else(|| {
            GatewayError::not_found("POST", "this API has no token counting endpoint")
        })?;
        let backend = t.provider.backend_for(api.wire());
        let native = backend.wire() == api.wire();
        let provider_counts = backend.token_count().filter(|_| native);
        // Decoded only when the gateway counts; what it cannot see (a
        // stored response, a file) it cannot count either.
        let req = match provider_counts {
            Some(_) => None,
            None => {
                let req = counter.decode(body, endpoint)?;
                super::route::refuse_untranslatable(&req, backend.kind())?;
                Some(req)
            }
        };
        self.admission.admit(
            shared,
            t.key,
            t.model.budget_price(t.target),
            &self.public_model,
            0,
            0,
            false,
            self.start_ms / 1000,
        )?;
        match (provider_counts, req) {
            (Some(tc), _) => {
                self.record.provider = Some(t.provider.name.clone());
                self.record.upstream_model = Some(t.target.upstream_model.clone());
                self.route = Some(Route::new(api, backend));
                let upstream = t.target.upstream_model.as_str();
                let body = passthrough_body(api, body, probe, endpoint, upstream)?;
                let path = tc.upstream_path(&t.provider.base_path, upstream);
                super::upstream::forward_at(
                    path,
                    backend,
                    false,
                    t.provider,
                    self.client_version_missing,
                    body,
                )
                .map(Routed::Forward)
            }
            (None, req) => {
                let req = req.ok_or_else(|| GatewayError::invalid_request("no request"))?;
                let n = crate::tokens::count_request(&t.target.upstream_model, &req);
                let mut reply = self.reply_ok(counter.encode(n));
                reply.headers.push((TOKEN_COUNT_HEADER, "estimate".into()));
                Ok(Routed::Answer(reply))
            }
        }
    }

    /// Embeddings: passed through to a provider of the client's API,
    /// otherwise encoded for the provider's and the answer re-encoded.
    /// Metered by input tokens (the provider's count, or the gateway's).
    fn embed<'g>(
        &mut self,
        shared: &dyn SharedStore,
        body: &[u8],
        probe: Option<RequestProbe<'_>>,
        endpoint: &Endpoint,
        t: Target<'g>,
    ) -> Result<Routed<'g>, GatewayError> {
        let api = self.api;
        let emb_api = api.embeddings().ok_or_else(|| {
            GatewayError::not_found("POST", "this API has no embeddings endpoint")
        })?;
        let backend = t.provider.backend_for(api.wire());
        let emb = backend.embeddings().ok_or_else(|| {
            GatewayError::invalid_request(format!(
                "The model '{}' is served by a provider of kind '{}', which has no embeddings endpoint.",
                self.public_model,
                backend.kind()
            ))
            .with_param("model")
        })?;
        let req = emb_api.decode(body, endpoint)?;
        let upstream = t.target.upstream_model.as_str();
        let estimate = req.inputs.iter().fold(0u64, |n, i| {
            n.saturating_add(match i {
                EmbedInput::Text(s) => crate::tokens::count(upstream, s),
                EmbedInput::Tokens(ids) => ids.len() as u64,
            })
        });
        self.admission.admit(
            shared,
            t.key,
            t.model.budget_price(t.target),
            &self.public_model,
            estimate,
            0,
            false,
            self.start_ms / 1000,
        )?;
        self.record.provider = Some(t.provider.name.clone());
        self.record.upstream_model = Some(t.target.upstream_model.clone());
        let route = Route::new(api, backend);
        self.route = Some(route);
        let (path, body) = if route.translating() {
            for field in &req.unmapped {
                self.warnings.dropped(field, backend.kind());
            }
            let body = emb
                .encode(&req, upstream, &mut self.warnings)
                .map_err(|e| GatewayError::invalid_request(e).with_param("input"))?;
            (
                emb.upstream_path(&t.provider.base_path, upstream, false),
                body,
            )
        } else if endpoint.model.is_some() && !req.single {
            // A Gemini batch names the model in every entry, and the
            // provider wants its own name there: the entries are written
            // again (the answer passes as it is).
            let body = emb
                .encode(&req, upstream, &mut self.warnings)
                .map_err(|e| GatewayError::invalid_request(e).with_param("input"))?;
            (
                emb.upstream_path(&t.provider.base_path, upstream, false),
                body,
            )
        } else {
            let body = passthrough_body(api, body, probe, endpoint, upstream)?;
            (
                emb.upstream_path(&t.provider.base_path, upstream, req.single),
                body,
            )
        };
        self.embed = Some(EmbedCtx { req, estimate });
        super::upstream::forward_at(
            path,
            backend,
            route.translating(),
            t.provider,
            self.client_version_missing,
            body,
        )
        .map(Routed::Forward)
    }

    /// An embeddings answer: usage (the provider's, or the gateway's count)
    /// and, translated, the client's shape. `None`: not an embeddings
    /// request.
    pub(super) fn finish_embeddings(
        &mut self,
        route: Route,
        body: &[u8],
    ) -> Option<super::ResponseBodyStep> {
        let ctx = self.embed.as_ref()?;
        let status = self.record.status;
        if !(200..300).contains(&status) {
            return None;
        }
        let estimate = TokenUsage {
            prompt_tokens: ctx.estimate,
            ..TokenUsage::default()
        };
        if !route.translating() {
            let reported = route
                .backend
                .body_usage(body)
                .filter(|u| u.prompt_tokens > 0);
            self.response.usage_estimated = reported.is_none();
            self.response.usage = Some(reported.unwrap_or(estimate));
            return Some(super::ResponseBodyStep::Pass);
        }
        let decoded = route.backend.embeddings().and_then(|e| e.decode(body));
        let Some(mut r) = decoded.filter(|r| r.vectors.len() == ctx.req.inputs.len()) else {
            self.record.status = 502;
            self.record.completed = false;
            let err = GatewayError::new(
                502,
                crate::error::ErrorKind::Internal,
                "The provider returned embeddings the gateway could not read.",
            );
            return Some(super::ResponseBodyStep::ReplaceWithStatus(
                502,
                route.api.render_error(&err),
            ));
        };
        self.response.usage_estimated = r.usage.is_none();
        let usage = r.usage.unwrap_or(estimate);
        r.usage = Some(usage);
        self.response.usage = Some(usage);
        let out = route
            .api
            .embeddings()
            .map(|e| e.encode(&r, &ctx.req, &self.public_model))
            .unwrap_or_default();
        Some(super::ResponseBodyStep::ReplaceWithStatus(status, out))
    }
}

/// The client's body for a provider of its own API: only the model
/// changes (in the body; a model in the URL is the path's).
fn passthrough_body(
    api: &'static dyn crate::api::ClientApi,
    body: &[u8],
    probe: Option<RequestProbe<'_>>,
    endpoint: &Endpoint,
    upstream_model: &str,
) -> Result<Vec<u8>, GatewayError> {
    if endpoint.model.is_some() {
        return Ok(body.to_vec());
    }
    let probe = match probe {
        Some(p) => p,
        None => RequestProbe::parse(body)?,
    };
    Ok(api.rewrite_passthrough(body, Some(&probe), upstream_model))
}
