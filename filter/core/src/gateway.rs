//! The configuration compiled for the request path: keys indexed by digest,
//! models by name, provider credentials resolved once at configure time.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use sluice_config::{ConfigError, KeyStatus, Limits, PluginConfig, ProviderAuth};

use crate::backend::Backend;

use crate::error::GatewayError;
use crate::routing::WeightedPicker;

#[derive(Debug)]
pub struct KeyEntry {
    pub id: String,
    pub name: String,
    pub status: KeyStatus,
    pub expires_at: Option<u64>,
    pub budget: Option<sluice_config::KeyBudget>,
    pub limits: Option<sluice_config::KeyLimits>,
    /// `None`: every model.
    pub models: Option<HashSet<String>>,
}

impl KeyEntry {
    pub fn may_use(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(model))
    }
}

#[derive(Debug)]
pub struct ProviderEntry {
    pub name: String,
    /// What the provider is (its configured `kind`, from the registry).
    pub backend: &'static dyn Backend,
    /// The other wires it serves natively (`serves`).
    pub also: Vec<&'static dyn Backend>,
    pub cluster: String,
    pub host: String,
    pub base_path: String,
    pub credential: Credential,
    /// The header its key goes in (set by the filter or injected by
    /// Envoy); None without a credential. An attempt at another provider
    /// of a resilient model removes it (docs/routing.md).
    pub credential_header: Option<String>,
}

impl ProviderEntry {
    /// The backend a client of `wire` is served by: the one of that wire
    /// when the provider serves it natively (passthrough), else its own
    /// (translated).
    pub fn backend_for(&self, wire: crate::backend::Wire) -> &'static dyn Backend {
        if self.backend.wire() == wire {
            return self.backend;
        }
        self.also
            .iter()
            .copied()
            .find(|b| b.wire() == wire)
            .unwrap_or(self.backend)
    }
}

/// The credential header to send, resolved from the VM environment.
#[derive(Debug)]
pub enum Credential {
    None,
    Header {
        name: String,
        value: String,
    },
    /// Configured but the environment variable is not set in this Envoy.
    Missing {
        env: String,
    },
}

#[derive(Debug)]
pub struct TargetEntry {
    pub provider: usize,
    pub upstream_model: String,
    pub price: Option<sluice_config::TokenPrice>,
    pub priority: u32,
}

/// What `pick` answers for a model without targets (which validation
/// refuses): a provider index that names no provider, so the request gets
/// a clear 503 rather than a panic.
static NO_TARGET: TargetEntry = TargetEntry {
    provider: usize::MAX,
    upstream_model: String::new(),
    price: None,
    priority: 0,
};

/// A model Envoy routes among its targets (docs/routing.md).
#[derive(Debug)]
pub struct Resilience {
    /// The model's cluster (endpoints: its targets).
    pub cluster: String,
    /// The router headers of its retry policy and timeouts.
    pub headers: Vec<(&'static str, String)>,
}

#[derive(Debug)]
pub struct ModelEntry {
    pub name: String,
    pub targets: Vec<TargetEntry>,
    picker: WeightedPicker,
    /// Set when the model has a resilience policy.
    pub resilience: Option<Resilience>,
}

impl ModelEntry {
    pub fn pick(&self) -> &TargetEntry {
        // The picker only returns indices below its length, which is
        // the number of targets; fall back to the first defensively.
        let i = self.picker.pick();
        match self.targets.get(i).or_else(|| self.targets.first()) {
            Some(t) => t,
            // Validation refuses a model without targets; unreachable.
            None => &NO_TARGET,
        }
    }

    /// The price a budget reserves with: the picked target's, or for a
    /// resilient model (any target may answer) the dearest one's — None if
    /// any target has no price.
    pub fn budget_price(&self, picked: &TargetEntry) -> Option<sluice_config::TokenPrice> {
        if self.resilience.is_none() {
            return picked.price;
        }
        let mut dearest: Option<sluice_config::TokenPrice> = None;
        for t in &self.targets {
            let p = t.price?;
            let cost = p.cost(1000, 1000, 0);
            if dearest.is_none_or(|d| d.cost(1000, 1000, 0) < cost) {
                dearest = Some(p);
            }
        }
        dearest
    }
}

#[derive(Debug)]
pub struct Gateway {
    pub version: String,
    pub limits: Limits,
    /// Compiled once per configuration.
    pub guardrails: Option<crate::guardrails::Policy>,
    pub metrics_per_key: bool,
    /// Traffic capture for replay baselines, and its per-VM sampler (reset
    /// with each configuration).
    pub capture: Option<sluice_config::CaptureConfig>,
    pub sampler: std::cell::RefCell<crate::capture::Sampler>,
    /// Role in an online shadow comparison.
    pub shadow: Option<sluice_config::ShadowRole>,
    /// The hosts served (empty: all); others pass through untouched.
    pub hosts: Vec<String>,
    /// Provider endpoints passed through metered, with their provider's
    /// index.
    endpoints: Vec<(sluice_config::PassthroughEndpoint, usize)>,
    keys: HashMap<[u8; 32], KeyEntry>,
    models: HashMap<String, ModelEntry>,
    /// Model names in configuration order (for `GET /v1/models`).
    model_order: Vec<String>,
    providers: Vec<Rc<ProviderEntry>>,
}

impl Gateway {
    /// Validates and compiles. `env` resolves provider key variables.
    pub fn new(
        cfg: PluginConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Gateway, Vec<ConfigError>> {
        Self::with_backends(cfg, env, crate::registry::BACKENDS)
    }

    /// As `new`, with provider kinds looked up in `backends` (the registry,
    /// or a test's registry with a backend of its own).
    pub fn with_backends(
        cfg: PluginConfig,
        env: impl Fn(&str) -> Option<String>,
        backends: &[&'static dyn Backend],
    ) -> Result<Gateway, Vec<ConfigError>> {
        cfg.validate()?;
        // Each provider's backend, looked up once; a kind without one
        // refuses the configuration.
        let mut resolved = Vec::with_capacity(cfg.providers.len());
        let mut unknown = Vec::new();
        let lookup =
            |kind: &sluice_config::ProviderKind, at: String, unknown: &mut Vec<ConfigError>| {
                let found = backends.iter().copied().find(|b| b.kind() == kind.as_str());
                if found.is_none() {
                    let known: Vec<&str> = backends.iter().map(|b| b.kind()).collect();
                    unknown.push(ConfigError::new(
                        at,
                        format!(
                            "unknown provider kind '{}' (known: {})",
                            crate::error::truncate(kind.as_str(), 64),
                            known.join(", ")
                        ),
                    ));
                }
                found
            };
        for (i, p) in cfg.providers.iter().enumerate() {
            let primary = lookup(&p.kind, format!("providers[{i}].kind"), &mut unknown);
            let mut also = Vec::with_capacity(p.serves.len());
            for (j, k) in p.serves.iter().enumerate() {
                if let Some(b) = lookup(k, format!("providers[{i}].serves[{j}]"), &mut unknown) {
                    also.push(b);
                }
            }
            if let Some(b) = primary {
                resolved.push((b, also));
            }
        }
        if !unknown.is_empty() {
            return Err(unknown);
        }
        let guardrails = match &cfg.guardrails {
            Some(g) => Some(
                crate::guardrails::Policy::new(g, &env)
                    .map_err(|e| vec![ConfigError::new("guardrails", e)])?,
            ),
            _ => None,
        };
        let mut provider_index = HashMap::new();
        let mut providers = Vec::with_capacity(cfg.providers.len());
        for (p, (backend, also)) in cfg.providers.into_iter().zip(resolved) {
            let credential = match (&p.auth, &p.api_key_env) {
                // Injected by Envoy (`api_key_secret`), or no credential.
                (ProviderAuth::None, _) | (_, None) => Credential::None,
                (auth, Some(var)) => match env(var).filter(|v| !v.is_empty()) {
                    None => Credential::Missing { env: var.clone() },
                    Some(secret) => match auth {
                        ProviderAuth::Bearer => Credential::Header {
                            name: "authorization".into(),
                            value: format!("Bearer {secret}"),
                        },
                        ProviderAuth::Header { name } => Credential::Header {
                            name: name.to_ascii_lowercase(),
                            value: secret,
                        },
                        ProviderAuth::None => Credential::None,
                    },
                },
            };
            provider_index.insert(p.name.clone(), providers.len());
            let cluster = p.cluster_name();
            let host = p.authority();
            let base_path = p
                .path_prefix()
                .as_deref()
                .unwrap_or(backend.default_base_path())
                .trim_end_matches('/')
                .to_string();
            let credential_header = match &p.auth {
                ProviderAuth::Bearer => Some("authorization".to_string()),
                ProviderAuth::Header { name } => Some(name.to_ascii_lowercase()),
                ProviderAuth::None => None,
            };
            providers.push(Rc::new(ProviderEntry {
                name: p.name,
                backend,
                also,
                cluster,
                host,
                base_path,
                credential,
                credential_header,
            }));
        }
        let endpoints = cfg
            .endpoints
            .into_iter()
            .filter_map(|e| {
                let p = provider_index.get(&e.provider).copied()?;
                Some((e, p))
            })
            .collect();
        let mut models = HashMap::new();
        let mut model_order = Vec::new();
        for m in cfg.models {
            let picker = WeightedPicker::new(m.targets.iter().map(|t| t.weight));
            let resilience = m.resilient().then(|| Resilience {
                cluster: m.cluster_name(),
                headers: crate::retry_policy::headers(&m),
            });
            let targets = m
                .targets
                .into_iter()
                .filter_map(|t| {
                    Some(TargetEntry {
                        provider: *provider_index.get(&t.provider)?,
                        upstream_model: t.model,
                        price: t.price,
                        priority: t.priority,
                    })
                })
                .collect();
            model_order.push(m.name.clone());
            models.insert(
                m.name.clone(),
                ModelEntry {
                    name: m.name,
                    targets,
                    picker,
                    resilience,
                },
            );
        }
        let mut keys = HashMap::new();
        for k in cfg.keys {
            let mut digest = [0u8; 32];
            for (i, b) in digest.iter_mut().enumerate() {
                // Validated as 64 hex digits; anything else matches no key.
                let at = i.saturating_mul(2);
                *b = k
                    .sha256
                    .get(at..at.saturating_add(2))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .unwrap_or(0);
            }
            keys.insert(
                digest,
                KeyEntry {
                    id: k.id,
                    name: k.name,
                    status: k.status,
                    expires_at: k.expires_at,
                    budget: k.budget,
                    limits: k.limits,
                    models: if k.models.is_empty() {
                        None
                    } else {
                        Some(k.models.into_iter().collect())
                    },
                },
            );
        }
        Ok(Gateway {
            version: cfg.version,
            limits: cfg.limits,
            guardrails,
            metrics_per_key: cfg.metrics.is_some_and(|m| m.per_key),
            capture: cfg.capture,
            sampler: Default::default(),
            shadow: cfg.shadow.map(|s| s.role),
            hosts: cfg.hosts,
            endpoints,
            keys,
            models,
            model_order,
            providers,
        })
    }

    /// Looks up a presented key; `now_s` checks expiry.
    pub fn authenticate_at(
        &self,
        presented: Option<&str>,
        now_s: u64,
    ) -> Result<&KeyEntry, GatewayError> {
        self.authenticate_digest_at(presented.map(crate::auth::digest).as_ref(), now_s)
    }

    /// Looks up a presented key by its SHA-256 (computed once per request
    /// by the caller, who keeps it for the body phase).
    pub fn authenticate_digest_at(
        &self,
        digest: Option<&[u8; 32]>,
        now_s: u64,
    ) -> Result<&KeyEntry, GatewayError> {
        let k = self.authenticate_digest(digest)?;
        if k.expires_at.is_some_and(|t| now_s >= t) {
            return Err(GatewayError::invalid_api_key("This API key has expired."));
        }
        Ok(k)
    }

    /// Looks up a presented key.
    pub fn authenticate(&self, presented: Option<&str>) -> Result<&KeyEntry, GatewayError> {
        self.authenticate_digest(presented.map(crate::auth::digest).as_ref())
    }

    fn authenticate_digest(&self, digest: Option<&[u8; 32]>) -> Result<&KeyEntry, GatewayError> {
        let Some(digest) = digest else {
            return Err(GatewayError::invalid_api_key(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            ));
        };
        match self.keys.get(digest) {
            None => Err(GatewayError::invalid_api_key("Incorrect API key provided.")),
            Some(k) if k.status == KeyStatus::Disabled => Err(GatewayError::invalid_api_key(
                "This API key has been disabled.",
            )),
            Some(k) if k.status == KeyStatus::OverBudget => Err(GatewayError::new(
                429,
                crate::error::ErrorKind::QuotaExceeded,
                "You exceeded the budget of this API key. Ask its owner to raise the budget.",
            )),
            Some(k) => Ok(k),
        }
    }

    /// A key by the digest it was authenticated with (active ones only).
    pub fn key_by_digest(&self, digest: &[u8; 32]) -> Option<&KeyEntry> {
        self.keys
            .get(digest)
            .filter(|k| k.status == KeyStatus::Active)
    }

    /// The model a key asked for, if it exists and the key may use it.
    pub fn model_for(&self, key: &KeyEntry, name: &str) -> Result<&ModelEntry, GatewayError> {
        match self.models.get(name) {
            Some(m) if key.may_use(name) && !m.targets.is_empty() => Ok(m),
            _ => Err(GatewayError::model_not_found(name)),
        }
    }

    /// A configured passthrough endpoint for a request: `Ok(None)` when no
    /// endpoint has the path, `Err` (405) when one has it but not the
    /// method.
    #[allow(clippy::type_complexity)]
    pub fn passthrough_endpoint(
        &self,
        method: &str,
        path: &str,
    ) -> Result<Option<(&sluice_config::PassthroughEndpoint, usize)>, GatewayError> {
        if let Some((e, p)) = self.endpoints.iter().find(|(e, _)| e.matches(method, path)) {
            return Ok(Some((e, *p)));
        }
        if self.endpoints.iter().any(|(e, _)| e.matches_path(path)) {
            return Err(GatewayError::method_not_allowed(method, path));
        }
        Ok(None)
    }

    /// The endpoint families a model serves: answers and token counts
    /// always (translated or estimated), embeddings when every target's
    /// provider has an embeddings endpoint.
    pub fn families(&self, name: &str) -> Vec<crate::api::Family> {
        use crate::api::Family;
        let mut out = vec![Family::Generate, Family::CountTokens];
        let embeds = self.models.get(name).is_some_and(|m| {
            !m.targets.is_empty()
                && m.targets.iter().all(|t| {
                    self.provider(t.provider).is_some_and(|p| {
                        p.backend.embeddings().is_some()
                            || p.also.iter().any(|b| b.embeddings().is_some())
                    })
                })
        });
        if embeds {
            out.push(Family::Embeddings);
        }
        out
    }

    /// Whether `name` is a configured model (whoever may use it).
    pub fn is_model(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    /// The models a key may use, in configuration order.
    pub fn models_for<'a>(&'a self, key: &'a KeyEntry) -> impl Iterator<Item = &'a str> + 'a {
        self.model_order
            .iter()
            .map(String::as_str)
            .filter(move |m| key.may_use(m))
    }

    pub fn provider(&self, index: usize) -> Option<&ProviderEntry> {
        self.providers.get(index).map(|p| &**p)
    }

    /// A provider, shared (a resilient request's plan holds its targets').
    pub fn provider_rc(&self, index: usize) -> Option<Rc<ProviderEntry>> {
        self.providers.get(index).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn config() -> PluginConfig {
        serde_json::from_value(serde_json::json!({
            "version": "v1",
            "keys": [
                {"id": "k-all", "sha256": sluice_config::hash_key("sk-all")},
                {"id": "k-one", "sha256": sluice_config::hash_key("sk-one"), "models": ["a"]},
                {"id": "k-off", "sha256": sluice_config::hash_key("sk-off"), "status": "disabled"}
            ],
            "providers": [
                {"name": "p1", "kind": "openai", "cluster": "c1", "host": "h1",
                 "api_key_env": "P1_KEY"},
                {"name": "p2", "kind": "openai", "cluster": "c2", "host": "h2",
                 "base_path": "/api/v1/", "auth": {"type": "header", "name": "Api-Key"},
                 "api_key_env": "P2_KEY"}
            ],
            "models": [
                {"name": "a", "targets": [{"provider": "p1", "model": "a-up"}]},
                {"name": "b", "targets": [{"provider": "p1", "model": "b1", "weight": 3},
                                          {"provider": "p2", "model": "b2"}]}
            ]
        }))
        .unwrap()
    }

    fn gw() -> Gateway {
        Gateway::new(config(), |v| (v == "P2_KEY").then(|| "secret2".to_string())).unwrap()
    }

    #[test]
    fn authenticates_by_hash_and_status() {
        let g = gw();
        assert_eq!(g.authenticate(Some("sk-all")).unwrap().id, "k-all");
        assert_eq!(g.authenticate(Some("sk-nope")).unwrap_err().status, 401);
        assert_eq!(g.authenticate(None).unwrap_err().status, 401);
        let off = g.authenticate(Some("sk-off")).unwrap_err();
        assert!(off.message.contains("disabled"));
    }

    #[test]
    fn model_access_is_per_key() {
        let g = gw();
        let one = g.authenticate(Some("sk-one")).unwrap();
        let all = g.authenticate(Some("sk-all")).unwrap();
        assert!(g.model_for(one, "a").is_ok());
        assert_eq!(g.model_for(one, "b").unwrap_err().status, 404);
        assert_eq!(g.model_for(all, "zzz").unwrap_err().status, 404);
        assert_eq!(g.models_for(one).collect::<Vec<_>>(), vec!["a"]);
        assert_eq!(g.models_for(all).collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn credentials_resolve_from_env() {
        let g = gw();
        assert!(matches!(
            &g.provider(0).unwrap().credential,
            Credential::Missing { env } if env == "P1_KEY"
        ));
        match &g.provider(1).unwrap().credential {
            Credential::Header { name, value } => {
                assert_eq!((name.as_str(), value.as_str()), ("api-key", "secret2"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(g.provider(1).unwrap().base_path, "/api/v1");
    }

    #[test]
    fn weighted_targets() {
        let g = gw();
        let all = g.authenticate(Some("sk-all")).unwrap();
        let m = g.model_for(all, "b").unwrap();
        let ups: Vec<&str> = (0..4).map(|_| m.pick().upstream_model.as_str()).collect();
        assert_eq!(ups, vec!["b1", "b1", "b2", "b1"]);
    }

    #[test]
    fn invalid_config_is_rejected() {
        let mut c = config();
        c.models[0].targets[0].provider = "ghost".into();
        assert!(Gateway::new(c, |_| None).is_err());
    }
}
