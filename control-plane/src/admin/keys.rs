//! Virtual keys and their budgets.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;

use super::{auth, bad, internal, mutate, not_found, ApiError, ApiResult, S};
use crate::api::{BudgetSet, KeyCreated, KeyList, KeyRevoked, KeyView, NewKey, SetBudget};
use crate::store::{self, now_s, KeyRow};

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

fn view(k: KeyRow, spend_usd: f64) -> KeyView {
    KeyView {
        id: k.id,
        prefix: k.prefix,
        name: k.name,
        owner: k.owner,
        models: k.models,
        rpm: k.rpm,
        tpm: k.tpm,
        concurrent_streams: k.concurrent_streams,
        budget_usd: k.budget_usd,
        budget_period: k.budget_period,
        expires_at: k.expires_at,
        status: k.status,
        created_at: k.created_at,
        budget_epoch: k.budget_epoch,
        budget_base_usd: k.budget_base_usd,
        budget_period_start: k.budget_period_start,
        spend_usd,
    }
}

pub async fn list_keys(State(s): S, h: HeaderMap) -> ApiResult<KeyList> {
    auth(&s, &h, false)?;
    let c = s.app.store.lock();
    let now = now_s();
    let mut keys = Vec::new();
    for k in store::list_keys(&c).map_err(internal)? {
        let spend = store::key_spend(&c, &k, now).map_err(internal)?;
        keys.push(view(k, spend));
    }
    Ok(Json(KeyList { keys }))
}

pub async fn create_key(
    State(s): S,
    h: HeaderMap,
    Json(nk): Json<NewKey>,
) -> Result<(StatusCode, Json<KeyCreated>), ApiError> {
    auth(&s, &h, true)?;
    if nk.name.trim().is_empty() {
        return Err(bad("name must not be empty"));
    }
    let period = nk.budget_period.unwrap_or_else(|| "monthly".into());
    check_period(&period)?;
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
    let now = now_s();
    let row = KeyRow {
        id: format!("key_{}", random_hex(6)?),
        sha256: sluice_config::hash_key(&secret),
        prefix: format!("{}…", secret.get(..14).unwrap_or_default()),
        name: nk.name,
        owner: nk.owner,
        models: nk.models,
        rpm: nk.rpm,
        tpm: nk.tpm,
        concurrent_streams: nk.concurrent_streams,
        budget_usd: nk.budget_usd,
        budget_period_start: store::period_start(&period, now),
        budget_period: period,
        expires_at: nk.expires_at,
        status: "active".into(),
        created_at: now,
        budget_epoch: store::now_ms(),
        budget_base_usd: nk.budget_usd,
    };
    let ((), version) = mutate(&s.app, |c| {
        for m in &row.models {
            if !store::model_exists(c, m).map_err(internal)? {
                return Err(bad(format!("unknown model '{m}'")));
            }
        }
        store::insert_key(c, &row).map_err(internal)
    })?;
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            id: row.id,
            key: secret,
            prefix: row.prefix,
            name: row.name,
            config_version: version,
            note: "the key is shown once; only its hash is stored".into(),
        }),
    ))
}

pub async fn revoke_key(
    State(s): S,
    h: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<KeyRevoked> {
    auth(&s, &h, true)?;
    let ((), version) = mutate(&s.app, |c| {
        if !store::revoke_key(c, &id).map_err(internal)? {
            return Err(not_found(format!("no key '{id}'")));
        }
        Ok(())
    })?;
    Ok(Json(KeyRevoked {
        id,
        status: "revoked".into(),
        config_version: version,
    }))
}

pub async fn set_budget(
    State(s): S,
    h: HeaderMap,
    Path(id): Path<String>,
    Json(b): Json<SetBudget>,
) -> ApiResult<BudgetSet> {
    auth(&s, &h, true)?;
    check_budget(b.usd)?;
    if let Some(p) = &b.period {
        check_period(p)?;
    }
    let ((), _) = mutate(&s.app, |c| {
        let k = store::get_key(c, &id)
            .map_err(internal)?
            .ok_or_else(|| not_found(format!("no key '{id}'")))?;
        let period = b.period.clone().unwrap_or(k.budget_period);
        store::set_budget(c, &id, b.usd, &period).map_err(internal)?;
        store::reset_budget_epoch(c, &id, now_s()).map_err(internal)?;
        Ok(())
    })?;
    // Raising or lowering a budget may block or unblock the key at once.
    crate::ingest::enforce_budgets(&s.app, None).map_err(internal)?;
    let version = s.app.snapshot.borrow().version;
    Ok(Json(BudgetSet {
        id,
        budget_usd: b.usd,
        config_version: version,
    }))
}
