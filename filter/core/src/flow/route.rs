//! The request body's path: find the model (a byte scan, the probe, or the
//! full decode — whichever serves, parsed once), pick the route, apply the
//! request guardrails and the key's admission, and hand the body to
//! `upstream` in the backend's wire.

use std::borrow::Cow;

use super::{blocked, Flow, Forward, Route, Routed};
use crate::budget::SharedStore;
use crate::canonical::{Request, Warnings};
use crate::error::GatewayError;
use crate::gateway::{Gateway, ModelEntry, Resilience};
use crate::request_probe::RequestProbe;
use crate::resilience::plans::{self, Plan, PlannedTarget};
use crate::resilience::PLAN_HEADER;
use sluice_config::GuardDirection;

impl Flow {
    /// Request guardrails run on the body the client sent (every dialect),
    /// before routing and translation see it.
    pub(super) fn route_request<'g>(
        &mut self,
        gw: &'g Gateway,
        shared: &dyn SharedStore,
        body: &[u8],
    ) -> Result<Routed<'g>, GatewayError> {
        // The `model` probe, parsed once: guardrail scoping needs the model
        // before routing does, and routing reuses it unless a mask changed
        // the body.
        let mut probe = None;
        if let Some(policy) = &gw.guardrails {
            let model = match self.endpoint.as_ref().and_then(|e| e.model.as_ref()) {
                Some(model) => Some(model.clone()),
                None => {
                    probe = Some(RequestProbe::parse(body));
                    probe
                        .as_ref()
                        .and_then(|p| p.as_ref().ok())
                        .map(|p| p.model.to_string())
                }
            };
            let key_id = self
                .admission
                .key(gw)
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

    /// The request body's path: the model (scan, probe or decode), the
    /// route, policy and admission, then the upstream request.
    /// `probe`: the body's probe if already parsed.
    fn route_body<'g, 'b>(
        &mut self,
        gw: &'g Gateway,
        shared: &dyn SharedStore,
        body: &'b [u8],
        probe: Option<Result<RequestProbe<'b>, GatewayError>>,
    ) -> Result<Routed<'g>, GatewayError> {
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
        // The model in the URL (Gemini) or in the body.
        let url_model = endpoint.model.is_some();
        let mut probe = match probe {
            Some(p) if !url_model => Some(p?),
            _ => None,
        };
        if url_model && body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(GatewayError::invalid_request(
                "The request body must be a JSON object.",
            ));
        }
        let scanned = if url_model || probe.is_some() {
            None
        } else {
            crate::json_splice::top_level_member(body, b"model")
                .and_then(|raw| serde_json::from_slice::<String>(raw).ok())
        };
        if !url_model && probe.is_none() && scanned.is_none() {
            probe = Some(RequestProbe::parse(body)?);
        }
        let (model_name, stream) = match (&endpoint.model, &probe, scanned) {
            (Some(model), _, _) => (model.clone(), endpoint.stream),
            (None, Some(p), _) => (p.model.to_string(), p.stream),
            // `stream` is known once the body is parsed, below.
            (None, None, Some(m)) => (m, false),
            _ => return Err(GatewayError::invalid_request("missing model")),
        };
        self.record.stream = stream;
        self.public_model.clone_from(&model_name);
        self.client_wants_usage = probe.as_ref().is_some_and(|p| p.client_wants_usage);
        let key = self
            .admission
            .key(gw)
            .ok_or_else(|| GatewayError::invalid_api_key("Incorrect API key provided."))?;
        // Only a configured name reaches the record (metric labels, the
        // ledger): a client-chosen one would give every request its own
        // label and memo entry. (Looked up again only on the error path.)
        let model = gw.model_for(key, &model_name).inspect_err(|_| {
            if gw.is_model(&model_name) {
                self.record.model = Some(model_name.clone());
            }
            if !url_model && probe.is_none() {
                // Refused before the parse: the record's `stream` as the
                // scan reads it.
                self.record.stream =
                    crate::json_splice::top_level_member(body, b"stream") == Some(b"true");
            }
        })?;
        self.record.model = Some(model_name.clone());
        // A resilient model: Envoy picks the target per attempt; the first
        // of priority 0 stands in for the estimates.
        let resilient = model.resilience.is_some();
        let target = if resilient {
            let first = model.targets.iter().min_by_key(|t| t.priority);
            first.unwrap_or_else(|| model.pick())
        } else {
            model.pick()
        };
        let provider = gw
            .provider(target.provider)
            .ok_or_else(|| GatewayError::unavailable("The model's provider is not configured."))?;
        if endpoint.op != crate::api::Operation::Generate {
            let t = super::operations::Target {
                key,
                model,
                target,
                provider,
            };
            return self.route_operation(gw, shared, body, probe, &endpoint, t);
        }
        let route = Route::new(self.api, provider.backend_for(self.api.wire()));
        // Whether any target needs the request translated.
        let translating = if resilient {
            model.targets.iter().any(|t| {
                gw.provider(t.provider)
                    .is_some_and(|p| p.backend_for(self.api.wire()).wire() != self.api.wire())
            })
        } else {
            self.record.provider = Some(provider.name.clone());
            self.record.upstream_model = Some(target.upstream_model.clone());
            self.route = Some(route);
            route.translating()
        };
        // The decoded request: needed to translate, or for policy checks.
        let policy = gw.guardrails.as_ref();
        let needs_canonical = translating || policy.is_some_and(|p| p.needs_request());
        let canonical = if needs_canonical {
            Some(endpoint.api.decode_request(body, &endpoint)?)
        } else {
            None
        };
        if probe.is_none() && !url_model {
            // Still unparsed: translation reads the decode (which rejects
            // duplicate keys, so its model is the one scanned); passthrough
            // needs the probe to rewrite the body, decoded or not.
            let (stream, wants_usage) = match &canonical {
                Some(req) if translating => {
                    if req.model != model_name {
                        return Err(GatewayError::invalid_request("'model' is ambiguous")
                            .with_param("model"));
                    }
                    (req.stream, req.stream_usage)
                }
                _ => {
                    let p = probe.insert(RequestProbe::parse(body)?);
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
        // Every choice (`n`) is a completion of its own; client integers are
        // combined without overflow.
        let completion_estimate = max_tokens
            .unwrap_or(crate::budget::DEFAULT_ESTIMATED_COMPLETION)
            .saturating_mul(choices.unwrap_or(1).max(1));
        self.admission.admit(
            shared,
            key,
            model.budget_price(target),
            &model_name,
            prompt_tokens,
            completion_estimate,
            stream,
            self.start_ms / 1000,
        )?;

        if let Some(res) = &model.resilience {
            return self
                .plan(gw, model, res, canonical, stream, body)
                .map(Routed::Forward);
        }
        let new_body = if route.translating() {
            // Decoded above whenever the request is translated.
            let req = canonical.ok_or_else(|| GatewayError::invalid_request("no request"))?;
            self.check_translatable(&req, route.backend.kind())?;
            route
                .backend
                .encode_request(&req, &target.upstream_model, &mut self.warnings)
        } else {
            self.api
                .rewrite_passthrough(body, probe.as_ref(), &target.upstream_model)
        };
        super::upstream::forward(
            route.backend,
            route.translating(),
            provider,
            &target.upstream_model,
            stream,
            self.client_version_missing,
            new_body,
        )
        .map(Routed::Forward)
    }

    /// A resilient model's request: the plan its attempts will read (each
    /// translates for the target Envoy picked), and the request for the
    /// model's cluster — the client's body, the router's retry headers.
    fn plan<'g>(
        &mut self,
        gw: &'g Gateway,
        model: &ModelEntry,
        res: &'g Resilience,
        canonical: Option<Request>,
        stream: bool,
        body: &[u8],
    ) -> Result<Forward<'g>, GatewayError> {
        let mut targets = Vec::with_capacity(model.targets.len());
        for t in &model.targets {
            let provider = gw.provider_rc(t.provider).ok_or_else(|| {
                GatewayError::unavailable("The model's provider is not configured.")
            })?;
            // Refused up front if any target could not carry it: which
            // target answers must not change what the request means.
            let backend = provider.backend_for(self.api.wire());
            if backend.wire() != self.api.wire() {
                if let Some(req) = &canonical {
                    refuse_untranslatable(req, backend.kind())?;
                }
            }
            targets.push(PlannedTarget {
                provider,
                upstream_model: t.upstream_model.clone(),
                price: t.price,
            });
        }
        let endpoint = self
            .endpoint
            .clone()
            .ok_or_else(|| GatewayError::invalid_request("no endpoint"))?;
        let passthrough = targets
            .iter()
            .any(|t| t.provider.backend_for(self.api.wire()).wire() == self.api.wire());
        let ticket = plans::register(Plan {
            body: passthrough.then(|| body.to_vec()),
            api: self.api,
            endpoint,
            public_model: self.public_model.clone(),
            stream,
            client_version_missing: self.client_version_missing,
            canonical,
            targets,
            attempts: Vec::new(),
        })
        .ok_or_else(|| {
            GatewayError::unavailable("The gateway has too many requests in flight; retry shortly.")
        })?;
        let mut set = Vec::with_capacity(res.headers.len().saturating_add(3));
        set.push((super::CLUSTER_HEADER, Cow::Borrowed(res.cluster.as_str())));
        set.push((PLAN_HEADER, Cow::Owned(ticket.id().to_string())));
        self.plan = Some(ticket);
        for (name, value) in &res.headers {
            set.push((*name, Cow::Borrowed(value.as_str())));
        }
        set.push(("content-length", Cow::Owned(body.len().to_string())));
        Ok(Forward {
            remove_more: Vec::new(),
            strip_client_routing: true,
            remove: super::upstream::UPSTREAM_REMOVE,
            set,
            body: body.to_vec(),
        })
    }

    /// Rejects what translation cannot carry without changing the meaning;
    /// records what it can drop with a warning.
    fn check_translatable(&mut self, req: &Request, kind: &str) -> Result<(), GatewayError> {
        refuse_untranslatable(req, kind)?;
        note_unmapped(req, kind, &mut self.warnings);
        Ok(())
    }

    /// Notes what went upstream: the shadow digest and the capture.
    pub(super) fn forwarded(&mut self, gw: &Gateway, f: &Forward<'_>) {
        if gw.shadow.is_none() && !self.capture.active() {
            return;
        }
        let path = f.set.iter().find(|(k, _)| *k == ":path").map(|(_, v)| v);
        let path = path.map(|p| p.as_ref()).unwrap_or_default();
        let provider = self.record.provider.as_deref().unwrap_or_default();
        if gw.shadow.is_some() {
            self.record.digest = Some(super::upstream::forward_digest(provider, path, &f.body));
        }
        if let Some(route) = self.route {
            self.capture
                .upstream_request(provider, route.backend.kind(), path, &f.body);
        }
    }
}

/// Refuses what a translation to `kind` cannot carry without changing the
/// meaning.
pub(super) fn refuse_untranslatable(req: &Request, kind: &str) -> Result<(), GatewayError> {
    if req.n.is_some_and(|n| n > 1) {
        return Err(GatewayError::invalid_request(format!(
            "Only one choice per request can be translated to a {} provider (n > 1).",
            kind
        ))
        .with_param("n"));
    }
    if let Some(what) = req.untranslatable.first() {
        return Err(GatewayError::invalid_request(format!(
            "This request uses {what}, which only the client API's own kind of provider serves; \
             this model is served by a provider of kind '{kind}'."
        )));
    }
    for field in &req.unmapped {
        if field.contains("server tool") {
            return Err(GatewayError::invalid_request(format!(
                "{field} runs only at Anthropic; this model is served by a {} provider.",
                kind
            ))
            .with_param("tools"));
        }
    }
    Ok(())
}

/// Records what a translation to `kind` drops (a warning header each).
pub(crate) fn note_unmapped(req: &Request, kind: &str, warnings: &mut Warnings) {
    for field in &req.unmapped {
        warnings.dropped(field, kind);
    }
}
