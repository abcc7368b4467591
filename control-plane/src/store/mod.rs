//! The store: keys (hashes only), providers, model routes, prices, the
//! usage ledger and pushed config versions, on sqlite (embedded, the
//! default) or Postgres (shared by control-plane replicas, docs/fleet.md).
//! **All SQL lives in this module**, one file per resource (`keys`,
//! `catalog`, `ledger`, `seed`), written once for both engines (`db.rs`);
//! callers get typed rows. One writer connection behind a mutex (sqlite
//! serialises writers anyway) and, on sqlite, a read-only one for reports
//! (WAL: readers never block the ingest writer); versioned migrations.

mod catalog;
mod db;
mod keys;
mod ledger;
mod seed;
#[cfg(test)]
pub mod testing;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::Serialize;

use crate::args;
pub use catalog::*;
pub use db::{Db, DbError, DbResult, Engine, Param, Row};
pub use keys::*;
pub use ledger::*;
pub use seed::seed;

/// Schema migrations, applied in order; the index + 1 is the version.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '',
    models TEXT NOT NULL DEFAULT '[]',
    rpm INTEGER,
    tpm INTEGER,
    budget_usd REAL,
    budget_period TEXT NOT NULL DEFAULT 'total',
    expires_at INTEGER,
    status TEXT NOT NULL DEFAULT 'active',
    created_at INTEGER NOT NULL
);
CREATE TABLE providers (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    position INTEGER NOT NULL,
    targets TEXT NOT NULL
);
CREATE TABLE guardrail_policy (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    spec TEXT NOT NULL
);
CREATE TABLE prices (
    model TEXT PRIMARY KEY,
    input_per_token REAL NOT NULL,
    output_per_token REAL NOT NULL,
    cached_input_per_token REAL,
    source TEXT NOT NULL DEFAULT 'builtin'
);
CREATE TABLE usage (
    request_id TEXT PRIMARY KEY,
    ts INTEGER NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    key_id TEXT,
    model TEXT,
    provider TEXT,
    upstream_model TEXT,
    client_dialect TEXT,
    stream INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cached_tokens INTEGER NOT NULL DEFAULT 0,
    cost_usd REAL NOT NULL DEFAULT 0,
    status INTEGER NOT NULL,
    error TEXT,
    usage_source TEXT,
    latency_ms INTEGER,
    ttft_ms INTEGER
);
CREATE INDEX usage_key_ts ON usage (key_id, ts);
CREATE INDEX usage_ts ON usage (ts);
CREATE TABLE config_versions (
    version INTEGER PRIMARY KEY,
    created_at INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    config TEXT NOT NULL
);
CREATE TABLE log_streams (
    node TEXT NOT NULL,
    vm TEXT NOT NULL,
    max_seq INTEGER NOT NULL DEFAULT 0,
    received INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (node, vm)
);
"#,
    r#"
ALTER TABLE keys ADD COLUMN budget_epoch INTEGER NOT NULL DEFAULT 0;
ALTER TABLE keys ADD COLUMN budget_base_usd REAL;
ALTER TABLE keys ADD COLUMN budget_period_start INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
CREATE TABLE settings (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL
);
"#,
    // The ledger is keyed by an id the gateway makes (node, VM instance,
    // sequence number); the client's `x-request-id` is kept beside it for
    // correlation only — keying on it let a client make several requests
    // count as one.
    r#"
ALTER TABLE usage RENAME COLUMN request_id TO id;
ALTER TABLE usage ADD COLUMN request_id TEXT;
UPDATE usage SET request_id = id;
CREATE INDEX usage_request_id ON usage (request_id);
"#,
    // Cache writes are billed above plain input (Anthropic: 1.25x).
    r#"
ALTER TABLE prices ADD COLUMN cache_write_input_per_token REAL;
ALTER TABLE keys ADD COLUMN concurrent_streams INTEGER;
ALTER TABLE usage ADD COLUMN cache_creation_tokens INTEGER NOT NULL DEFAULT 0;
"#,
    // A model's resilience policy (retry, timeouts, cooldown) as JSON, and
    // a request's attempts (resilient models) in the ledger.
    r#"
ALTER TABLE models ADD COLUMN policy TEXT;
ALTER TABLE usage ADD COLUMN attempts TEXT;
"#,
    // What a request did besides generating (token counting, embeddings).
    r#"
ALTER TABLE usage ADD COLUMN operation TEXT;
"#,
];

/// A JSON setting (`capture`, `shadow`), if set.
pub fn get_setting<T: serde::de::DeserializeOwned>(
    c: &Db,
    name: &str,
) -> Result<Option<T>, String> {
    c.query_opt("SELECT spec FROM settings WHERE name = ?1", args![name])?
        .map(|r| r.get::<String>(0))
        .transpose()?
        .map(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))
        .transpose()
}

/// Sets (`Some`) or clears (`None`) a JSON setting.
pub fn put_setting<T: Serialize>(c: &Db, name: &str, v: Option<&T>) -> Result<(), String> {
    match v {
        Some(v) => {
            let spec = serde_json::to_string(v).map_err(|e| e.to_string())?;
            c.execute(
                "INSERT INTO settings (name, spec) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
                args![name, spec],
            )
        }
        None => c.execute("DELETE FROM settings WHERE name = ?1", args![name]),
    }
    .map(|_| ())
    .map_err(|e| e.to_string())
}

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Db>>,
    /// A second connection for reports and status: WAL lets it read while
    /// the ledger writer holds `conn`, so a slow report never stalls
    /// ingestion (or the other way round).
    read: Option<Arc<Mutex<Db>>>,
}

pub fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Store {
    /// `postgres://…` (or `postgresql://…`): a Postgres database shared by
    /// replicas; anything else: a sqlite file.
    pub fn open_url(url: &str, ca: Option<&Path>) -> DbResult<Store> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Store::open_postgres_with_ca(url, ca)
        } else {
            Store::open(Path::new(url.strip_prefix("sqlite://").unwrap_or(url)))
        }
    }

    pub fn open(path: &Path) -> DbResult<Store> {
        let conn = rusqlite::Connection::open(path)?;
        let mut st = Self::init(conn)?;
        let read = rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        read.busy_timeout(std::time::Duration::from_secs(5))?;
        st.read = Some(Arc::new(Mutex::new(Db::sqlite(read))));
        Ok(st)
    }

    /// A Postgres store: the same migrations (types mapped, `db::pg_ddl`),
    /// applied once however many replicas start at the same moment (an
    /// advisory lock held by each migration's transaction).
    #[cfg(test)]
    pub fn open_postgres(url: &str) -> DbResult<Store> {
        Store::open_postgres_with_ca(url, None)
    }

    /// The same, trusting `ca` for `sslmode=require` (else the system's
    /// roots).
    pub fn open_postgres_with_ca(url: &str, ca: Option<&Path>) -> DbResult<Store> {
        let db = Db::postgres_with_ca(url, ca)?;
        // One transaction under an advisory lock: replicas starting at once
        // wait for each other, and a migration half applied is none applied.
        db.transaction(|tx| -> DbResult<()> {
            tx.batch("SELECT pg_advisory_xact_lock(7714071)")?;
            tx.batch("CREATE TABLE IF NOT EXISTS sluice_schema (version BIGINT NOT NULL)")?;
            let current: i64 = tx
                .query_one(
                    "SELECT COALESCE(MAX(version), 0) FROM sluice_schema",
                    args![],
                )?
                .get(0)?;
            let current = usize::try_from(current).unwrap_or(0);
            if current >= MIGRATIONS.len() {
                return Ok(());
            }
            for m in MIGRATIONS.iter().skip(current) {
                tx.batch(&db::pg_ddl(m))?;
            }
            let version = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
            tx.execute("DELETE FROM sluice_schema", args![])?;
            tx.execute(
                "INSERT INTO sluice_schema (version) VALUES (?1)",
                args![version],
            )?;
            Ok(())
        })?;
        Ok(Store {
            conn: Arc::new(Mutex::new(db)),
            read: None,
        })
    }

    fn init(mut conn: rusqlite::Connection) -> rusqlite::Result<Store> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a row is on disk before the ingest batch returns, so a
        // `kill -9` after that point loses nothing.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let tx = conn.transaction()?;
            tx.execute_batch(m)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
        }
        Ok(Store {
            conn: Arc::new(Mutex::new(Db::sqlite(conn))),
            read: None,
        })
    }

    pub fn engine(&self) -> Engine {
        self.lock().engine()
    }

    pub fn lock(&self) -> MutexGuard<'_, Db> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The read-only connection (the writer's when there is none).
    pub fn read(&self) -> MutexGuard<'_, Db> {
        self.read
            .as_ref()
            .unwrap_or(&self.conn)
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }
}

/// (year, month, day) of a day number since 1970-01-01 (UTC), by Howard
/// Hinnant's civil-from-days.
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Start of the current budget period (unix seconds, UTC).
pub fn period_start(period: &str, now: i64) -> i64 {
    const DAY: i64 = 86_400;
    match period {
        "daily" => now - now.rem_euclid(DAY),
        "monthly" => {
            // The 1st of this month.
            let days = now.div_euclid(DAY);
            let (_, _, d) = civil_from_days(days);
            (days - (d - 1)) * DAY
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_apply_once_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        let s = Store::open(&p).unwrap();
        let v: i64 = s
            .lock()
            .as_sqlite()
            .unwrap()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        drop(s);
        Store::open(&p).unwrap();
    }

    /// Replicas starting at once on an empty Postgres migrate it once.
    #[test]
    fn postgres_migrations_apply_once_from_replicas_starting_together() {
        let Some(url) = testing::postgres_for_test() else {
            return;
        };
        let opened: Vec<_> = (0..3)
            .map(|_| {
                let url = url.clone();
                std::thread::spawn(move || Store::open_postgres(&url).map(|_| ()))
            })
            .collect();
        for t in opened {
            t.join().unwrap().unwrap();
        }
        let s = Store::open_postgres(&url).unwrap();
        let c = s.lock();
        let rows = c
            .query("SELECT version FROM sluice_schema", args![])
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].get::<i64>(0).unwrap(), MIGRATIONS.len() as i64);
        // The last migration's column is there.
        c.query("SELECT operation FROM usage", args![]).unwrap();
    }

    #[test]
    fn periods() {
        // 2026-11-22T10:00:00Z
        let t = 1_795_341_600;
        assert_eq!(period_start("daily", t), 1_795_305_600);
        // 2026-11-01T00:00:00Z
        assert_eq!(period_start("monthly", t), 1_793_491_200);
        assert_eq!(period_start("total", t), 0);
    }
}
