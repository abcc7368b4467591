//! `sluice models …`, `sluice providers …`, `sluice prices …`.

use clap::Subcommand;

use super::{print_json, print_table, Client};
use crate::api::{
    Deleted, ModelList, ModelSet, ModelSpec, PriceList, PricesImported, ProviderList, ProviderSet,
};

#[derive(Subcommand)]
pub enum ModelsCmd {
    List,
    /// Route a public model: --target provider:upstream_model[:weight]
    /// (repeatable: a weighted split), --fallback the same (each one the
    /// next priority), and its resilience policy (docs/routing.md).
    Set {
        name: String,
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
        /// A fallback target; repeat for a fallback of the fallback.
        #[arg(long = "fallback")]
        fallbacks: Vec<String>,
        /// Attempts in all, the first included.
        #[arg(long)]
        retry_attempts: Option<u32>,
        /// Failures retried: rate_limited, server_error, overloaded,
        /// connect_failure, reset, timeout (comma-separated).
        #[arg(long, value_delimiter = ',')]
        retry_on: Vec<String>,
        #[arg(long)]
        first_byte_timeout_ms: Option<u64>,
        #[arg(long)]
        total_timeout_ms: Option<u64>,
        /// Consecutive failures that take a target out for --cooldown-seconds.
        #[arg(long)]
        cooldown_failures: Option<u32>,
        #[arg(long)]
        cooldown_seconds: Option<u64>,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ProvidersCmd {
    List,
    /// Add or replace a provider by URL: the control plane pushes its Envoy
    /// cluster (https: TLS with SNI and the system CA bundle).
    Add {
        #[arg(long)]
        name: String,
        /// openai (any OpenAI-compatible API), anthropic, gemini,
        /// openai-responses (a provider that serves only /responses).
        #[arg(long)]
        kind: String,
        /// Another client API the provider serves natively, by kind
        /// (repeatable): `--serves openai-responses` on an openai provider
        /// passes Responses clients through to its /responses.
        #[arg(long)]
        serves: Vec<String>,
        /// e.g. https://api.openai.com/v1, http://10.0.0.5:8000/v1
        #[arg(long)]
        base_url: String,
        /// Environment variable holding the provider's key (Envoy's, or the
        /// control plane's when it serves it over SDS: --provider-secrets).
        #[arg(long)]
        credential_env: Option<String>,
        /// How the key is sent: bearer (default), header:NAME, none.
        #[arg(long, default_value = "bearer")]
        auth: String,
    },
    /// Add or replace a provider from a JSON spec (docs/configuration.md).
    Set {
        name: String,
        spec_json: String,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum PricesCmd {
    List,
    /// Import LiteLLM's model_prices_and_context_window.json.
    Import {
        file: std::path::PathBuf,
    },
}

/// `provider:upstream_model[:weight]`, at `priority`.
fn parse_target(t: &str, priority: u32) -> Result<sluice_config::Target, String> {
    let parts: Vec<&str> = t.split(':').collect();
    let (provider, model, weight) = match parts.as_slice() {
        [p, m] => (*p, *m, 1u32),
        [p, m, w] => (*p, *m, w.parse().map_err(|_| format!("bad weight in {t}"))?),
        _ => return Err(format!("--target {t}: want provider:model[:weight]")),
    };
    Ok(sluice_config::Target {
        provider: provider.to_string(),
        model: model.to_string(),
        weight,
        price: None,
        priority,
    })
}

/// `bearer`, `header:NAME`, `none`.
fn parse_auth(a: &str) -> Result<sluice_config::ProviderAuth, String> {
    match a.split_once(':') {
        None if a == "bearer" => Ok(sluice_config::ProviderAuth::Bearer),
        None if a == "none" => Ok(sluice_config::ProviderAuth::None),
        Some(("header", name)) if !name.is_empty() => Ok(sluice_config::ProviderAuth::Header {
            name: name.to_string(),
        }),
        _ => Err(format!("--auth {a}: want bearer, header:NAME or none")),
    }
}

pub fn run_models(c: &Client, cmd: ModelsCmd) -> Result<(), String> {
    match cmd {
        ModelsCmd::List => {
            let list: ModelList = c.get("/v1/models")?;
            let mut rows = Vec::new();
            for m in list.models {
                let targets = serde_json::to_string(&m.targets).map_err(|e| e.to_string())?;
                rows.push(vec![m.name, targets]);
            }
            print_table(&["MODEL", "TARGETS"], &rows);
        }
        ModelsCmd::Set {
            name,
            targets,
            fallbacks,
            retry_attempts,
            retry_on,
            first_byte_timeout_ms,
            total_timeout_ms,
            cooldown_failures,
            cooldown_seconds,
        } => {
            let mut all = targets
                .iter()
                .map(|t| parse_target(t, 0))
                .collect::<Result<Vec<_>, _>>()?;
            for (i, t) in fallbacks.iter().enumerate() {
                let priority = u32::try_from(i).unwrap_or(u32::MAX).saturating_add(1);
                all.push(parse_target(t, priority)?);
            }
            let retry = if retry_attempts.is_some() || !retry_on.is_empty() {
                let mut r = sluice_config::RetryPolicy::default();
                if let Some(n) = retry_attempts {
                    r.attempts = n;
                }
                if !retry_on.is_empty() {
                    r.on = retry_on
                        .iter()
                        .map(|o| {
                            serde_json::from_value(serde_json::Value::String(o.trim().into()))
                                .map_err(|_| format!("--retry-on {o}: unknown failure"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                Some(r)
            } else {
                None
            };
            let timeouts = (first_byte_timeout_ms.is_some() || total_timeout_ms.is_some())
                .then_some(sluice_config::Timeouts {
                    first_byte_ms: first_byte_timeout_ms,
                    total_ms: total_timeout_ms,
                });
            let cooldown = (cooldown_failures.is_some() || cooldown_seconds.is_some()).then(|| {
                sluice_config::Cooldown {
                    consecutive_failures: cooldown_failures.unwrap_or(5),
                    seconds: cooldown_seconds.unwrap_or(30),
                }
            });
            let spec = ModelSpec {
                targets: all,
                retry,
                timeouts,
                cooldown,
            };
            let r: ModelSet = c.send("PUT", &format!("/v1/models/{name}"), &spec)?;
            println!("model {name} set (config version {})", r.config_version);
        }
        ModelsCmd::Delete { name } => {
            let r: Deleted = c.delete(&format!("/v1/models/{name}"))?;
            println!("model {name} deleted (config version {})", r.config_version);
        }
    }
    Ok(())
}

pub fn run_providers(c: &Client, cmd: ProvidersCmd) -> Result<(), String> {
    match cmd {
        ProvidersCmd::List => {
            let list: ProviderList = c.get("/v1/providers")?;
            print_json(&list)?;
        }
        ProvidersCmd::Add {
            name,
            kind,
            base_url,
            credential_env,
            auth,
            serves,
        } => {
            let auth = if credential_env.is_none() && auth == "bearer" {
                sluice_config::ProviderAuth::None
            } else {
                parse_auth(&auth)?
            };
            let spec = sluice_config::Provider {
                name: name.clone(),
                kind: sluice_config::ProviderKind(kind),
                base_url: Some(base_url),
                cluster: String::new(),
                host: String::new(),
                base_path: None,
                auth,
                api_key_env: credential_env,
                api_key_secret: None,
                serves: serves
                    .into_iter()
                    .map(sluice_config::ProviderKind)
                    .collect(),
            };
            let r: ProviderSet = c.send("PUT", &format!("/v1/providers/{name}"), &spec)?;
            println!(
                "provider {name} added (config version {})",
                r.config_version
            );
        }
        ProvidersCmd::Set { name, spec_json } => {
            let mut spec: serde_json::Value =
                serde_json::from_str(&spec_json).map_err(|e| format!("spec is not JSON: {e}"))?;
            if let Some(o) = spec.as_object_mut() {
                o.insert("name".into(), serde_json::Value::String(name.clone()));
            }
            let spec: sluice_config::Provider =
                serde_json::from_value(spec).map_err(|e| format!("provider spec: {e}"))?;
            let r: ProviderSet = c.send("PUT", &format!("/v1/providers/{name}"), &spec)?;
            println!("provider {name} set (config version {})", r.config_version);
        }
        ProvidersCmd::Delete { name } => {
            let r: Deleted = c.delete(&format!("/v1/providers/{name}"))?;
            println!(
                "provider {name} deleted (config version {})",
                r.config_version
            );
        }
    }
    Ok(())
}

pub fn run_prices(c: &Client, cmd: PricesCmd) -> Result<(), String> {
    match cmd {
        PricesCmd::List => {
            let list: PriceList = c.get("/v1/prices")?;
            let per_m = |x: Option<f64>| x.map_or("-".into(), |f| format!("{:.4}", f * 1e6));
            let rows: Vec<Vec<String>> = list
                .prices
                .into_iter()
                .map(|p| {
                    vec![
                        p.model,
                        per_m(Some(p.input_per_token)),
                        per_m(Some(p.output_per_token)),
                        per_m(p.cached_input_per_token),
                        p.source,
                    ]
                })
                .collect();
            print_table(
                &["MODEL", "IN $/M", "OUT $/M", "CACHED $/M", "SOURCE"],
                &rows,
            );
        }
        PricesCmd::Import { file } => {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let r: PricesImported = c.send_raw("POST", "/v1/prices/import", bytes)?;
            println!("imported {} prices", r.imported);
        }
    }
    Ok(())
}
