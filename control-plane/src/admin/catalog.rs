//! Providers, public models and prices.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use sluice_config::Provider;

use super::{auth, bad, internal, mutate, ApiResult, S};
use crate::api::{
    Deleted, ModelList, ModelSet, ModelSpec, ModelView, PriceList, PricesImported, ProviderList,
    ProviderSet,
};
use crate::store;

pub async fn list_providers(State(s): S, h: HeaderMap) -> ApiResult<ProviderList> {
    auth(&s, &h, false)?;
    let c = s.app.store.lock();
    let providers = store::list_providers(&c).map_err(internal)?;
    Ok(Json(ProviderList { providers }))
}

pub async fn put_provider(
    State(s): S,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(mut p): Json<Provider>,
) -> ApiResult<ProviderSet> {
    auth(&s, &h, true)?;
    p.name.clone_from(&name);
    let ((), version) = mutate(&s.app, |c| store::put_provider(c, &p).map_err(internal))?;
    Ok(Json(ProviderSet {
        provider: name,
        config_version: version,
    }))
}

pub async fn delete_provider(
    State(s): S,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Deleted> {
    auth(&s, &h, true)?;
    let ((), version) = mutate(&s.app, |c| {
        store::delete_provider(c, &name).map_err(internal)
    })?;
    Ok(Json(Deleted {
        deleted: name,
        config_version: version,
    }))
}

pub async fn list_models(State(s): S, h: HeaderMap) -> ApiResult<ModelList> {
    auth(&s, &h, false)?;
    let c = s.app.store.lock();
    let models = store::list_models(&c)
        .map_err(internal)?
        .into_iter()
        .map(|m| ModelView {
            name: m.name,
            targets: m.targets,
            retry: m.retry,
            timeouts: m.timeouts,
            cooldown: m.cooldown,
        })
        .collect();
    Ok(Json(ModelList { models }))
}

pub async fn put_model(
    State(s): S,
    h: HeaderMap,
    Path(name): Path<String>,
    Json(m): Json<ModelSpec>,
) -> ApiResult<ModelSet> {
    auth(&s, &h, true)?;
    let model = sluice_config::Model {
        name: name.clone(),
        targets: m.targets,
        retry: m.retry,
        timeouts: m.timeouts,
        cooldown: m.cooldown,
    };
    let ((), version) = mutate(&s.app, |c| store::put_model(c, &model).map_err(internal))?;
    Ok(Json(ModelSet {
        model: name,
        config_version: version,
    }))
}

pub async fn delete_model(
    State(s): S,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult<Deleted> {
    auth(&s, &h, true)?;
    let ((), version) = mutate(&s.app, |c| store::delete_model(c, &name).map_err(internal))?;
    Ok(Json(Deleted {
        deleted: name,
        config_version: version,
    }))
}

pub async fn list_prices(State(s): S, h: HeaderMap) -> ApiResult<PriceList> {
    auth(&s, &h, false)?;
    let c = s.app.store.lock();
    Ok(Json(PriceList {
        prices: store::list_prices(&c).map_err(internal)?,
    }))
}

pub async fn import_prices(
    State(s): S,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<PricesImported> {
    auth(&s, &h, true)?;
    let prices = crate::pricing::parse_litellm(&body).map_err(bad)?;
    {
        let c = s.app.store.lock();
        c.transaction(|tx| prices.iter().try_for_each(|p| store::upsert_price(tx, p)))
            .map_err(internal)?;
    }
    // Targets carry prices: push them.
    s.app.republish().map_err(internal)?;
    Ok(Json(PricesImported {
        imported: prices.len(),
    }))
}
