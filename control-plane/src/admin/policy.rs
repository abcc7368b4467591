//! Policy the filter applies: guardrails, traffic capture, served hosts and
//! the online shadow role.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sluice_config::{CaptureConfig, Guardrails, ShadowConfig};

use super::{auth, internal, mutate, AdminState, ApiResult, S};
use crate::api::{GuardrailsSet, Setting};
use crate::store;

pub async fn get_guardrails(State(s): S, h: HeaderMap) -> ApiResult<Guardrails> {
    auth(&s, &h, false)?;
    let c = s.app.store.lock();
    let g = match store::get_guardrails(&c).map_err(internal)? {
        Some(g) => g,
        // No policy: no rules.
        None => serde_json::from_str("{}").map_err(internal)?,
    };
    Ok(Json(g))
}

pub async fn put_guardrails(
    State(s): S,
    h: HeaderMap,
    Json(g): Json<Guardrails>,
) -> ApiResult<GuardrailsSet> {
    auth(&s, &h, true)?;
    let ((), version) = mutate(&s.app, |c| store::put_guardrails(c, &g).map_err(internal))?;
    Ok(Json(GuardrailsSet {
        rules: g.rules.len(),
        config_version: version,
    }))
}

fn get_setting<T: DeserializeOwned>(
    s: &AdminState,
    h: &HeaderMap,
    name: &str,
) -> ApiResult<Setting<T>> {
    auth(s, h, false)?;
    let c = s.app.store.lock();
    let v: Option<T> = store::get_setting(&c, name).map_err(internal)?;
    Ok(Json(Setting::new(name, v, None)))
}

fn put_setting<T: Serialize>(
    s: &AdminState,
    h: &HeaderMap,
    name: &str,
    v: Option<T>,
) -> ApiResult<Setting<T>> {
    auth(s, h, true)?;
    let ((), version) = mutate(&s.app, |c| {
        store::put_setting(c, name, v.as_ref()).map_err(internal)
    })?;
    Ok(Json(Setting::new(name, v, Some(version))))
}

/// Traffic capture for replay baselines (`capture` in the plugin config).
pub async fn get_capture(State(s): S, h: HeaderMap) -> ApiResult<Setting<CaptureConfig>> {
    get_setting(&s, &h, "capture")
}

pub async fn put_capture(
    State(s): S,
    h: HeaderMap,
    Json(v): Json<CaptureConfig>,
) -> ApiResult<Setting<CaptureConfig>> {
    put_setting(&s, &h, "capture", Some(v))
}

pub async fn delete_capture(State(s): S, h: HeaderMap) -> ApiResult<Setting<CaptureConfig>> {
    put_setting(&s, &h, "capture", None)
}

/// The hosts the gateway serves (`hosts` in the plugin config; empty: all).
pub async fn get_hosts(State(s): S, h: HeaderMap) -> ApiResult<Setting<Vec<String>>> {
    get_setting(&s, &h, "hosts")
}

pub async fn put_hosts(
    State(s): S,
    h: HeaderMap,
    Json(v): Json<Vec<String>>,
) -> ApiResult<Setting<Vec<String>>> {
    // Validated with the rest of the config on publish (a bad name is 400).
    put_setting(&s, &h, "hosts", (!v.is_empty()).then_some(v))
}

/// Provider endpoints passed through metered (`endpoints` in the plugin
/// config; empty: none).
pub async fn get_endpoints(
    State(s): S,
    h: HeaderMap,
) -> ApiResult<Setting<Vec<sluice_config::PassthroughEndpoint>>> {
    get_setting(&s, &h, "endpoints")
}

pub async fn put_endpoints(
    State(s): S,
    h: HeaderMap,
    Json(v): Json<Vec<sluice_config::PassthroughEndpoint>>,
) -> ApiResult<Setting<Vec<sluice_config::PassthroughEndpoint>>> {
    // Validated with the rest of the config on publish (an unknown
    // provider is a 400, and nothing is written).
    put_setting(&s, &h, "endpoints", (!v.is_empty()).then_some(v))
}

/// The pushed filter's role in an online shadow comparison.
pub async fn get_shadow(State(s): S, h: HeaderMap) -> ApiResult<Setting<ShadowConfig>> {
    get_setting(&s, &h, "shadow")
}

pub async fn put_shadow(
    State(s): S,
    h: HeaderMap,
    Json(v): Json<ShadowConfig>,
) -> ApiResult<Setting<ShadowConfig>> {
    put_setting(&s, &h, "shadow", Some(v))
}

pub async fn delete_shadow(State(s): S, h: HeaderMap) -> ApiResult<Setting<ShadowConfig>> {
    put_setting(&s, &h, "shadow", None)
}
