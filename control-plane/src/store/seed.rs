//! Seeding an empty store from a configuration file.

use std::path::Path;

use super::{
    count_keys, count_models, insert_key, now_s, put_guardrails, put_model, put_provider,
    put_setting, KeyRow, Store,
};

/// Fills an empty store from a plugin configuration file (`serve --seed`):
/// providers, models, keys (hashes as given), guardrails and settings. A
/// store that has keys or models is left alone.
pub fn seed(st: &Store, path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let cfg = sluice_config::PluginConfig::from_json(&bytes).map_err(|errs| {
        errs.iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let c = st.lock();
    c.transaction(|tx| {
        // Replicas starting together on one Postgres: one seeds, the
        // others then find the store filled.
        super::lock_publishing(tx)?;
        let n = count_keys(tx).map_err(|e| e.to_string())?;
        let m = count_models(tx).map_err(|e| e.to_string())?;
        if n + m > 0 {
            return Ok(()); // only an empty database is seeded
        }
        seed_in(tx, &cfg)
    })
}

fn seed_in(tx: &super::Db, cfg: &sluice_config::PluginConfig) -> Result<(), String> {
    for p in &cfg.providers {
        put_provider(tx, p)?;
    }
    // Added in order: the configuration's order of models is kept.
    for mo in &cfg.models {
        put_model(tx, mo)?;
    }
    for k in &cfg.keys {
        insert_key(
            tx,
            &KeyRow {
                id: k.id.clone(),
                sha256: k.sha256.clone(),
                prefix: "(seeded)".into(),
                name: k.name.clone(),
                owner: String::new(),
                models: k.models.clone(),
                // A seeded key keeps the limits its config gave it.
                rpm: k
                    .limits
                    .and_then(|l| l.rpm)
                    .map(|v| v.min(i64::MAX as u64) as i64),
                tpm: k
                    .limits
                    .and_then(|l| l.tpm)
                    .map(|v| v.min(i64::MAX as u64) as i64),
                concurrent_streams: k
                    .limits
                    .and_then(|l| l.concurrent_streams)
                    .map(|v| v.min(i64::MAX as u64) as i64),
                budget_usd: None,
                budget_period: "monthly".into(),
                expires_at: k.expires_at.map(|t| t as i64),
                status: match k.status {
                    sluice_config::KeyStatus::Disabled => "disabled".into(),
                    _ => "active".into(),
                },
                created_at: now_s(),
                budget_epoch: 0,
                budget_base_usd: None,
                budget_period_start: 0,
            },
        )
        .map_err(|e| e.to_string())?;
    }
    if let Some(g) = &cfg.guardrails {
        put_guardrails(tx, g)?;
    }
    put_setting(tx, "capture", cfg.capture.as_ref())?;
    put_setting(tx, "hosts", (!cfg.hosts.is_empty()).then_some(&cfg.hosts))?;
    put_setting(
        tx,
        "endpoints",
        (!cfg.endpoints.is_empty()).then_some(&cfg.endpoints),
    )?;
    put_setting(tx, "shadow", cfg.shadow.as_ref())
}
