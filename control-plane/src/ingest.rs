//! The ledger writer: batches usage records into one sqlite transaction,
//! idempotent on request id, counts per-VM sequence gaps (lost records), and
//! re-checks the budgets of the keys it charged.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;
use tokio::sync::mpsc;

use crate::app::App;
use crate::pricing;
use crate::store::{self, now_s};
use sluice_records::UsageRecord as UsageIn;

const MAX_BATCH: usize = 512;
const BATCH_WINDOW: Duration = Duration::from_millis(20);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub async fn run(app: Arc<App>, mut rx: mpsc::Receiver<(String, UsageIn)>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(x)) => batch.push(x),
                _ => break,
            }
        }
        // A failed write (disk full, a lock held too long) is retried with
        // backoff until it lands: the batch stays here, and while it does
        // the channel fills and the access-log streams wait (backpressure),
        // rather than records being dropped.
        let batch = Arc::new(batch);
        let mut backoff = RETRY_FIRST;
        let keys = loop {
            let (app2, b) = (app.clone(), batch.clone());
            match tokio::task::spawn_blocking(move || write_batch(&app2, &b)).await {
                Ok(Ok(keys)) => break keys,
                Ok(Err(e)) => {
                    eprintln!(
                        "sluice: ledger write of {} records failed ({e}); retrying in {backoff:?}",
                        batch.len()
                    );
                    app.ledger_write_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Err(e) => eprintln!("sluice: ledger writer task failed ({e}); retrying"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RETRY_MAX);
        };
        if !keys.is_empty() {
            if let Err(e) = enforce_budgets(&app, Some(&keys)) {
                eprintln!("sluice: budget check failed: {e}");
            }
        }
    }
}

/// The ledger key of a record: made by the gateway — the Envoy node, the VM
/// instance that produced the record and its sequence number there — so a
/// redelivered record is counted once and no client header can make two
/// requests one. A record without a sequence (not from the filter's usage
/// path) gets an id of its own: counted, never merged.
pub fn ledger_id(node: &str, u: &UsageIn) -> String {
    match u.sequence() {
        Some((vm, seq)) => format!("{node}/{vm}/{seq}"),
        None => {
            // The process start time and a counter: never the same twice,
            // across restarts included.
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            format!(
                "{node}/unsequenced/{}-{n}",
                START.get_or_init(store::now_ms)
            )
        }
    }
}

/// Writes a batch; returns the keys that were charged.
pub fn write_batch(app: &App, batch: &[(String, UsageIn)]) -> rusqlite::Result<HashSet<String>> {
    let mut c = app.store.lock();
    let prices = store::list_prices(&c)?;
    let tx = c.transaction()?;
    let mut charged = HashSet::new();
    let now = now_s();
    // Counts arrive as u64; sqlite integers are i64.
    let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    for (node, u) in batch {
        let t = &u.tokens;
        let price = u
            .upstream_model
            .as_deref()
            .and_then(|m| pricing::lookup(&prices, m))
            .or_else(|| u.model.as_deref().and_then(|m| pricing::lookup(&prices, m)));
        let cost = price
            .map(|p| {
                pricing::cost(
                    p,
                    n(t.prompt_tokens),
                    n(t.completion_tokens),
                    n(t.cached_tokens),
                    n(t.cache_creation_tokens),
                )
            })
            .unwrap_or(0.0);
        let id = ledger_id(node, u);
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO usage (id, ts, node, key_id, model, provider,
               upstream_model, client_dialect, stream, prompt_tokens, completion_tokens,
               cached_tokens, cost_usd, status, error, usage_source, latency_ms, ttft_ms,
               request_id, cache_creation_tokens)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
               ?18, ?19, ?20)",
            params![
                id,
                now,
                node,
                u.key_id,
                u.model,
                u.provider,
                u.upstream_model,
                u.client_dialect,
                u.stream,
                n(t.prompt_tokens),
                n(t.completion_tokens),
                n(t.cached_tokens),
                cost,
                u.status,
                u.error,
                u.usage_source,
                n(u.latency_ms),
                u.ttft_ms.map(n),
                u.request_id,
                n(t.cache_creation_tokens)
            ],
        )?;
        if inserted == 0 {
            continue; // a duplicate delivery: never counted twice
        }
        if let Some((vm, seq)) = u.sequence() {
            let seq = n(seq);
            tx.execute(
                "INSERT INTO log_streams (node, vm, max_seq, received) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT(node, vm) DO UPDATE SET max_seq = MAX(max_seq, excluded.max_seq),
                   received = received + 1",
                params![node, vm, seq],
            )?;
        }
        if cost > 0.0 {
            if let Some(k) = &u.key_id {
                charged.insert(k.clone());
            }
        }
    }
    tx.commit()?;
    Ok(charged)
}

/// Marks keys over budget (or back under it after a period rolled over) and
/// pushes a new config when anything changed. `only`: the keys to check.
pub fn enforce_budgets(app: &App, only: Option<&HashSet<String>>) -> Result<(), String> {
    let changed = {
        let c = app.store.lock();
        let now = now_s();
        let mut changed = false;
        for k in store::list_keys(&c).map_err(|e| e.to_string())? {
            if only.is_some_and(|o| !o.contains(&k.id)) {
                continue;
            }
            if k.status != "active" && k.status != "over_budget" {
                continue;
            }
            // A new period: the precheck restarts from the full budget.
            if k.budget_usd.is_some()
                && k.budget_period != "total"
                && store::period_start(&k.budget_period, now) != k.budget_period_start
                && k.budget_period_start != 0
            {
                store::reset_budget_epoch(&c, &k.id, now).map_err(|e| e.to_string())?;
                changed = true;
            }
            let over = match k.budget_usd {
                Some(b) => store::key_spend(&c, &k, now).map_err(|e| e.to_string())? >= b,
                None => false,
            };
            let want = if over { "over_budget" } else { "active" };
            if want != k.status {
                c.execute(
                    "UPDATE keys SET status = ?1 WHERE id = ?2",
                    params![want, k.id],
                )
                .map_err(|e| e.to_string())?;
                changed = true;
            }
        }
        changed
    };
    if changed {
        app.republish()?;
    }
    Ok(())
}

/// Periodic housekeeping: period roll-over un-blocks keys; expiry removes
/// keys from the pushed config.
pub async fn housekeeping(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        app.pairs.lock().unwrap_or_else(|p| p.into_inner()).expire();
        if let Err(e) = enforce_budgets(&app, None).and_then(|_| app.republish().map(|_| ())) {
            eprintln!("sluice: housekeeping: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_app(dir: &std::path::Path) -> (Arc<App>, mpsc::Receiver<(String, UsageIn)>) {
        let store = store::Store::open(&dir.join("t.db")).unwrap();
        let (version, config_json) = crate::config_build::publish(&store.lock()).unwrap();
        let (snapshot, _) = tokio::sync::watch::channel(Arc::new(crate::app::Snapshot {
            version,
            config_json,
        }));
        let (tx, rx) = mpsc::channel(16);
        let app = App {
            store,
            snapshot,
            nodes: Default::default(),
            wasm: crate::app::WasmSpec {
                resource_name: "sluice".into(),
                code: crate::app::WasmCode::Local("x.wasm".into()),
                vm_id: "sluice".into(),
                env_keys: vec![],
            },
            ingest: tx,
            pairs: Default::default(),
            capture: None,
            capture_dir: None,
            capture_counters: Default::default(),
            wasm_bytes: None,
            ledger_write_failures: Default::default(),
            resource_cache: Default::default(),
        };
        (Arc::new(app), rx)
    }

    #[tokio::test]
    async fn a_failed_ledger_write_is_retried_until_it_lands() {
        let dir = tempfile::tempdir().unwrap();
        let (app, rx) = test_app(dir.path());
        // The disk refuses writes (as when full): every batch write fails.
        app.store
            .lock()
            .pragma_update(None, "query_only", true)
            .unwrap();
        tokio::spawn(run(app.clone(), rx));
        let u = UsageIn {
            request_id: "r".into(),
            vm: "vm".into(),
            seq: 1,
            status: 200,
            ..Default::default()
        };
        app.ingest.send(("n".into(), u)).await.unwrap();
        let failures = || {
            app.ledger_write_failures
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        let rows = || -> i64 {
            app.store
                .read()
                .query_row("SELECT COUNT(*) FROM usage", [], |r| r.get(0))
                .unwrap()
        };
        for _ in 0..200 {
            if failures() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(failures() >= 2, "the write is retried");
        assert_eq!(rows(), 0);
        // The disk has room again: the same batch lands, once.
        app.store
            .lock()
            .pragma_update(None, "query_only", false)
            .unwrap();
        for _ in 0..400 {
            if rows() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(rows(), 1);
    }

    fn rec(rid: &str, vm: Option<&str>, seq: Option<u64>) -> UsageIn {
        UsageIn {
            request_id: rid.into(),
            vm: vm.unwrap_or_default().into(),
            seq: seq.unwrap_or_default(),
            ..Default::default()
        }
    }

    #[test]
    fn the_ledger_key_is_the_gateways_not_the_clients() {
        // One client id on three requests: three ledger rows.
        let ids: HashSet<_> = (1..=3)
            .map(|n| ledger_id("envoy-a", &rec("same", Some("vm1"), Some(n))))
            .collect();
        assert_eq!(ids.len(), 3);
        // A redelivered record (same node, VM, sequence) keeps its key.
        assert_eq!(
            ledger_id("envoy-a", &rec("x", Some("vm1"), Some(7))),
            ledger_id("envoy-a", &rec("y", Some("vm1"), Some(7)))
        );
        // Another Envoy's VM with the same instance name is another row.
        assert_ne!(
            ledger_id("envoy-a", &rec("x", Some("vm1"), Some(7))),
            ledger_id("envoy-b", &rec("x", Some("vm1"), Some(7)))
        );
        // Unsequenced records are never merged.
        assert_ne!(
            ledger_id("n", &rec("same", None, None)),
            ledger_id("n", &rec("same", None, None))
        );
    }
}
