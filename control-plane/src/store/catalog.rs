//! What the gateway routes to: providers, public models and their targets,
//! prices, and the guardrail policy.

use serde::{Deserialize, Serialize};
use sluice_config::{Guardrails, Model, Provider};

use super::{Db, DbResult};
use crate::args;

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Price {
    pub model: String,
    pub input_per_token: f64,
    pub output_per_token: f64,
    pub cached_input_per_token: Option<f64>,
    /// Unset: input × `sluice_config::CACHE_WRITE_MARKUP`.
    #[serde(default)]
    pub cache_write_input_per_token: Option<f64>,
    pub source: String,
}

pub fn list_prices(c: &Db) -> DbResult<Vec<Price>> {
    c.query(
        "SELECT model, input_per_token, output_per_token, cached_input_per_token, source,
           cache_write_input_per_token
         FROM prices ORDER BY model",
        args![],
    )?
    .iter()
    .map(|r| {
        Ok(Price {
            model: r.get(0)?,
            input_per_token: r.get(1)?,
            output_per_token: r.get(2)?,
            cached_input_per_token: r.get(3)?,
            source: r.get(4)?,
            cache_write_input_per_token: r.get(5)?,
        })
    })
    .collect()
}

pub fn upsert_price(c: &Db, p: &Price) -> DbResult<()> {
    c.execute(
        "INSERT INTO prices (model, input_per_token, output_per_token, cached_input_per_token, source,
           cache_write_input_per_token)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(model) DO UPDATE SET input_per_token = excluded.input_per_token,
           output_per_token = excluded.output_per_token,
           cached_input_per_token = excluded.cached_input_per_token, source = excluded.source,
           cache_write_input_per_token = excluded.cache_write_input_per_token",
        args![
            p.model,
            p.input_per_token,
            p.output_per_token,
            p.cached_input_per_token,
            p.source,
            p.cache_write_input_per_token
        ],
    )?;
    Ok(())
}

/// Every provider spec, by name.
pub fn list_providers(c: &Db) -> Result<Vec<Provider>, String> {
    let mut out = Vec::new();
    for r in c.query("SELECT spec FROM providers ORDER BY name", args![])? {
        out.push(serde_json::from_str(&r.get::<String>(0)?).map_err(text)?);
    }
    Ok(out)
}

/// Adds or replaces a provider (by its name).
pub fn put_provider(c: &Db, p: &Provider) -> Result<(), String> {
    let spec = serde_json::to_string(p).map_err(text)?;
    c.execute(
        "INSERT INTO providers (name, spec) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
        args![p.name, spec],
    )
    .map_err(text)?;
    Ok(())
}

pub fn delete_provider(c: &Db, name: &str) -> DbResult<()> {
    c.execute("DELETE FROM providers WHERE name = ?1", args![name])?;
    Ok(())
}

/// A model's resilience policy as the `policy` column holds it.
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retry: Option<sluice_config::RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    timeouts: Option<sluice_config::Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cooldown: Option<sluice_config::Cooldown>,
}

/// Every public model, its targets and policy, in configuration order.
pub fn list_models(c: &Db) -> Result<Vec<Model>, String> {
    let rows = c.query(
        "SELECT name, targets, policy FROM models ORDER BY position, name",
        args![],
    )?;
    let mut out = Vec::new();
    for r in rows {
        let (name, targets, policy): (String, String, Option<String>) =
            (r.get(0)?, r.get(1)?, r.get(2)?);
        let policy: Policy = match policy {
            Some(p) => serde_json::from_str(&p).map_err(text)?,
            None => Policy::default(),
        };
        out.push(Model {
            name,
            targets: serde_json::from_str(&targets).map_err(text)?,
            retry: policy.retry,
            timeouts: policy.timeouts,
            cooldown: policy.cooldown,
        });
    }
    Ok(out)
}

/// Adds (last in order) or replaces a model's targets and policy.
pub fn put_model(c: &Db, m: &Model) -> Result<(), String> {
    let targets = serde_json::to_string(&m.targets).map_err(text)?;
    let policy = Policy {
        retry: m.retry.clone(),
        timeouts: m.timeouts,
        cooldown: m.cooldown,
    };
    let policy = (policy.retry.is_some() || policy.timeouts.is_some() || policy.cooldown.is_some())
        .then(|| serde_json::to_string(&policy))
        .transpose()
        .map_err(text)?;
    c.execute(
        "INSERT INTO models (name, position, targets, policy)
         VALUES (?1, (SELECT COALESCE(MAX(position), 0) + 1 FROM models), ?2, ?3)
         ON CONFLICT(name) DO UPDATE SET targets = excluded.targets, policy = excluded.policy",
        args![m.name, targets, policy],
    )
    .map_err(text)?;
    Ok(())
}

pub fn delete_model(c: &Db, name: &str) -> DbResult<()> {
    c.execute("DELETE FROM models WHERE name = ?1", args![name])?;
    Ok(())
}

pub fn model_exists(c: &Db, name: &str) -> DbResult<bool> {
    c.query_one("SELECT COUNT(*) FROM models WHERE name = ?1", args![name])?
        .get::<i64>(0)
        .map(|n| n > 0)
}

pub fn count_models(c: &Db) -> DbResult<i64> {
    c.query_one("SELECT COUNT(*) FROM models", args![])?.get(0)
}

/// The guardrail policy, if one is set.
pub fn get_guardrails(c: &Db) -> Result<Option<Guardrails>, String> {
    c.query_opt("SELECT spec FROM guardrail_policy WHERE id = 1", args![])?
        .map(|r| r.get::<String>(0))
        .transpose()?
        .map(|s| serde_json::from_str(&s).map_err(text))
        .transpose()
}

pub fn put_guardrails(c: &Db, g: &Guardrails) -> Result<(), String> {
    let spec = serde_json::to_string(g).map_err(text)?;
    c.execute(
        "INSERT INTO guardrail_policy (id, spec) VALUES (1, ?1)
         ON CONFLICT(id) DO UPDATE SET spec = excluded.spec",
        args![spec],
    )
    .map_err(text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_models_prices_and_policy_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for (engine, s) in super::super::testing::stores(dir.path()) {
            eprintln!("{engine}");
            let c = s.lock();
            let p: Provider = serde_json::from_value(serde_json::json!({
                "name": "up", "kind": "anthropic", "cluster": "c", "host": "h"
            }))
            .unwrap();
            put_provider(&c, &p).unwrap();
            put_provider(&c, &p).unwrap(); // replaces
            assert_eq!(list_providers(&c).unwrap(), vec![p]);
            let t: sluice_config::Target =
                serde_json::from_value(serde_json::json!({"provider": "up", "model": "m"}))
                    .unwrap();
            put_model(&c, &model("b", &t)).unwrap();
            let mut a = model("a", &t);
            a.retry = Some(sluice_config::RetryPolicy::default());
            a.cooldown = Some(sluice_config::Cooldown {
                consecutive_failures: 2,
                seconds: 5,
            });
            put_model(&c, &a).unwrap();
            // Configuration order is the order added, not the name; the policy
            // comes back as it was put.
            let models = list_models(&c).unwrap();
            let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
            assert_eq!(names, ["b", "a"]);
            assert_eq!(models[1], a);
            assert!(models[0].retry.is_none() && models[0].timeouts.is_none());
            assert!(model_exists(&c, "a").unwrap() && !model_exists(&c, "z").unwrap());
            delete_model(&c, "a").unwrap();
            delete_provider(&c, "up").unwrap();
            assert_eq!(
                (count_models(&c).unwrap(), list_providers(&c).unwrap().len()),
                (1, 0)
            );
            let price = Price {
                model: "m".into(),
                input_per_token: 1e-6,
                output_per_token: 2e-6,
                cached_input_per_token: None,
                cache_write_input_per_token: Some(1.25e-6),
                source: "test".into(),
            };
            upsert_price(&c, &price).unwrap();
            upsert_price(&c, &price).unwrap();
            assert_eq!(list_prices(&c).unwrap(), vec![price]);
            assert_eq!(get_guardrails(&c).unwrap(), None);
            let g: Guardrails = serde_json::from_value(serde_json::json!({"rules": [
                {"name": "e", "detector": "email", "action": "mask"}]}))
            .unwrap();
            put_guardrails(&c, &g).unwrap();
            assert_eq!(get_guardrails(&c).unwrap(), Some(g));
        }
    }

    fn model(name: &str, t: &sluice_config::Target) -> Model {
        Model {
            name: name.into(),
            targets: vec![t.clone()],
            retry: None,
            timeouts: None,
            cooldown: None,
        }
    }
}
