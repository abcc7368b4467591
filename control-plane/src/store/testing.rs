//! The store's tests run against every engine: sqlite always, Postgres when
//! `SLUICE_TEST_POSTGRES` names a server (`make unit` starts one with
//! scripts/with-postgres.py). Each Postgres run gets a database of its own.
//! Every other test that needs a store (`app::test_app`: the admin API, xDS,
//! ingest…) runs on the engine `SLUICE_TEST_ENGINE` names — `make unit` runs
//! the control plane's tests once per engine.

use super::{Db, Store};

/// A fresh store on the engine the run is for (`SLUICE_TEST_ENGINE`:
/// `postgres`, else sqlite).
pub fn engine_store(dir: &std::path::Path) -> Store {
    if std::env::var("SLUICE_TEST_ENGINE").as_deref() == Ok("postgres") {
        let url = std::env::var("SLUICE_TEST_POSTGRES")
            .expect("SLUICE_TEST_ENGINE=postgres needs SLUICE_TEST_POSTGRES");
        fresh_postgres(&url)
    } else {
        Store::open(&dir.join("t.db")).expect("sqlite store")
    }
}

/// Makes the connection refuse writes (as a full disk would), or lets it
/// write again.
pub fn refuse_writes(c: &Db, refuse: bool) {
    let sql = match (c.engine(), refuse) {
        (super::Engine::Sqlite, true) => "PRAGMA query_only = ON",
        (super::Engine::Sqlite, false) => "PRAGMA query_only = OFF",
        (super::Engine::Postgres, true) => "SET default_transaction_read_only = on",
        (super::Engine::Postgres, false) => "SET default_transaction_read_only = off",
    };
    c.batch(sql).expect("refuse writes");
}

/// A fresh store of each engine: (engine name, store). The temp dir keeps
/// the sqlite file alive for as long as the caller holds it.
pub fn stores(dir: &std::path::Path) -> Vec<(&'static str, Store)> {
    let mut out = vec![(
        "sqlite",
        Store::open(&dir.join("t.db")).expect("sqlite store"),
    )];
    if let Some(url) = std::env::var("SLUICE_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
    {
        out.push(("postgres", fresh_postgres(&url)));
    }
    out
}

/// The URL of a new, empty database for a test that needs Postgres itself
/// (replicas sharing one store); `None`, said so, when no server is named.
pub fn postgres_for_test() -> Option<String> {
    match std::env::var("SLUICE_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(fresh_postgres_url(&url)),
        _ => {
            eprintln!("SLUICE_TEST_POSTGRES unset: Postgres not tested");
            None
        }
    }
}

/// A new, empty database on the server of `url`, migrated.
pub fn fresh_postgres(url: &str) -> Store {
    Store::open_postgres(&fresh_postgres_url(url)).expect("postgres store")
}

/// The URL of a new, empty database on the server of `url` (replicas open
/// it each).
pub fn fresh_postgres_url(url: &str) -> String {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("random");
    let name = format!("sluice_t_{}", hex::encode(b));
    let admin = super::Db::postgres(url).expect("postgres server");
    admin
        .batch(&format!("CREATE DATABASE {name}"))
        .expect("create database");
    let base = url.rsplit_once('/').map_or(url, |(b, _)| b);
    format!("{base}/{name}")
}
