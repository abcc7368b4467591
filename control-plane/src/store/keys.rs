//! Virtual keys (hashes only) and what a key spent.

use serde::{Deserialize, Serialize};

use super::{now_ms, period_start, Db, DbResult, Row};
use crate::args;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRow {
    pub id: String,
    pub sha256: String,
    pub prefix: String,
    pub name: String,
    pub owner: String,
    pub models: Vec<String>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    /// Streams open at once (per Envoy).
    #[serde(default)]
    pub concurrent_streams: Option<i64>,
    pub budget_usd: Option<f64>,
    pub budget_period: String,
    pub expires_at: Option<i64>,
    pub status: String,
    pub created_at: i64,
    /// Precheck budget: remaining at the start of `budget_epoch`.
    #[serde(default)]
    pub budget_epoch: i64,
    #[serde(default)]
    pub budget_base_usd: Option<f64>,
    #[serde(default)]
    pub budget_period_start: i64,
}

pub fn key_from_row(r: &Row) -> DbResult<KeyRow> {
    let models: String = r.named("models")?;
    Ok(KeyRow {
        id: r.named("id")?,
        sha256: r.named("sha256")?,
        prefix: r.named("prefix")?,
        name: r.named("name")?,
        owner: r.named("owner")?,
        models: serde_json::from_str(&models).unwrap_or_default(),
        rpm: r.named("rpm")?,
        tpm: r.named("tpm")?,
        concurrent_streams: r.named("concurrent_streams")?,
        budget_usd: r.named("budget_usd")?,
        budget_period: r.named("budget_period")?,
        expires_at: r.named("expires_at")?,
        status: r.named("status")?,
        created_at: r.named("created_at")?,
        budget_epoch: r.named("budget_epoch")?,
        budget_base_usd: r.named("budget_base_usd")?,
        budget_period_start: r.named("budget_period_start")?,
    })
}

pub fn list_keys(c: &Db) -> DbResult<Vec<KeyRow>> {
    c.query("SELECT * FROM keys ORDER BY created_at, id", args![])?
        .iter()
        .map(key_from_row)
        .collect()
}

pub fn insert_key(c: &Db, k: &KeyRow) -> DbResult<()> {
    c.execute(
        "INSERT INTO keys (id, sha256, prefix, name, owner, models, rpm, tpm, budget_usd,
                           budget_period, expires_at, status, created_at, budget_epoch,
                           budget_base_usd, budget_period_start, concurrent_streams)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)",
        args![
            k.id,
            k.sha256,
            k.prefix,
            k.name,
            k.owner,
            serde_json::to_string(&k.models).unwrap_or_else(|_| "[]".into()),
            k.rpm,
            k.tpm,
            k.budget_usd,
            k.budget_period,
            k.expires_at,
            k.status,
            k.created_at,
            k.budget_epoch,
            k.budget_base_usd,
            k.budget_period_start,
            k.concurrent_streams
        ],
    )?;
    Ok(())
}

/// Starts a new precheck epoch: the filter's per-Envoy counters restart from
/// `budget − spend now`. Called when a budget is set and when its period
/// rolls over — never for unrelated pushes, which must not reset counters
/// while the ledger still lags in-flight requests.
pub fn reset_budget_epoch(c: &Db, id: &str, now: i64) -> DbResult<()> {
    let Some(k) = get_key(c, id)? else {
        return Ok(());
    };
    let base = match k.budget_usd {
        Some(b) => Some((b - key_spend(c, &k, now)?).max(0.0)),
        None => None,
    };
    let epoch = now_ms();
    c.execute(
        "UPDATE keys SET budget_epoch = ?1, budget_base_usd = ?2, budget_period_start = ?3
         WHERE id = ?4",
        args![epoch, base, period_start(&k.budget_period, now), id],
    )?;
    Ok(())
}

pub fn get_key(c: &Db, id: &str) -> DbResult<Option<KeyRow>> {
    c.query_opt("SELECT * FROM keys WHERE id = ?1", args![id])?
        .as_ref()
        .map(key_from_row)
        .transpose()
}

/// Spend of a key in its current period.
pub fn key_spend(c: &Db, key: &KeyRow, now: i64) -> DbResult<f64> {
    c.query_one(
        "SELECT COALESCE(SUM(cost_usd), 0) FROM usage WHERE key_id = ?1 AND ts >= ?2",
        args![key.id, period_start(&key.budget_period, now)],
    )?
    .get(0)
}

/// Revokes a key; `false` if there is none.
pub fn revoke_key(c: &Db, id: &str) -> DbResult<bool> {
    Ok(c.execute(
        "UPDATE keys SET status = 'revoked' WHERE id = ?1",
        args![id],
    )? > 0)
}

/// Sets (or with `None` clears) a key's budget and its period.
pub fn set_budget(c: &Db, id: &str, usd: Option<f64>, period: &str) -> DbResult<()> {
    c.execute(
        "UPDATE keys SET budget_usd = ?1, budget_period = ?2 WHERE id = ?3",
        args![usd, period, id],
    )?;
    Ok(())
}

/// `active`, `disabled`, `over_budget` or `revoked`.
pub fn set_key_status(c: &Db, id: &str, status: &str) -> DbResult<()> {
    c.execute(
        "UPDATE keys SET status = ?1 WHERE id = ?2",
        args![status, id],
    )?;
    Ok(())
}

pub fn count_keys(c: &Db) -> DbResult<i64> {
    c.query_one("SELECT COUNT(*) FROM keys", args![])?.get(0)
}

#[cfg(test)]
mod tests {
    use super::super::now_s;
    use super::*;

    pub fn key(id: &str) -> KeyRow {
        KeyRow {
            id: id.into(),
            sha256: sluice_config::hash_key(id),
            prefix: "sk-…".into(),
            name: format!("name of {id}"),
            owner: "o".into(),
            models: vec!["m1".into()],
            rpm: Some(10),
            tpm: None,
            concurrent_streams: Some(2),
            budget_usd: Some(1.5),
            budget_period: "monthly".into(),
            expires_at: None,
            status: "active".into(),
            created_at: 1,
            budget_epoch: 7,
            budget_base_usd: Some(1.5),
            budget_period_start: 0,
        }
    }

    #[test]
    fn keys_round_trip_and_change() {
        let dir = tempfile::tempdir().unwrap();
        for (engine, s) in super::super::testing::stores(dir.path()) {
            eprintln!("{engine}");
            let c = s.lock();
            insert_key(&c, &key("a")).unwrap();
            insert_key(&c, &key("b")).unwrap();
            // The hash is unique: the same secret cannot be two keys.
            assert!(insert_key(
                &c,
                &KeyRow {
                    id: "c".into(),
                    ..key("a")
                }
            )
            .is_err());
            assert_eq!(get_key(&c, "a").unwrap().unwrap(), key("a"));
            assert_eq!(list_keys(&c).unwrap().len(), 2);
            assert_eq!(count_keys(&c).unwrap(), 2);
            assert!(revoke_key(&c, "a").unwrap());
            assert!(!revoke_key(&c, "zz").unwrap());
            assert_eq!(get_key(&c, "a").unwrap().unwrap().status, "revoked");
            set_budget(&c, "b", None, "daily").unwrap();
            set_key_status(&c, "b", "over_budget").unwrap();
            let b = get_key(&c, "b").unwrap().unwrap();
            assert_eq!(
                (b.budget_usd, b.budget_period.as_str(), b.status.as_str()),
                (None, "daily", "over_budget")
            );
            assert_eq!(key_spend(&c, &b, now_s()).unwrap(), 0.0);
        }
    }

    #[test]
    fn a_new_epoch_starts_from_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        for (engine, s) in super::super::testing::stores(dir.path()) {
            eprintln!("{engine}");
            let c = s.lock();
            insert_key(&c, &key("a")).unwrap();
            let now = now_s();
            let spent = sluice_records::UsageRecord {
                key_id: Some("a".into()),
                status: 200,
                ..Default::default()
            };
            super::super::insert_usage(&c, "u1", now, "n", &spent, 0.5).unwrap();
            reset_budget_epoch(&c, "a", now).unwrap();
            let a = get_key(&c, "a").unwrap().unwrap();
            assert_eq!(a.budget_base_usd, Some(1.0));
            assert!(a.budget_epoch > 7);
            assert_eq!(
                a.budget_period_start,
                super::super::period_start("monthly", now)
            );
        }
    }
}
