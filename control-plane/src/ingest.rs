//! The ledger writer: batches usage records into one sqlite transaction,
//! idempotent on request id, counts per-VM sequence gaps (lost records), and
//! re-checks the budgets of the keys it charged.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

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
pub fn write_batch(app: &App, batch: &[(String, UsageIn)]) -> store::DbResult<HashSet<String>> {
    let c = app.store.lock();
    let prices = store::list_prices(&c)?;
    c.transaction(|tx| write_rows(tx, &prices, batch))
}

fn write_rows(
    tx: &store::Db,
    prices: &[store::Price],
    batch: &[(String, UsageIn)],
) -> store::DbResult<HashSet<String>> {
    let mut charged = HashSet::new();
    let now = now_s();
    // Counts arrive as u64; sqlite integers are i64.
    let n = |x: u64| i64::try_from(x).unwrap_or(i64::MAX);
    // In ledger-id order: replicas writing the same records at once (each
    // receives every access log, docs/fleet.md) take row locks in one order,
    // so one waits for the other rather than deadlocking.
    let mut rows: Vec<(String, &String, &UsageIn)> = batch
        .iter()
        .map(|(node, u)| (ledger_id(node, u), node, u))
        .collect();
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    for (id, node, u) in rows {
        let t = &u.tokens;
        let price = u
            .upstream_model
            .as_deref()
            .and_then(|m| pricing::lookup(prices, m))
            .or_else(|| u.model.as_deref().and_then(|m| pricing::lookup(prices, m)));
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
        if !store::insert_usage(tx, &id, now, node, u, cost)? {
            continue; // a duplicate delivery: never counted twice
        }
        if let Some((vm, seq)) = u.sequence() {
            store::note_sequence(tx, node, vm, seq)?;
        }
        if cost > 0.0 {
            if let Some(k) = &u.key_id {
                charged.insert(k.clone());
            }
        }
    }
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
                store::set_key_status(&c, &k.id, want).map_err(|e| e.to_string())?;
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

    use crate::app::test_app;

    #[tokio::test]
    async fn a_failed_ledger_write_is_retried_until_it_lands() {
        let dir = tempfile::tempdir().unwrap();
        let (app, rx) = test_app(dir.path());
        // The disk refuses writes (as when full): every batch write fails.
        store::testing::refuse_writes(&app.store.lock(), true);
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
        let rows = || -> i64 { store::ledger_rows(&app.store.read()).unwrap() };
        for _ in 0..200 {
            if failures() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(failures() >= 2, "the write is retried");
        assert_eq!(rows(), 0);
        // The disk has room again: the same batch lands, once.
        store::testing::refuse_writes(&app.store.lock(), false);
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
    fn a_batch_is_priced_charged_once_and_counted_per_vm() {
        let dir = tempfile::tempdir().unwrap();
        for (engine, st) in store::testing::stores(dir.path()) {
            eprintln!("{engine}");
            let (app, _rx) = crate::app::test_app_on(st);
            store::upsert_price(
                &app.store.lock(),
                &store::Price {
                    model: "up-model".into(),
                    input_per_token: 1e-3,
                    output_per_token: 2e-3,
                    cached_input_per_token: None,
                    cache_write_input_per_token: None,
                    source: "t".into(),
                },
            )
            .unwrap();
            let mut paid = rec("r1", Some("vm1"), Some(1));
            paid.key_id = Some("k1".into());
            paid.upstream_model = Some("up-model".into());
            paid.tokens.prompt_tokens = 100;
            paid.tokens.completion_tokens = 10;
            let mut free = rec("r2", Some("vm1"), Some(3));
            free.key_id = Some("k2".into());
            let batch = vec![
                ("n".to_string(), paid.clone()),
                ("n".to_string(), free),
                // Redelivered: the same node, VM and sequence.
                ("n".to_string(), paid),
            ];
            let charged = write_batch(&app, &batch).unwrap();
            assert_eq!(charged, HashSet::from(["k1".to_string()]));
            let c = app.store.read();
            assert_eq!(store::ledger_rows(&c).unwrap(), 2);
            let by_key = store::usage_report(&c, store::GroupBy::Key, 0).unwrap();
            assert!((by_key[0].cost_usd - 0.12).abs() < 1e-9, "{by_key:?}");
            let streams = store::log_streams(&c).unwrap();
            assert_eq!(
                (streams[0].max_seq, streams[0].received, streams[0].lost),
                (3, 2, 1)
            );
        }
    }

    /// Two replicas on one Postgres ingest the same records at once (each
    /// gets every access log): every record is one row, counted once.
    #[test]
    fn replicas_ingesting_the_same_records_count_each_once() {
        let Some(url) = store::testing::postgres_for_test() else {
            return;
        };
        let batches: Vec<Vec<(String, UsageIn)>> = (0..20u64)
            .map(|b| {
                (1..=50u64)
                    .map(|i| {
                        let vm = format!("vm{}", i % 3);
                        ("n".to_string(), rec("r", Some(&vm), Some(b * 50 + i)))
                    })
                    .collect()
            })
            .collect();
        let threads: Vec<_> = (0..2)
            .map(|replica| {
                let (app, _rx) =
                    crate::app::test_app_on(store::Store::open_postgres(&url).unwrap());
                let mut batches = batches.clone();
                if replica == 1 {
                    batches.reverse(); // they meet in the middle
                }
                std::thread::spawn(move || {
                    for b in &batches {
                        write_batch(&app, b).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let st = store::Store::open_postgres(&url).unwrap();
        let c = st.read();
        assert_eq!(store::ledger_rows(&c).unwrap(), 1000);
        let received: i64 = store::log_streams(&c)
            .unwrap()
            .iter()
            .map(|l| l.received)
            .sum();
        assert_eq!(received, 1000, "a record both delivered is received once");
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
