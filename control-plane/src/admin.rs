//! Admin HTTP JSON API (127.0.0.1). Bearer tokens: read-only and read-write.
//! Every change runs in one transaction together with building and
//! validating the resulting filter config: a change that would produce an
//! invalid config is rejected and nothing is written.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use rusqlite::{params, Connection};
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_config::{Provider, Target};

use crate::app::App;
use crate::store::{self, now_s, KeyRow};

pub struct AdminState {
    pub app: Arc<App>,
    pub rw_token: String,
    pub ro_token: Option<String>,
}

type S = State<Arc<AdminState>>;

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn auth(s: &AdminState, h: &HeaderMap, write: bool) -> Result<(), ApiError> {
    let tok = h
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let ok_rw = !s.rw_token.is_empty() && ct_eq(tok, &s.rw_token);
    let ok_ro = s.ro_token.as_deref().is_some_and(|t| ct_eq(tok, t));
    if ok_rw || (!write && ok_ro) {
        Ok(())
    } else if ok_ro {
        Err(ApiError(StatusCode::FORBIDDEN, "read-only token".into()))
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "missing or wrong admin token".into(),
        ))
    }
}

/// Constant-time comparison for tokens (admin API and gRPC, `sds.rs`).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Runs a mutation and the config rebuild in one transaction.
fn mutate<T>(
    app: &App,
    f: impl FnOnce(&Connection) -> Result<T, ApiError>,
) -> Result<(T, i64), ApiError> {
    let (out, version, json) = {
        let mut c = app.store.lock();
        let tx = c.transaction().map_err(internal)?;
        let out = f(&tx)?;
        let (version, json) = crate::config_build::publish(&tx).map_err(|e| {
            bad(format!(
                "the change would make the gateway config invalid: {e}"
            ))
        })?;
        tx.commit().map_err(internal)?;
        (out, version, json)
    };
    app.snapshot.send_if_modified(|cur| {
        if cur.version == version {
            return false;
        }
        *cur = Arc::new(crate::app::Snapshot {
            version,
            config_json: json,
        });
        true
    });
    Ok((out, version))
}

pub fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/config", get(config))
        .route("/v1/keys", get(list_keys).post(create_key))
        .route("/v1/keys/{id}/revoke", post(revoke_key))
        .route("/v1/keys/{id}/budget", put(set_budget))
        .route("/v1/providers", get(list_providers))
        .route(
            "/v1/providers/{name}",
            put(put_provider).delete(delete_provider),
        )
        .route("/v1/models", get(list_models))
        .route("/v1/models/{name}", put(put_model).delete(delete_model))
        .route("/v1/guardrails", get(get_guardrails).put(put_guardrails))
        .route(
            "/v1/capture",
            get(get_capture).put(put_capture).delete(delete_capture),
        )
        .route("/v1/hosts", get(get_hosts).put(put_hosts))
        .route(
            "/v1/shadow",
            get(get_shadow).put(put_shadow).delete(delete_shadow),
        )
        .route("/v1/prices", get(list_prices))
        .route("/v1/prices/import", post(import_prices))
        .route("/v1/usage", get(usage_report))
        .route("/wasm/sluice.wasm", get(wasm_module))
        .route("/healthz", get(healthz))
        .with_state(state)
}

/// Liveness/readiness (no token): the store answers.
async fn healthz(State(s): S) -> StatusCode {
    let ok = s
        .app
        .store
        .read()
        .query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
        .is_ok();
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The filter module, for Envoys that fetch it (`--wasm-url`). Public: it is
/// the same code for everyone, and Envoy checks its SHA-256.
async fn wasm_module(State(s): S) -> axum::response::Response {
    use axum::response::IntoResponse;
    match &s.app.wasm_bytes {
        Some(b) => (
            [(axum::http::header::CONTENT_TYPE, "application/wasm")],
            b.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no module served (--wasm-file)").into_response(),
    }
}

async fn status(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
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
    let c = s.app.store.read();
    let mut st = c
        .prepare("SELECT node, vm, max_seq, received FROM log_streams ORDER BY node, vm")
        .map_err(internal)?;
    let streams: Vec<Value> = st
        .query_map([], |r| {
            let (max, got): (i64, i64) = (r.get(2)?, r.get(3)?);
            Ok(
                json!({"node": r.get::<_, String>(0)?, "vm": r.get::<_, String>(1)?,
                      "max_seq": max, "received": got, "lost": (max - got).max(0)}),
            )
        })
        .map_err(internal)?
        .collect::<Result<_, _>>()
        .map_err(internal)?;
    let mut lost_by_node = serde_json::Map::new();
    for s in &streams {
        let n = s["node"].as_str().unwrap_or_default().to_string();
        let v = lost_by_node.get(&n).and_then(Value::as_i64).unwrap_or(0);
        lost_by_node.insert(n, json!(v + s["lost"].as_i64().unwrap_or(0)));
    }
    let ledger: i64 = c
        .query_row("SELECT COUNT(*) FROM usage", [], |r| r.get(0))
        .map_err(internal)?;
    Ok(Json(json!({
        "version": snap.version,
        "nodes": nodes,
        "log_streams": streams,
        "lost_records_by_node": lost_by_node,
        "ledger_rows": ledger,
        "ledger_write_failures": s
            .app
            .ledger_write_failures
            .load(std::sync::atomic::Ordering::Relaxed),
        "shadow": s.app.pairs.lock().unwrap_or_else(|p| p.into_inner()).summary(),
        "capture": s.app.capture_counters.status(s.app.capture_dir.as_ref()),
    })))
}

async fn config(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, false)?;
    let snap = s.app.snapshot.borrow().clone();
    let cfg: Value = serde_json::from_str(&snap.config_json).map_err(internal)?;
    Ok(Json(json!({"version": snap.version, "config": cfg})))
}

async fn list_keys(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, false)?;
    let c = s.app.store.lock();
    let now = now_s();
    let mut out = Vec::new();
    for k in store::list_keys(&c).map_err(internal)? {
        let spend = store::key_spend(&c, &k, now).map_err(internal)?;
        let mut v = serde_json::to_value(&k).map_err(internal)?;
        if let Some(m) = v.as_object_mut() {
            m.remove("sha256");
            m.insert("spend_usd".into(), json!(spend));
        }
        out.push(v);
    }
    Ok(Json(json!({"keys": out})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKey {
    name: String,
    #[serde(default)]
    owner: String,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    budget_usd: Option<f64>,
    #[serde(default)]
    budget_period: Option<String>,
    #[serde(default)]
    rpm: Option<i64>,
    #[serde(default)]
    tpm: Option<i64>,
    #[serde(default)]
    concurrent_streams: Option<i64>,
    #[serde(default)]
    expires_at: Option<i64>,
}

fn random_hex(bytes: usize) -> Result<String, ApiError> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(internal)?;
    Ok(hex::encode(buf))
}

fn check_period(p: &str) -> Result<(), ApiError> {
    match p {
        "daily" | "monthly" | "total" => Ok(()),
        _ => Err(bad("budget_period must be daily, monthly or total")),
    }
}

fn check_budget(b: Option<f64>) -> Result<(), ApiError> {
    match b {
        Some(v) if !(v.is_finite() && v >= 0.0) => Err(bad("budget_usd must be a number >= 0")),
        _ => Ok(()),
    }
}

async fn create_key(
    State(s): S,
    h: HeaderMap,
    Json(nk): Json<NewKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    auth(&s, &h, true)?;
    if nk.name.trim().is_empty() {
        return Err(bad("name must not be empty"));
    }
    let period = nk.budget_period.unwrap_or_else(|| "monthly".into());
    check_period(&period)?;
    let period_for_start = period.clone();
    check_budget(nk.budget_usd)?;
    for (name, v) in [
        ("rpm", nk.rpm),
        ("tpm", nk.tpm),
        ("concurrent_streams", nk.concurrent_streams),
    ] {
        if v.is_some_and(|v| v < 0) {
            return Err(bad(format!("{name} must be a number >= 0")));
        }
    }
    let secret = format!("sk-sluice-{}", random_hex(24)?);
    let row = KeyRow {
        id: format!("key_{}", random_hex(6)?),
        sha256: sluice_config::hash_key(&secret),
        prefix: format!("{}…", &secret[..14]),
        name: nk.name,
        owner: nk.owner,
        models: nk.models,
        rpm: nk.rpm,
        tpm: nk.tpm,
        concurrent_streams: nk.concurrent_streams,
        budget_usd: nk.budget_usd,
        budget_period: period,
        expires_at: nk.expires_at,
        status: "active".into(),
        created_at: now_s(),
        budget_epoch: store::now_ms(),
        budget_base_usd: nk.budget_usd,
        budget_period_start: store::period_start(&period_for_start, now_s()),
    };
    let models = row.models.clone();
    let ((), version) = mutate(&s.app, |c| {
        for m in &models {
            let n: i64 = c
                .query_row("SELECT COUNT(*) FROM models WHERE name = ?1", [m], |r| {
                    r.get(0)
                })
                .map_err(internal)?;
            if n == 0 {
                return Err(bad(format!("unknown model '{m}'")));
            }
        }
        store::insert_key(c, &row).map_err(internal)
    })?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": row.id, "key": secret, "prefix": row.prefix, "name": row.name,
                    "config_version": version,
                    "note": "the key is shown once; only its hash is stored"}),
        ),
    ))
}

async fn revoke_key(
    State(s): S,
    h: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, true)?;
    let ((), version) = mutate(&s.app, |c| {
        let n = c
            .execute("UPDATE keys SET status = 'revoked' WHERE id = ?1", [&id])
            .map_err(internal)?;
        if n == 0 {
            return Err(ApiError(StatusCode::NOT_FOUND, format!("no key '{id}'")));
        }
        Ok(())
    })?;
    Ok(Json(
        json!({"id": id, "status": "revoked", "config_version": version}),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Budget {
    usd: Option<f64>,
    #[serde(default)]
    period: Option<String>,
}

async fn set_budget(
    State(s): S,
    h: HeaderMap,
    Path(id): Path<String>,
    Json(b): Json<Budget>,
) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, true)?;
    check_budget(b.usd)?;
    if let Some(p) = &b.period {
        check_period(p)?;
    }
    let ((), _) = mutate(&s.app, |c| {
        let k = store::get_key(c, &id)
            .map_err(internal)?
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no key '{id}'")))?;
        let period = b.period.clone().unwrap_or(k.budget_period);
        c.execute(
            "UPDATE keys SET budget_usd = ?1, budget_period = ?2 WHERE id = ?3",
            params![b.usd, period, id],
        )
        .map_err(internal)?;
        store::reset_budget_epoch(c, &id, now_s()).map_err(internal)?;
        Ok(())
    })?;
    // Raising or lowering a budget may block or unblock the key at once.
    crate::ingest::enforce_budgets(&s.app, None).map_err(internal)?;
    let version = s.app.snapshot.borrow().version;
    Ok(Json(
        json!({"id": id, "budget_usd": b.usd, "config_version": version}),
    ))
}

async fn list_providers(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, false)?;
    let c = s.app.store.lock();
    let mut st = c
        .prepare("SELECT spec FROM providers ORDER BY name")
        .map_err(internal)?;
    let rows: Vec<Value> = st
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(internal)?
        .filter_map(|r| r.ok().and_then(|s| serde_json::from_str(&s).ok()))
        .collect();
    Ok(Json(json!({"providers": rows})))
}

async fn put_provider(
    State(s): S,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(mut p): Json<Provider>,
) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, true)?;
    p.name.clone_from(&name);
    let spec = serde_json::to_string(&p).map_err(internal)?;
    let ((), version) = mutate(&s.app, |c| {
        c.execute(
            "INSERT INTO providers (name, spec) VALUES (?1, ?2)
             ON CONFLICT(name) DO UPDATE SET spec = excluded.spec",
            params![name, spec],
        )
        .map_err(internal)?;
        Ok(())
    })?;
    Ok(Json(json!({"provider": name, "config_version": version})))
}

async fn delete_provider(
    State(s): S,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, true)?;
    let ((), version) = mutate(&s.app, |c| {
        c.execute("DELETE FROM providers WHERE name = ?1", [&name])
            .map_err(internal)?;
        Ok(())
    })?;
    Ok(Json(json!({"deleted": name, "config_version": version})))
}

async fn list_models(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, false)?;
    let c = s.app.store.lock();
    let mut st = c
        .prepare("SELECT name, targets FROM models ORDER BY position, name")
        .map_err(internal)?;
    let rows: Vec<Value> = st
        .query_map([], |r| {
            let t: String = r.get(1)?;
            Ok(json!({"name": r.get::<_, String>(0)?,
                      "targets": serde_json::from_str::<Value>(&t).unwrap_or(Value::Null)}))
        })
        .map_err(internal)?
        .collect::<Result<_, _>>()
        .map_err(internal)?;
    Ok(Json(json!({"models": rows})))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelSpec {
    targets: Vec<Target>,
}

async fn put_model(
    State(s): S,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(m): Json<ModelSpec>,
) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, true)?;
    let targets = serde_json::to_string(&m.targets).map_err(internal)?;
    let ((), version) = mutate(&s.app, |c| {
        c.execute(
            "INSERT INTO models (name, position, targets)
             VALUES (?1, (SELECT COALESCE(MAX(position), 0) + 1 FROM models), ?2)
             ON CONFLICT(name) DO UPDATE SET targets = excluded.targets",
            params![name, targets],
        )
        .map_err(internal)?;
        Ok(())
    })?;
    Ok(Json(json!({"model": name, "config_version": version})))
}

async fn delete_model(
    State(s): S,
    h: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, true)?;
    let ((), version) = mutate(&s.app, |c| {
        c.execute("DELETE FROM models WHERE name = ?1", [&name])
            .map_err(internal)?;
        Ok(())
    })?;
    Ok(Json(json!({"deleted": name, "config_version": version})))
}

async fn get_guardrails(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, false)?;
    let c = s.app.store.lock();
    let spec: Option<String> = c
        .query_row("SELECT spec FROM guardrail_policy WHERE id = 1", [], |r| {
            r.get(0)
        })
        .ok();
    let v = spec
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .unwrap_or(json!({"rules": []}));
    Ok(Json(v))
}

async fn put_guardrails(
    State(s): S,
    h: HeaderMap,
    Json(g): Json<sluice_config::Guardrails>,
) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, true)?;
    let spec = serde_json::to_string(&g).map_err(internal)?;
    let ((), version) = mutate(&s.app, |c| {
        c.execute(
            "INSERT INTO guardrail_policy (id, spec) VALUES (1, ?1)
             ON CONFLICT(id) DO UPDATE SET spec = excluded.spec",
            [spec],
        )
        .map_err(internal)?;
        Ok(())
    })?;
    Ok(Json(
        json!({"rules": g.rules.len(), "config_version": version}),
    ))
}

async fn get_setting(s: &AdminState, h: &HeaderMap, name: &str) -> Result<Json<Value>, ApiError> {
    auth(s, h, false)?;
    let c = s.app.store.lock();
    let v: Option<Value> = store::get_setting(&c, name).map_err(internal)?;
    Ok(Json(json!({ name: v })))
}

async fn put_setting<T: serde::Serialize>(
    s: &AdminState,
    h: &HeaderMap,
    name: &str,
    v: Option<T>,
) -> Result<Json<Value>, ApiError> {
    auth(s, h, true)?;
    let shown = serde_json::to_value(&v).map_err(internal)?;
    let ((), version) = mutate(&s.app, |c| {
        store::put_setting(c, name, v.as_ref()).map_err(internal)
    })?;
    Ok(Json(json!({ name: shown, "config_version": version })))
}

/// Traffic capture for replay baselines (`capture` in the plugin config).
async fn get_capture(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    get_setting(&s, &h, "capture").await
}

async fn put_capture(
    State(s): S,
    h: HeaderMap,
    Json(v): Json<sluice_config::CaptureConfig>,
) -> Result<Json<Value>, ApiError> {
    put_setting(&s, &h, "capture", Some(v)).await
}

async fn delete_capture(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    put_setting::<sluice_config::CaptureConfig>(&s, &h, "capture", None).await
}

/// The hosts the gateway serves (`hosts` in the plugin config; empty: all).
async fn get_hosts(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    get_setting(&s, &h, "hosts").await
}

async fn put_hosts(
    State(s): S,
    h: HeaderMap,
    Json(v): Json<Vec<String>>,
) -> Result<Json<Value>, ApiError> {
    // Validated with the rest of the config on publish (a bad name is 400).
    put_setting(&s, &h, "hosts", (!v.is_empty()).then_some(v)).await
}

/// The pushed filter's role in an online shadow comparison.
async fn get_shadow(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    get_setting(&s, &h, "shadow").await
}

async fn put_shadow(
    State(s): S,
    h: HeaderMap,
    Json(v): Json<sluice_config::ShadowConfig>,
) -> Result<Json<Value>, ApiError> {
    put_setting(&s, &h, "shadow", Some(v)).await
}

async fn delete_shadow(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    put_setting::<sluice_config::ShadowConfig>(&s, &h, "shadow", None).await
}

async fn list_prices(State(s): S, h: HeaderMap) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, false)?;
    let c = s.app.store.lock();
    Ok(Json(
        json!({"prices": store::list_prices(&c).map_err(internal)?}),
    ))
}

async fn import_prices(
    State(s): S,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, true)?;
    let prices = crate::pricing::parse_litellm(&body).map_err(bad)?;
    let mut c = s.app.store.lock();
    let tx = c.transaction().map_err(internal)?;
    for p in &prices {
        store::upsert_price(&tx, p).map_err(internal)?;
    }
    tx.commit().map_err(internal)?;
    drop(c);
    // Targets carry prices: push them.
    s.app.republish().map_err(internal)?;
    Ok(Json(json!({"imported": prices.len()})))
}

#[derive(Deserialize)]
struct ReportQuery {
    #[serde(default = "seven")]
    days: i64,
    #[serde(default = "by_key")]
    by: String,
}

fn seven() -> i64 {
    7
}
fn by_key() -> String {
    "key".into()
}

async fn usage_report(
    State(s): S,
    h: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Result<Json<Value>, ApiError> {
    auth(&s, &h, false)?;
    let col = match q.by.as_str() {
        "key" => "key_id",
        "model" => "model",
        "provider" => "provider",
        _ => return Err(bad("by must be key, model or provider")),
    };
    if !(1..=3660).contains(&q.days) {
        return Err(bad("days must be between 1 and 3660"));
    }
    let since = now_s() - q.days * 86_400;
    let c = s.app.store.read();
    let sql = format!(
        "SELECT COALESCE({col}, '-'), COUNT(*), SUM(prompt_tokens), SUM(completion_tokens),
                SUM(cached_tokens), SUM(cost_usd), SUM(status >= 400)
         FROM usage WHERE ts >= ?1 GROUP BY 1 ORDER BY 6 DESC, 1"
    );
    let mut st = c.prepare(&sql).map_err(internal)?;
    let rows: Vec<Value> = st
        .query_map([since], |r| {
            Ok(json!({"group": r.get::<_, String>(0)?, "requests": r.get::<_, i64>(1)?,
                      "prompt_tokens": r.get::<_, i64>(2)?, "completion_tokens": r.get::<_, i64>(3)?,
                      "cached_tokens": r.get::<_, i64>(4)?, "cost_usd": r.get::<_, f64>(5)?,
                      "errors": r.get::<_, i64>(6)?}))
        })
        .map_err(internal)?
        .collect::<Result<_, _>>()
        .map_err(internal)?;
    Ok(Json(json!({"by": q.by, "days": q.days, "rows": rows})))
}
