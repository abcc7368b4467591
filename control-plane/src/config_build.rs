//! Builds the filter configuration from the store. The result is validated
//! with the shared schema before it can become a version: an invalid config
//! never reaches Envoy.

use rusqlite::{Connection, OptionalExtension};
use sluice_config::{
    KeyBudget, KeyLimits, KeyStatus, Model, PluginConfig, Provider, Target, TokenPrice, VirtualKey,
};

use crate::store::{self, now_s};

pub fn build(c: &Connection, now: i64) -> Result<PluginConfig, String> {
    let prices = store::list_prices(c).map_err(|e| e.to_string())?;
    let mut providers: Vec<Provider> = Vec::new();
    {
        let mut st = c
            .prepare("SELECT spec FROM providers ORDER BY name")
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| e.to_string())?;
        for spec in rows {
            let spec = spec.map_err(|e| e.to_string())?;
            providers.push(serde_json::from_str(&spec).map_err(|e| e.to_string())?);
        }
        // Keys the control plane serves over SDS are injected by Envoy
        // upstream: the filter is told the secret's name, never its value.
        let injected: Vec<String> = store::get_setting(c, "provider_secrets")?.unwrap_or_default();
        for p in &mut providers {
            if p.api_key_env.as_ref().is_some_and(|e| injected.contains(e)) {
                p.api_key_secret = p.api_key_env.take();
            }
        }
    }
    let mut models = Vec::new();
    {
        let mut st = c
            .prepare("SELECT name, targets FROM models ORDER BY position, name")
            .map_err(|e| e.to_string())?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| e.to_string())?;
        for row in rows {
            let (name, targets) = row.map_err(|e| e.to_string())?;
            let mut targets: Vec<Target> =
                serde_json::from_str(&targets).map_err(|e| e.to_string())?;
            // Each target carries its price for the filter's budget precheck.
            for t in &mut targets {
                t.price = crate::pricing::lookup(&prices, &t.model).map(|p| TokenPrice {
                    input: p.input_per_token,
                    output: p.output_per_token,
                    cached_input: p.cached_input_per_token,
                    cache_write_input: p.cache_write_input_per_token,
                });
            }
            models.push(Model { name, targets });
        }
    }
    let mut keys = Vec::new();
    for k in store::list_keys(c).map_err(|e| e.to_string())? {
        // Revoked and expired keys are not pushed at all.
        if k.status == "revoked" || k.expires_at.is_some_and(|t| t <= now) {
            continue;
        }
        let status = match k.status.as_str() {
            "disabled" => KeyStatus::Disabled,
            "over_budget" => KeyStatus::OverBudget,
            _ => KeyStatus::Active,
        };
        let budget = match (k.budget_usd, k.budget_base_usd) {
            (Some(_), Some(base)) => Some(KeyBudget {
                remaining_usd: (base.max(0.0) * 1e6).floor() / 1e6,
                epoch: k.budget_epoch.max(0) as u64,
            }),
            _ => None,
        };
        let limit = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
        let limits =
            (k.rpm.is_some() || k.tpm.is_some() || k.concurrent_streams.is_some()).then(|| {
                KeyLimits {
                    rpm: limit(k.rpm),
                    tpm: limit(k.tpm),
                    concurrent_streams: limit(k.concurrent_streams),
                }
            });
        keys.push(VirtualKey {
            limits,
            budget,
            id: k.id,
            name: k.name,
            sha256: k.sha256,
            // Allowed models that no longer exist are dropped here rather
            // than making the whole configuration invalid.
            models: k
                .models
                .into_iter()
                .filter(|m| models.iter().any(|x: &Model| &x.name == m))
                .collect(),
            status,
            expires_at: k.expires_at.map(|t| t as u64),
        });
    }
    let guardrails = c
        .query_row("SELECT spec FROM guardrail_policy WHERE id = 1", [], |r| {
            r.get::<_, String>(0)
        })
        .optional()
        .map_err(|e| e.to_string())?
        .map(|s| serde_json::from_str::<sluice_config::Guardrails>(&s).map_err(|e| e.to_string()))
        .transpose()?;
    let cfg = PluginConfig {
        version: String::new(),
        keys,
        providers,
        models,
        limits: Default::default(),
        guardrails,
        metrics: None,
        capture: store::get_setting(c, "capture")?,
        shadow: store::get_setting(c, "shadow")?,
        hosts: store::get_setting(c, "hosts")?.unwrap_or_default(),
    };
    // Exactly what the filter's on_configure does, so nothing it would
    // reject (a bad guardrail regex, say) is ever pushed.
    let join = |errs: Vec<sluice_config::ConfigError>| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    };
    sluice_core::gateway::Gateway::new(cfg.clone(), |_| None).map_err(join)?;
    Ok(cfg)
}

/// Builds, and records a new version when the content changed. Returns the
/// current (version, config JSON).
pub fn publish(c: &Connection) -> Result<(i64, String), String> {
    let now = now_s();
    let cfg = build(c, now)?;
    let body = serde_json::to_string(&cfg).map_err(|e| e.to_string())?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
    let last: Option<(i64, String)> = c
        .query_row(
            "SELECT version, sha256 FROM config_versions ORDER BY version DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .ok();
    let version = match last {
        Some((v, s)) if s == sha => v,
        Some((v, _)) => insert_version(c, v + 1, now, &sha, &body)?,
        None => insert_version(c, 1, now, &sha, &body)?,
    };
    let mut stamped = cfg;
    stamped.version = version.to_string();
    Ok((
        version,
        serde_json::to_string(&stamped).map_err(|e| e.to_string())?,
    ))
}

fn insert_version(c: &Connection, v: i64, now: i64, sha: &str, body: &str) -> Result<i64, String> {
    c.execute(
        "INSERT INTO config_versions (version, created_at, sha256, config) VALUES (?1, ?2, ?3, ?4)",
        rusqlite::params![v, now, sha, body],
    )
    .map_err(|e| e.to_string())?;
    Ok(v)
}
