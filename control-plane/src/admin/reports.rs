//! What the control plane can tell: status (Envoys, access-log loss,
//! shadow, capture), the pushed configuration, usage reports; and the
//! unauthenticated health check and module download.

use std::collections::BTreeMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;

use super::{auth, bad, internal, ApiResult, S};
use crate::api::{ConfigView, Status, UsageQuery, UsageReport};
use crate::store::{self, now_s, GroupBy};

/// Liveness/readiness (no token): the store answers.
pub async fn healthz(State(s): S) -> StatusCode {
    if store::healthy(&s.app.store.read()) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The filter module, for Envoys that fetch it (`--wasm-url`). Public: it is
/// the same code for everyone, and Envoy checks its SHA-256.
pub async fn wasm_module(State(s): S) -> axum::response::Response {
    match &s.app.wasm_bytes {
        Some(b) => (
            [(axum::http::header::CONTENT_TYPE, "application/wasm")],
            b.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no module served (--wasm-file)").into_response(),
    }
}

pub async fn status(State(s): S, h: HeaderMap) -> ApiResult<Status> {
    auth(&s, &h, false)?;
    let snap = s.app.snapshot.borrow().clone();
    let mut nodes: Vec<_> = s
        .app
        .nodes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let (log_streams, ledger_rows) = {
        let c = s.app.store.read();
        (
            store::log_streams(&c).map_err(internal)?,
            store::ledger_rows(&c).map_err(internal)?,
        )
    };
    let mut lost_records_by_node = BTreeMap::new();
    for l in &log_streams {
        *lost_records_by_node.entry(l.node.clone()).or_insert(0) += l.lost;
    }
    Ok(Json(Status {
        version: snap.version,
        nodes,
        log_streams,
        lost_records_by_node,
        ledger_rows,
        ledger_write_failures: s
            .app
            .ledger_write_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        shadow: s
            .app
            .pairs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .summary(),
        capture: s.app.capture_counters.status(s.app.capture_dir.as_ref()),
    }))
}

pub async fn config(State(s): S, h: HeaderMap) -> ApiResult<ConfigView> {
    auth(&s, &h, false)?;
    let snap = s.app.snapshot.borrow().clone();
    let config = serde_json::from_str(&snap.config_json).map_err(internal)?;
    Ok(Json(ConfigView {
        version: snap.version,
        config,
    }))
}

pub async fn usage_report(
    State(s): S,
    h: HeaderMap,
    Query(q): Query<UsageQuery>,
) -> ApiResult<UsageReport> {
    auth(&s, &h, false)?;
    let by = GroupBy::parse(&q.by).ok_or_else(|| bad("by must be key, model or provider"))?;
    if !(1..=3660).contains(&q.days) {
        return Err(bad("days must be between 1 and 3660"));
    }
    let since = now_s() - q.days * 86_400;
    let rows = store::usage_report(&s.app.store.read(), by, since).map_err(internal)?;
    Ok(Json(UsageReport {
        by: q.by,
        days: q.days,
        rows,
    }))
}
