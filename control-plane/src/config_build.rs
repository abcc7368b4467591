//! Builds the filter configuration from the store. The result is validated
//! with the shared schema before it can become a version: an invalid config
//! never reaches Envoy.

use sluice_config::{KeyBudget, KeyLimits, KeyStatus, Model, PluginConfig, TokenPrice, VirtualKey};

use crate::store::{self, now_s, Db};

pub fn build(c: &Db, now: i64) -> Result<PluginConfig, String> {
    let prices = store::list_prices(c).map_err(|e| e.to_string())?;
    let mut providers = store::list_providers(c)?;
    // Keys the control plane serves over SDS are injected by Envoy
    // upstream: the filter is told the secret's name, never its value.
    let injected: Vec<String> = store::get_setting(c, "provider_secrets")?.unwrap_or_default();
    for p in &mut providers {
        if p.api_key_env.as_ref().is_some_and(|e| injected.contains(e)) {
            p.api_key_secret = p.api_key_env.take();
        }
    }
    let mut models = Vec::new();
    for mut model in store::list_models(c)? {
        // Each target carries its price for the filter's budget precheck.
        for t in &mut model.targets {
            t.price = crate::pricing::lookup(&prices, &t.model).map(|p| TokenPrice {
                input: p.input_per_token,
                output: p.output_per_token,
                cached_input: p.cached_input_per_token,
                cache_write_input: p.cache_write_input_per_token,
            });
        }
        models.push(model);
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
    let guardrails = store::get_guardrails(c)?;
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
        endpoints: store::get_setting(c, "endpoints")?.unwrap_or_default(),
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
/// current (version, config JSON). Run inside a transaction: on Postgres it
/// holds the publishing lock until commit (`store::lock_publishing`), and
/// replicas building the same content agree on its version.
pub fn publish(c: &Db) -> Result<(i64, String), String> {
    store::lock_publishing(c)?;
    let now = now_s();
    let cfg = build(c, now)?;
    let body = serde_json::to_string(&cfg).map_err(|e| e.to_string())?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(body.as_bytes()));
    let last = store::last_config_version(c);
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

fn insert_version(c: &Db, v: i64, now: i64, sha: &str, body: &str) -> Result<i64, String> {
    store::insert_config_version(c, v, now, sha, body).map_err(|e| e.to_string())?;
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{KeyRow, Store};

    fn key(id: &str, status: &str, expires_at: Option<i64>) -> KeyRow {
        KeyRow {
            id: id.into(),
            sha256: sluice_config::hash_key(id),
            prefix: "p".into(),
            name: id.into(),
            owner: String::new(),
            models: vec!["gpt".into(), "gone".into()],
            rpm: Some(5),
            tpm: None,
            concurrent_streams: None,
            budget_usd: Some(2.0),
            budget_period: "total".into(),
            expires_at,
            status: status.into(),
            created_at: 0,
            budget_epoch: 42,
            budget_base_usd: Some(1.5),
            budget_period_start: 0,
        }
    }

    #[test]
    fn the_store_becomes_a_validated_config_and_versions_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::store::testing::engine_store(dir.path());
        let c = s.lock();
        let (v1, _) = publish(&c).unwrap();
        assert_eq!(publish(&c).unwrap().0, v1, "nothing changed: same version");
        let p: sluice_config::Provider = serde_json::from_value(serde_json::json!({
            "name": "up", "kind": "openai", "cluster": "c", "host": "h",
            "auth": {"type": "none"}
        }))
        .unwrap();
        store::put_provider(&c, &p).unwrap();
        let t: sluice_config::Target =
            serde_json::from_value(serde_json::json!({"provider": "up", "model": "gpt-4o"}))
                .unwrap();
        store::put_model(&c, &model("gpt", t)).unwrap();
        store::upsert_price(
            &c,
            &store::Price {
                model: "gpt-4o".into(),
                input_per_token: 1e-6,
                output_per_token: 2e-6,
                cached_input_per_token: None,
                cache_write_input_per_token: None,
                source: "t".into(),
            },
        )
        .unwrap();
        let now = now_s();
        store::insert_key(&c, &key("live", "active", None)).unwrap();
        store::insert_key(&c, &key("blocked", "over_budget", None)).unwrap();
        store::insert_key(&c, &key("revoked", "revoked", None)).unwrap();
        store::insert_key(&c, &key("expired", "active", Some(now - 1))).unwrap();
        let (v2, json) = publish(&c).unwrap();
        assert!(v2 > v1);
        let cfg: PluginConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(cfg.version, v2.to_string());
        let ids: Vec<&str> = cfg.keys.iter().map(|k| k.id.as_str()).collect();
        // Same creation time: ordered by id.
        assert_eq!(
            ids,
            ["blocked", "live"],
            "revoked and expired keys are not pushed"
        );
        let live = &cfg.keys[1];
        assert_eq!(
            live.models,
            ["gpt"],
            "a deleted model is dropped from the key"
        );
        assert_eq!(
            live.budget.map(|b| (b.remaining_usd, b.epoch)),
            Some((1.5, 42))
        );
        assert_eq!(cfg.keys[0].status, KeyStatus::OverBudget);
        let price = cfg.models[0].targets[0].price.unwrap();
        assert_eq!((price.input, price.output), (1e-6, 2e-6));
        // A store the filter would refuse never becomes a version.
        let bad: sluice_config::Target =
            serde_json::from_value(serde_json::json!({"provider": "nobody", "model": "x"}))
                .unwrap();
        store::put_model(&c, &model("broken", bad)).unwrap();
        assert!(publish(&c).is_err());
        assert_eq!(store::last_config_version(&c).map(|v| v.0), Some(v2));
    }

    /// Two control-plane replicas on one Postgres: a change published by
    /// either is the version the other serves, numbered alike, and replicas
    /// publishing at once never give one number to two configs.
    #[test]
    fn replicas_on_one_postgres_agree_on_versions() {
        let Some(url) = crate::store::testing::postgres_for_test() else {
            return;
        };
        let (a, b) = (
            Store::open_postgres(&url).unwrap(),
            Store::open_postgres(&url).unwrap(),
        );
        let publish_on = |s: &Store| s.lock().transaction(publish).unwrap();
        let (v1, _) = publish_on(&a);
        assert_eq!(publish_on(&b).0, v1, "same content, same version");
        let p: sluice_config::Provider = serde_json::from_value(serde_json::json!({
            "name": "up", "kind": "openai", "cluster": "c", "host": "h",
            "auth": {"type": "none"}
        }))
        .unwrap();
        store::put_provider(&b.lock(), &p).unwrap();
        let (v2, body_b) = publish_on(&b);
        assert_eq!(store::last_config_version(&a.lock()).unwrap().0, v2);
        let (v2a, body_a) = publish_on(&a);
        assert_eq!((v2a, body_a), (v2, body_b), "a follows b's change");
        // Both publish at once, each after its own change: every version
        // number is one config, and the last holds both changes.
        let threads: Vec<_> = [a.clone(), b.clone()]
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                std::thread::spawn(move || {
                    for n in 0..15 {
                        let t: sluice_config::Target = serde_json::from_value(
                            serde_json::json!({"provider": "up", "model": format!("m{i}-{n}")}),
                        )
                        .unwrap();
                        let c = s.lock();
                        c.transaction(|tx| {
                            store::put_model(tx, &model(&format!("r{i}"), t))?;
                            publish(tx)
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let (last, json) = publish_on(&a);
        assert_eq!(publish_on(&b).0, last);
        let cfg: PluginConfig = serde_json::from_str(&json).unwrap();
        // Both replicas' models (in the order the threads happened to add
        // them first).
        let mut names: Vec<&str> = cfg.models.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["r0", "r1"]);
        let c = a.lock();
        let rows = c
            .query(
                "SELECT COUNT(*), COUNT(DISTINCT sha256), MAX(version) - MIN(version) + 1
                 FROM config_versions",
                crate::args![],
            )
            .unwrap();
        let (n, distinct, span): (i64, i64, i64) = (
            rows[0].get(0).unwrap(),
            rows[0].get(1).unwrap(),
            rows[0].get(2).unwrap(),
        );
        assert_eq!(span, n, "versions are consecutive");
        assert_eq!(distinct, n, "one config per version number");
        assert!(n > 30, "{n} versions");
    }

    fn model(name: &str, t: sluice_config::Target) -> Model {
        Model {
            name: name.into(),
            targets: vec![t],
            retry: None,
            timeouts: None,
            cooldown: None,
        }
    }
}
