//! The admin API's request and response bodies, typed once and used by
//! both sides: the server (`admin/`) answers with them and the CLI (`cli/`)
//! reads them. `serde_json::Value` appears only where the API passes a
//! document through (a provider's spec, a model's targets as stored).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::store::{LogStream, Price, UsageRow};

/// Every error: `{"error": "..."}` with a 4xx/5xx status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

// ---- keys and budgets ------------------------------------------------------

/// `POST /v1/keys`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub owner: String,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub budget_usd: Option<f64>,
    /// `daily`, `monthly` (default) or `total`.
    #[serde(default)]
    pub budget_period: Option<String>,
    #[serde(default)]
    pub rpm: Option<i64>,
    #[serde(default)]
    pub tpm: Option<i64>,
    #[serde(default)]
    pub concurrent_streams: Option<i64>,
    #[serde(default)]
    pub expires_at: Option<i64>,
}

/// `POST /v1/keys` → 201: the key itself, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyCreated {
    pub id: String,
    pub key: String,
    pub prefix: String,
    pub name: String,
    pub config_version: i64,
    pub note: String,
}

/// One key as listed: everything but its hash, and what it spent this period.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyView {
    pub id: String,
    pub prefix: String,
    pub name: String,
    pub owner: String,
    pub models: Vec<String>,
    pub rpm: Option<i64>,
    pub tpm: Option<i64>,
    pub concurrent_streams: Option<i64>,
    pub budget_usd: Option<f64>,
    pub budget_period: String,
    pub expires_at: Option<i64>,
    pub status: String,
    pub created_at: i64,
    pub budget_epoch: i64,
    pub budget_base_usd: Option<f64>,
    pub budget_period_start: i64,
    pub spend_usd: f64,
}

/// `GET /v1/keys`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// `POST /v1/keys/{id}/revoke`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRevoked {
    pub id: String,
    pub status: String,
    pub config_version: i64,
}

/// `PUT /v1/keys/{id}/budget` (`usd: null` clears it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBudget {
    pub usd: Option<f64>,
    #[serde(default)]
    pub period: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BudgetSet {
    pub id: String,
    pub budget_usd: Option<f64>,
    pub config_version: i64,
}

// ---- providers, models, prices ---------------------------------------------

/// `GET /v1/providers`: the specs as configured (docs/configuration.md).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderList {
    pub providers: Vec<sluice_config::Provider>,
}

/// `PUT /v1/providers/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderSet {
    pub provider: String,
    pub config_version: i64,
}

/// `DELETE` of a provider or a model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deleted {
    pub deleted: String,
    pub config_version: i64,
}

/// `PUT /v1/models/{name}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub targets: Vec<sluice_config::Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<sluice_config::RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<sluice_config::Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<sluice_config::Cooldown>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelSet {
    pub model: String,
    pub config_version: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelView {
    pub name: String,
    pub targets: Vec<sluice_config::Target>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<sluice_config::RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<sluice_config::Timeouts>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooldown: Option<sluice_config::Cooldown>,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelList {
    pub models: Vec<ModelView>,
}

/// `GET /v1/prices`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PriceList {
    pub prices: Vec<Price>,
}

/// `POST /v1/prices/import`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PricesImported {
    pub imported: usize,
}

// ---- policy: guardrails and settings ----------------------------------------

/// `PUT /v1/guardrails`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuardrailsSet {
    pub rules: usize,
    pub config_version: i64,
}

/// `GET`/`PUT`/`DELETE` of `/v1/capture`, `/v1/hosts`, `/v1/shadow`: the
/// setting under its own name, and after a change the version.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setting<T> {
    #[serde(flatten)]
    pub value: BTreeMap<String, Option<T>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_version: Option<i64>,
}

impl<T> Setting<T> {
    pub fn new(name: &str, value: Option<T>, config_version: Option<i64>) -> Self {
        Setting {
            value: BTreeMap::from([(name.to_string(), value)]),
            config_version,
        }
    }
}

// ---- reports ---------------------------------------------------------------

/// `GET /v1/usage?days=N&by=key|model|provider`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageQuery {
    #[serde(default = "seven")]
    pub days: i64,
    #[serde(default = "by_key")]
    pub by: String,
}

fn seven() -> i64 {
    7
}

fn by_key() -> String {
    "key".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UsageReport {
    pub by: String,
    pub days: i64,
    pub rows: Vec<UsageRow>,
}

/// An Envoy connected for configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub streams: u32,
    pub acked_version: Option<String>,
    pub nacked_version: Option<String>,
    pub nack_error: Option<String>,
    pub last_seen: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PairDiff {
    pub request_id: String,
    pub primary_status: i64,
    pub shadow_status: i64,
    pub same_upstream_request: bool,
}

/// The online shadow comparison so far.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ShadowSummary {
    pub pairs: u64,
    pub diffs: u64,
    pub diff_rate: f64,
    pub shadow_errors: u64,
    pub shadow_error_rate: f64,
    pub unpaired_shadow: u64,
    pub mean_latency_delta_ms: f64,
    pub recent_diffs: Vec<PairDiff>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CaptureStatus {
    pub dir: Option<String>,
    pub received: u64,
    pub written: u64,
    pub dropped: u64,
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: i64,
    pub nodes: Vec<NodeStatus>,
    pub log_streams: Vec<LogStream>,
    pub lost_records_by_node: BTreeMap<String, i64>,
    pub ledger_rows: i64,
    pub ledger_write_failures: u64,
    pub shadow: ShadowSummary,
    pub capture: CaptureStatus,
}

/// `GET /v1/config`: the configuration pushed now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConfigView {
    pub version: i64,
    /// Passed through as pushed (the filter config schema, docs/configuration.md).
    pub config: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_is_named_by_its_resource() {
        let s = Setting::new("hosts", Some(vec!["a".to_string()]), Some(3));
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v, serde_json::json!({"hosts": ["a"], "config_version": 3}));
        let back: Setting<Vec<String>> = serde_json::from_value(v).unwrap();
        assert_eq!(back.value["hosts"], Some(vec!["a".to_string()]));
        let off = serde_json::to_value(Setting::<u8>::new("capture", None, None)).unwrap();
        assert_eq!(off, serde_json::json!({"capture": null}));
    }
}
