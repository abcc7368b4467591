use std::collections::HashSet;
use std::fmt;

use crate::schema::*;

/// One problem in a configuration, with the path of the offending field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Header names the filter manages itself; a provider may not use them for
/// its credential.
const RESERVED_HEADERS: &[&str] = &[
    ":path",
    ":authority",
    ":method",
    "content-length",
    "x-sluice-cluster",
];

impl PluginConfig {
    /// Checks references and bounds. Returns every error found.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errs = Vec::new();

        let mut provider_names = HashSet::new();
        for (i, p) in self.providers.iter().enumerate() {
            let at = format!("providers[{i}]");
            if p.name.is_empty() {
                errs.push(ConfigError::new(format!("{at}.name"), "must not be empty"));
            } else if !provider_names.insert(p.name.as_str()) {
                errs.push(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate provider '{}'", p.name),
                ));
            }
            match &p.base_url {
                Some(url) => {
                    match crate::BaseUrl::parse(url) {
                        Err(e) => errs.push(ConfigError::new(format!("{at}.base_url"), e)),
                        Ok(u) if !u.path.is_empty() && p.base_path.is_some() => {
                            errs.push(ConfigError::new(
                                format!("{at}.base_path"),
                                "the path is the base_url's: set one, not both",
                            ))
                        }
                        Ok(_) => {}
                    }
                    if !p.cluster.is_empty() {
                        errs.push(ConfigError::new(
                            format!("{at}.cluster"),
                            "follows from base_url (the control plane pushes the cluster): leave it unset",
                        ));
                    }
                }
                None if p.cluster.is_empty() => errs.push(ConfigError::new(
                    format!("{at}.cluster"),
                    "must not be empty (or give the provider a base_url)",
                )),
                None => {}
            }
            if !valid_header_value(&p.cluster) {
                errs.push(ConfigError::new(
                    format!("{at}.cluster"),
                    "invalid characters",
                ));
            }
            if (p.host.is_empty() && p.base_url.is_none()) || !valid_header_value(&p.host) {
                errs.push(ConfigError::new(
                    format!("{at}.host"),
                    "must be a non-empty authority",
                ));
            }
            let base = p.base_path.as_deref().unwrap_or("/");
            if !base.starts_with('/') || base.contains(['?', '#']) {
                errs.push(ConfigError::new(
                    format!("{at}.base_path"),
                    "must start with '/' and hold no query or fragment",
                ));
            }
            match &p.auth {
                ProviderAuth::Header { name } => {
                    let lower = name.to_ascii_lowercase();
                    if name.is_empty()
                        || !name.bytes().all(is_token_byte)
                        || RESERVED_HEADERS.contains(&lower.as_str())
                    {
                        errs.push(ConfigError::new(
                            format!("{at}.auth.name"),
                            "must be a valid, non-reserved header name",
                        ));
                    }
                    if p.api_key_env.is_none() && p.api_key_secret.is_none() {
                        errs.push(ConfigError::new(
                            format!("{at}.api_key_env"),
                            "api_key_env or api_key_secret is required when auth sends a credential",
                        ));
                    }
                }
                ProviderAuth::Bearer => {
                    if p.api_key_env.is_none() && p.api_key_secret.is_none() {
                        errs.push(ConfigError::new(
                            format!("{at}.api_key_env"),
                            "api_key_env or api_key_secret is required when auth sends a credential",
                        ));
                    }
                }
                ProviderAuth::None => {}
            }
            if p.api_key_env.is_some() && p.api_key_secret.is_some() {
                errs.push(ConfigError::new(
                    format!("{at}.api_key_secret"),
                    "excludes api_key_env: the key comes from Envoy or from the VM, not both",
                ));
            }
            if let Some(name) = &p.api_key_secret {
                if name.is_empty() || name.len() > 256 || name.bytes().any(|b| b.is_ascii_control())
                {
                    errs.push(ConfigError::new(
                        format!("{at}.api_key_secret"),
                        "must be an SDS secret name",
                    ));
                }
            }
            if let Some(env) = &p.api_key_env {
                if env.is_empty() || !env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                    errs.push(ConfigError::new(
                        format!("{at}.api_key_env"),
                        "must be an environment variable name",
                    ));
                }
            }
        }

        let mut model_names = HashSet::new();
        for (i, h) in self.hosts.iter().enumerate() {
            let name = h.strip_prefix("*.").unwrap_or(h);
            let ok = !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                errs.push(ConfigError::new(
                    format!("hosts[{i}]"),
                    "must be a host name, or *. and a domain",
                ));
            }
        }
        for (i, m) in self.models.iter().enumerate() {
            let at = format!("models[{i}]");
            if m.name.is_empty() {
                errs.push(ConfigError::new(format!("{at}.name"), "must not be empty"));
            } else if !model_names.insert(m.name.as_str()) {
                errs.push(ConfigError::new(
                    format!("{at}.name"),
                    format!("duplicate model '{}'", m.name),
                ));
            }
            if m.targets.is_empty() {
                errs.push(ConfigError::new(
                    format!("{at}.targets"),
                    "needs at least one target",
                ));
            }
            for (j, t) in m.targets.iter().enumerate() {
                let tat = format!("{at}.targets[{j}]");
                if !provider_names.contains(t.provider.as_str()) {
                    errs.push(ConfigError::new(
                        format!("{tat}.provider"),
                        format!("unknown provider '{}'", t.provider),
                    ));
                }
                if t.model.is_empty() {
                    errs.push(ConfigError::new(
                        format!("{tat}.model"),
                        "must not be empty",
                    ));
                }
                if t.weight == 0 {
                    errs.push(ConfigError::new(format!("{tat}.weight"), "must be > 0"));
                }
                let by_url = self
                    .providers
                    .iter()
                    .find(|p| p.name == t.provider)
                    .is_none_or(|p| p.base_url.is_some());
                if m.resilient() && !by_url {
                    errs.push(ConfigError::new(
                        format!("{tat}.provider"),
                        format!(
                            "'{}' has no base_url: a model with a resilience policy (retry, \
                             timeouts, cooldown or fallback priorities) is routed by Envoy among \
                             endpoints the control plane pushes, so each of its providers needs one",
                            t.provider
                        ),
                    ));
                }
            }
            validate_resilience(m, &at, &mut errs);
        }

        let mut key_ids = HashSet::new();
        let mut key_hashes = HashSet::new();
        for (i, k) in self.keys.iter().enumerate() {
            let at = format!("keys[{i}]");
            if k.id.is_empty() {
                errs.push(ConfigError::new(format!("{at}.id"), "must not be empty"));
            } else if !key_ids.insert(k.id.as_str()) {
                errs.push(ConfigError::new(
                    format!("{at}.id"),
                    format!("duplicate key id '{}'", k.id),
                ));
            }
            let hash_ok = k.sha256.len() == 64
                && k.sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hash_ok {
                errs.push(ConfigError::new(
                    format!("{at}.sha256"),
                    "must be 64 lowercase hex characters (SHA-256 of the key)",
                ));
            } else if !key_hashes.insert(k.sha256.as_str()) {
                errs.push(ConfigError::new(
                    format!("{at}.sha256"),
                    "duplicate key hash",
                ));
            }
            if let Some(b) = &k.budget {
                if !(b.remaining_usd.is_finite() && b.remaining_usd >= 0.0) {
                    errs.push(ConfigError::new(
                        format!("{at}.budget.remaining_usd"),
                        "must be a number >= 0",
                    ));
                }
            }
            for (j, m) in k.models.iter().enumerate() {
                if !model_names.contains(m.as_str()) {
                    errs.push(ConfigError::new(
                        format!("{at}.models[{j}]"),
                        format!("unknown model '{m}'"),
                    ));
                }
            }
        }

        let mut endpoint_paths = HashSet::new();
        for (i, e) in self.endpoints.iter().enumerate() {
            let at = format!("endpoints[{i}]");
            let path = e.path.strip_suffix("/*").unwrap_or(&e.path);
            let clean = path.len() > 4
                && path.starts_with("/v1/")
                && path
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b))
                && !path.contains("//")
                && !path.contains("..");
            if !clean {
                errs.push(ConfigError::new(
                    format!("{at}.path"),
                    "must be a plain path under /v1/ (a prefix ends in /*)",
                ));
            }
            if !endpoint_paths.insert(e.path.as_str()) {
                errs.push(ConfigError::new(
                    format!("{at}.path"),
                    format!("duplicate endpoint '{}'", e.path),
                ));
            }
            if !provider_names.contains(e.provider.as_str()) {
                errs.push(ConfigError::new(
                    format!("{at}.provider"),
                    format!("unknown provider '{}'", e.provider),
                ));
            }
            for (j, m) in e.methods.iter().enumerate() {
                if !["GET", "POST", "DELETE", "PUT", "PATCH"].contains(&m.as_str()) {
                    errs.push(ConfigError::new(
                        format!("{at}.methods[{j}]"),
                        "must be GET, POST, DELETE, PUT or PATCH",
                    ));
                }
            }
        }

        if let Some(g) = &self.guardrails {
            let mut names = HashSet::new();
            for (i, r) in g.rules.iter().enumerate() {
                let at = format!("guardrails.rules[{i}]");
                if r.name.is_empty() || !names.insert(r.name.as_str()) {
                    errs.push(ConfigError::new(
                        format!("{at}.name"),
                        "must be non-empty and unique",
                    ));
                }
                if let Detector::Regex(p) = &r.detector {
                    if p.is_empty() || p.len() > 4096 {
                        errs.push(ConfigError::new(
                            format!("{at}.detector.regex"),
                            "must be 1 to 4096 characters",
                        ));
                    }
                }
            }
        }

        if let Some(c) = &self.capture {
            if !(0.0..=1.0).contains(&c.sample_rate) {
                errs.push(ConfigError::new(
                    "capture.sample_rate",
                    "must be between 0 and 1",
                ));
            }
            if !(1024..=16 * 1024 * 1024).contains(&c.max_record_bytes) {
                errs.push(ConfigError::new(
                    "capture.max_record_bytes",
                    "must be between 1 KiB and 16 MiB",
                ));
            }
        }

        let l = &self.limits;
        for (name, v, min) in [
            ("max_request_body_bytes", l.max_request_body_bytes, 1024),
            ("max_response_body_bytes", l.max_response_body_bytes, 1024),
            ("max_sse_event_bytes", l.max_sse_event_bytes, 1024),
        ] {
            if v < min || v > 1 << 30 {
                errs.push(ConfigError::new(
                    format!("limits.{name}"),
                    format!("must be between {min} and {} bytes", 1u64 << 30),
                ));
            }
        }

        if errs.is_empty() {
            Ok(())
        } else {
            Err(errs)
        }
    }
}

/// Bounds of a model's retry policy, timeouts and cooldown.
fn validate_resilience(m: &crate::Model, at: &str, errs: &mut Vec<ConfigError>) {
    if let Some(r) = &m.retry {
        if !(1..=10).contains(&r.attempts) {
            errs.push(ConfigError::new(
                format!("{at}.retry.attempts"),
                "must be 1 to 10 (the first attempt included)",
            ));
        }
        if r.attempts > 1 && r.on.is_empty() {
            errs.push(ConfigError::new(
                format!("{at}.retry.on"),
                "must name at least one failure to retry",
            ));
        }
    }
    if let Some(t) = &m.timeouts {
        const DAY_MS: u64 = 24 * 3600 * 1000;
        for (name, v) in [("first_byte_ms", t.first_byte_ms), ("total_ms", t.total_ms)] {
            if v.is_some_and(|v| v == 0 || v > DAY_MS) {
                errs.push(ConfigError::new(
                    format!("{at}.timeouts.{name}"),
                    "must be 1 ms to 24 h",
                ));
            }
        }
        if let (Some(f), Some(total)) = (t.first_byte_ms, t.total_ms) {
            if f > total {
                errs.push(ConfigError::new(
                    format!("{at}.timeouts.first_byte_ms"),
                    "must not exceed total_ms",
                ));
            }
        }
    }
    if let Some(c) = &m.cooldown {
        if !(1..=1000).contains(&c.consecutive_failures) {
            errs.push(ConfigError::new(
                format!("{at}.cooldown.consecutive_failures"),
                "must be 1 to 1000",
            ));
        }
        if !(1..=3600).contains(&c.seconds) {
            errs.push(ConfigError::new(
                format!("{at}.cooldown.seconds"),
                "must be 1 to 3600",
            ));
        }
    }
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn valid_header_value(s: &str) -> bool {
    s.bytes().all(|b| (0x21..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    #[test]
    fn hosts_match_exactly_or_by_subdomain_and_ignore_ports() {
        let hosts = vec![
            "llm.example.com".to_string(),
            "*.ai.example.org".to_string(),
        ];
        for yes in [
            "llm.example.com",
            "LLM.example.com:8080",
            "a.ai.example.org",
            "x.y.ai.example.org:443",
        ] {
            assert!(crate::host_matches(&hosts, yes), "{yes}");
        }
        for no in [
            "example.com",
            "ai.example.org",
            "xai.example.org",
            "llm.example.com.evil",
            "",
            ":80",
            "[::1]:80",
        ] {
            assert!(!crate::host_matches(&hosts, no), "{no}");
        }
        assert!(crate::host_matches(&[], "anything"));
        let mut c = sample();
        c.hosts = vec!["ok.example".into(), "bad host".into(), "*.".into()];
        let errs = c.validate().unwrap_err();
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["hosts[1]", "hosts[2]"]);
    }

    use super::*;

    fn sample() -> PluginConfig {
        serde_json::from_value(serde_json::json!({
            "keys": [{"id": "k1", "name": "demo", "sha256": crate::hash_key("sk-demo")}],
            "providers": [{"name": "mock", "kind": "openai", "cluster": "mock",
                           "host": "mock.local", "auth": {"type": "none"}}],
            "models": [{"name": "m", "targets": [{"provider": "mock", "model": "up"}]}]
        }))
        .unwrap()
    }

    fn errors_of(v: serde_json::Value) -> Vec<String> {
        let c: PluginConfig = serde_json::from_value(v).unwrap();
        match c.validate() {
            Ok(()) => Vec::new(),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn providers_by_url_derive_cluster_host_and_path() {
        let p: crate::Provider = serde_json::from_value(serde_json::json!({
            "name": "vllm/a", "kind": "openai", "base_url": "http://10.0.0.5:8000/v1/"
        }))
        .unwrap();
        assert_eq!(p.authority(), "10.0.0.5:8000");
        assert_eq!(p.path_prefix().as_deref(), Some("/v1"));
        assert!(p.cluster_name().starts_with("sluice_provider_vllm_a_"));
        let q: crate::Provider = serde_json::from_value(serde_json::json!({
            "name": "oa", "kind": "openai", "base_url": "https://api.openai.com"
        }))
        .unwrap();
        assert_eq!(
            (q.authority().as_str(), q.path_prefix()),
            ("api.openai.com", None)
        );
        assert_eq!(q.cluster_name(), "sluice_provider_oa");
        let u = crate::BaseUrl::parse("https://[::1]:8443/x").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("::1", 8443, true));
        assert_eq!(u.authority(), "[::1]:8443");
        for bad in [
            "ftp://x",
            "http://",
            "http://h:0",
            "http://h:99999",
            "http://u@h",
            "http://h/?q",
            "https://h h",
        ] {
            assert!(crate::BaseUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn resilient_models_need_providers_by_url_and_sane_bounds() {
        let cfg = |model: serde_json::Value| {
            serde_json::json!({
                "providers": [
                    {"name": "url", "kind": "openai", "base_url": "http://127.0.0.1:1/v1",
                     "auth": {"type": "none"}},
                    {"name": "static", "kind": "openai", "cluster": "c", "host": "h",
                     "auth": {"type": "none"}}],
                "models": [model]
            })
        };
        let ok = errors_of(cfg(serde_json::json!({"name": "m", "targets": [
            {"provider": "url", "model": "a"}, {"provider": "url", "model": "b", "priority": 1}],
            "retry": {"attempts": 3, "on": ["rate_limited", "timeout"]},
            "timeouts": {"first_byte_ms": 1000, "total_ms": 5000},
            "cooldown": {"consecutive_failures": 3, "seconds": 10}})));
        assert!(ok.is_empty(), "{ok:?}");
        let e = errors_of(cfg(serde_json::json!({"name": "m", "targets": [
            {"provider": "static", "model": "a"}, {"provider": "url", "model": "b", "priority": 1}]})));
        assert!(e.len() == 1 && e[0].contains("has no base_url"), "{e:?}");
        // The same provider without a policy is fine.
        assert!(errors_of(cfg(serde_json::json!({"name": "m", "targets": [
            {"provider": "static", "model": "a"}]})))
        .is_empty());
        let e = errors_of(cfg(serde_json::json!({"name": "m", "targets": [
            {"provider": "url", "model": "a"}],
            "retry": {"attempts": 11, "on": []},
            "timeouts": {"first_byte_ms": 9000, "total_ms": 5000},
            "cooldown": {"consecutive_failures": 0, "seconds": 0}})));
        for want in [
            "retry.attempts",
            "timeouts.first_byte_ms",
            "cooldown.consecutive_failures",
            "cooldown.seconds",
            "retry.on",
        ] {
            assert!(e.iter().any(|x| x.contains(want)), "{want}: {e:?}");
        }
        let e = errors_of(serde_json::json!({"providers": [
            {"name": "p", "kind": "openai", "base_url": "http://h/v1", "base_path": "/v2",
             "cluster": "c", "auth": {"type": "none"}}]}));
        assert!(
            e.iter().any(|x| x.contains("base_path")) && e.iter().any(|x| x.contains("cluster")),
            "{e:?}"
        );
    }

    #[test]
    fn valid_sample_passes_with_defaults() {
        let c = sample();
        assert!(c.validate().is_ok());
        assert_eq!(c.providers[0].base_path, None);
        assert_eq!(c.models[0].targets[0].weight, 1);
        assert_eq!(c.keys[0].status, KeyStatus::Active);
        assert_eq!(c.limits, Limits::default());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r = PluginConfig::from_json(br#"{"keys":[],"providerz":[]}"#);
        let e = r.unwrap_err();
        assert!(e[0].message.contains("unknown field"), "{e:?}");
    }

    #[test]
    fn every_error_is_reported() {
        let mut c = sample();
        c.models[0].targets[0].provider = "nope".into();
        c.models[0].targets[0].weight = 0;
        c.keys[0].sha256 = "ABC".into();
        c.keys[0].models = vec!["ghost".into()];
        c.providers[0].base_path = Some("v1".into());
        let errs = c.validate().unwrap_err();
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "providers[0].base_path",
                "models[0].targets[0].provider",
                "models[0].targets[0].weight",
                "keys[0].sha256",
                "keys[0].models[0]"
            ]
        );
    }

    #[test]
    fn credentialed_provider_needs_env_and_sane_header() {
        let mut c = sample();
        c.providers[0].auth = ProviderAuth::Header {
            name: "content-length".into(),
        };
        let errs = c.validate().unwrap_err();
        assert!(errs.iter().any(|e| e.path == "providers[0].auth.name"));
        assert!(errs.iter().any(|e| e.path == "providers[0].api_key_env"));
    }

    #[test]
    fn duplicates_are_rejected() {
        let mut c = sample();
        c.keys.push(c.keys[0].clone());
        c.models.push(c.models[0].clone());
        c.providers.push(c.providers[0].clone());
        let errs = c.validate().unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:?}");
    }

    #[test]
    fn hash_key_is_sha256_hex() {
        assert_eq!(
            crate::hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn round_trips_through_json() {
        let c = sample();
        let s = serde_json::to_vec(&c).unwrap();
        assert_eq!(PluginConfig::from_json(&s).unwrap(), c);
    }
}
