//! Admin HTTP JSON API (127.0.0.1). Bearer tokens: read-only and read-write.
//! Every change runs in one transaction together with building and
//! validating the resulting filter config: a change that would produce an
//! invalid config is rejected and nothing is written.
//!
//! One file per resource (`keys`, `catalog`, `policy`, `reports`); bodies
//! are the typed structs of `crate::api`; SQL is the store's.

mod catalog;
mod keys;
mod policy;
mod reports;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};

use crate::api::ErrorBody;
use crate::app::App;

pub struct AdminState {
    pub app: Arc<App>,
    pub rw_token: String,
    pub ro_token: Option<String>,
}

type S = State<Arc<AdminState>>;
type ApiResult<T> = Result<Json<T>, ApiError>;

pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

fn not_found(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, msg.into())
}

fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

impl From<crate::store::DbError> for ApiError {
    fn from(e: crate::store::DbError) -> Self {
        internal(e)
    }
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
    f: impl FnOnce(&crate::store::Db) -> Result<T, ApiError>,
) -> Result<(T, i64), ApiError> {
    let (out, version, json) = {
        let c = app.store.lock();
        c.transaction(|tx| {
            let out = f(tx)?;
            let (version, json) = crate::config_build::publish(tx).map_err(|e| {
                bad(format!(
                    "the change would make the gateway config invalid: {e}"
                ))
            })?;
            Ok::<_, ApiError>((out, version, json))
        })?
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
    use catalog::*;
    use keys::*;
    use policy::*;
    use reports::*;
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
        .route("/v1/endpoints", get(get_endpoints).put(put_endpoints))
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
