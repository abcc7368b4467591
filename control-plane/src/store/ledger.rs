//! The usage ledger (one row per request, keyed by an id the gateway made),
//! the access-log sequence of every VM (loss accounting), reports, and the
//! pushed configuration versions.

use serde::{Deserialize, Serialize};
use sluice_records::UsageRecord;

use super::{Db, DbResult};
use crate::args;

/// Counts arrive as u64; sqlite integers are i64.
fn int(x: u64) -> i64 {
    i64::try_from(x).unwrap_or(i64::MAX)
}

/// Writes one ledger row; `false` if the id is already there (a redelivered
/// record: never counted twice).
pub fn insert_usage(
    c: &Db,
    id: &str,
    ts: i64,
    node: &str,
    u: &UsageRecord,
    cost_usd: f64,
) -> DbResult<bool> {
    let t = &u.tokens;
    // ON CONFLICT DO NOTHING: a record two replicas both received (the
    // access log goes to each, docs/fleet.md) is one row, whichever
    // committed first.
    let n = c.execute(
        "INSERT INTO usage (id, ts, node, key_id, model, provider,
           upstream_model, client_dialect, stream, prompt_tokens, completion_tokens,
           cached_tokens, cost_usd, status, error, usage_source, latency_ms, ttft_ms,
           request_id, cache_creation_tokens, attempts, operation)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
           ?18, ?19, ?20, ?21, ?22)
         ON CONFLICT DO NOTHING",
        args![
            id,
            ts,
            node,
            u.key_id,
            u.model,
            u.provider,
            u.upstream_model,
            u.client_dialect,
            u.stream,
            int(t.prompt_tokens),
            int(t.completion_tokens),
            int(t.cached_tokens),
            cost_usd,
            u.status,
            u.error,
            u.usage_source,
            int(u.latency_ms),
            u.ttft_ms.map(int),
            u.request_id,
            int(t.cache_creation_tokens),
            // A resilient model's request: its attempts, in order.
            (!u.attempts.is_empty())
                .then(|| serde_json::to_string(&u.attempts).ok())
                .flatten(),
            u.operation
        ],
    )?;
    Ok(n > 0)
}

/// Notes a received record of a VM's sequence.
pub fn note_sequence(c: &Db, node: &str, vm: &str, seq: u64) -> DbResult<()> {
    c.execute(
        "INSERT INTO log_streams (node, vm, max_seq, received) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT(node, vm) DO UPDATE SET
           max_seq = CASE WHEN excluded.max_seq > log_streams.max_seq
                     THEN excluded.max_seq ELSE log_streams.max_seq END,
           received = log_streams.received + 1",
        args![node, vm, int(seq)],
    )?;
    Ok(())
}

/// One VM's access-log sequence: records sent (`max_seq`), received, lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStream {
    pub node: String,
    pub vm: String,
    pub max_seq: i64,
    pub received: i64,
    pub lost: i64,
}

pub fn log_streams(c: &Db) -> DbResult<Vec<LogStream>> {
    c.query(
        "SELECT node, vm, max_seq, received FROM log_streams ORDER BY node, vm",
        args![],
    )?
    .iter()
    .map(|r| {
        let (max_seq, received): (i64, i64) = (r.get(2)?, r.get(3)?);
        Ok(LogStream {
            node: r.get(0)?,
            vm: r.get(1)?,
            max_seq,
            received,
            lost: max_seq.saturating_sub(received).max(0),
        })
    })
    .collect()
}

pub fn ledger_rows(c: &Db) -> DbResult<i64> {
    c.query_one("SELECT COUNT(*) FROM usage", args![])?.get(0)
}

/// The store answers (health checks).
pub fn healthy(c: &Db) -> bool {
    c.query_one("SELECT 1", args![])
        .and_then(|r| r.get::<i64>(0))
        .is_ok()
}

/// What a usage report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Key,
    Model,
    Provider,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        match s {
            "key" => Some(GroupBy::Key),
            "model" => Some(GroupBy::Model),
            "provider" => Some(GroupBy::Provider),
            _ => None,
        }
    }

    fn column(self) -> &'static str {
        match self {
            GroupBy::Key => "key_id",
            GroupBy::Model => "model",
            GroupBy::Provider => "provider",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageRow {
    pub group: String,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cost_usd: f64,
    pub errors: i64,
}

/// Requests, tokens, cost and errors since `since` (unix seconds), per group,
/// costliest first.
pub fn usage_report(c: &Db, by: GroupBy, since: i64) -> DbResult<Vec<UsageRow>> {
    // Sums of integers cast back to BIGINT: Postgres widens them to NUMERIC.
    let sql = format!(
        "SELECT COALESCE({col}, '-'), COUNT(*), CAST(SUM(prompt_tokens) AS BIGINT),
                CAST(SUM(completion_tokens) AS BIGINT), CAST(SUM(cached_tokens) AS BIGINT),
                SUM(cost_usd), CAST(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS BIGINT)
         FROM usage WHERE ts >= ?1 GROUP BY 1 ORDER BY 6 DESC, 1",
        col = by.column()
    );
    c.query(&sql, args![since])?
        .iter()
        .map(|r| {
            Ok(UsageRow {
                group: r.get(0)?,
                requests: r.get(1)?,
                prompt_tokens: r.get(2)?,
                completion_tokens: r.get(3)?,
                cached_tokens: r.get(4)?,
                cost_usd: r.get(5)?,
                errors: r.get(6)?,
            })
        })
        .collect()
}

/// The newest pushed configuration: (version, SHA-256 of its body).
pub fn last_config_version(c: &Db) -> Option<(i64, String)> {
    let r = c
        .query_opt(
            "SELECT version, sha256 FROM config_versions ORDER BY version DESC LIMIT 1",
            args![],
        )
        .ok()??;
    Some((r.get(0).ok()?, r.get(1).ok()?))
}

pub fn insert_config_version(
    c: &Db,
    version: i64,
    now: i64,
    sha256: &str,
    body: &str,
) -> DbResult<()> {
    c.execute(
        "INSERT INTO config_versions (version, created_at, sha256, config) VALUES (?1, ?2, ?3, ?4)",
        args![version, now, sha256, body],
    )?;
    Ok(())
}

/// Serialises publishing across control-plane replicas sharing a Postgres
/// store, for the rest of the caller's transaction: a replica builds the
/// config only after any other's new version is committed, so two replicas
/// never number two different configs alike, nor undo each other's change.
/// sqlite has one writer already.
pub fn lock_publishing(c: &Db) -> DbResult<()> {
    match c.engine() {
        super::Engine::Postgres => c.batch("SELECT pg_advisory_xact_lock(7714072)"),
        super::Engine::Sqlite => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(key: &str, model: &str, status: u16, prompt: u64) -> UsageRecord {
        let mut r = UsageRecord {
            key_id: Some(key.into()),
            model: Some(model.into()),
            status,
            ..Default::default()
        };
        r.tokens.prompt_tokens = prompt;
        r
    }

    #[test]
    fn rows_are_written_once_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        for (engine, s) in super::super::testing::stores(dir.path()) {
            eprintln!("{engine}");
            let c = s.lock();
            assert!(insert_usage(&c, "n/vm/1", 100, "n", &rec("k1", "a", 200, 10), 0.5).unwrap());
            // The same id again: ignored.
            assert!(!insert_usage(&c, "n/vm/1", 100, "n", &rec("k1", "a", 200, 10), 0.5).unwrap());
            assert!(insert_usage(&c, "n/vm/2", 100, "n", &rec("k1", "b", 429, 1000), 0.0).unwrap());
            // Counts past i64 are stored saturated, not wrapped or refused.
            assert!(insert_usage(&c, "big", 1, "n", &rec("k3", "c", 200, u64::MAX), 0.0).unwrap());
            let big: i64 = c
                .query_one("SELECT prompt_tokens FROM usage WHERE id = 'big'", args![])
                .unwrap()
                .get(0)
                .unwrap();
            assert_eq!(big, i64::MAX);
            assert!(insert_usage(&c, "n/vm/3", 5, "n", &rec("k2", "a", 200, 1), 9.0).unwrap());
            assert_eq!(ledger_rows(&c).unwrap(), 4);
            let by_key = usage_report(&c, GroupBy::Key, 50).unwrap();
            assert_eq!(
                by_key.len(),
                1,
                "k2's and k3's rows are older than the window"
            );
            let k1 = &by_key[0];
            assert_eq!(
                (k1.group.as_str(), k1.requests, k1.errors, k1.cost_usd),
                ("k1", 2, 1, 0.5)
            );
            assert_eq!(k1.prompt_tokens, 1010);
            let by_model = usage_report(&c, GroupBy::Model, 2).unwrap();
            assert_eq!(by_model[0].group, "a", "costliest first");
            assert_eq!(GroupBy::parse("colour"), None);
            assert!(healthy(&c));
        }
    }

    #[test]
    fn sequences_count_what_was_lost() {
        let dir = tempfile::tempdir().unwrap();
        for (engine, s) in super::super::testing::stores(dir.path()) {
            eprintln!("{engine}");
            let c = s.lock();
            for seq in [1, 2, 5] {
                note_sequence(&c, "envoy-a", "vm1", seq).unwrap();
            }
            note_sequence(&c, "envoy-b", "vm1", 1).unwrap();
            let l = log_streams(&c).unwrap();
            assert_eq!(
                (l[0].max_seq, l[0].received, l[0].lost, l[1].lost),
                (5, 3, 2, 0)
            );
        }
    }

    #[test]
    fn config_versions_are_kept_in_order() {
        let dir = tempfile::tempdir().unwrap();
        for (engine, s) in super::super::testing::stores(dir.path()) {
            eprintln!("{engine}");
            let c = s.lock();
            assert_eq!(last_config_version(&c), None);
            insert_config_version(&c, 1, 10, "aa", "{}").unwrap();
            insert_config_version(&c, 2, 11, "bb", "{}").unwrap();
            assert!(insert_config_version(&c, 2, 12, "cc", "{}").is_err());
            assert_eq!(last_config_version(&c), Some((2, "bb".into())));
        }
    }
}
