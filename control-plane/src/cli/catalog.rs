//! `sluice models …`, `sluice providers …`, `sluice prices …`.

use clap::Subcommand;

use super::{print_json, print_table, Client};
use crate::api::{
    Deleted, ModelList, ModelSet, ModelSpec, PriceList, PricesImported, ProviderList, ProviderSet,
};

#[derive(Subcommand)]
pub enum ModelsCmd {
    List,
    /// Route a public model: --target provider:upstream_model[:weight] (repeatable).
    Set {
        name: String,
        #[arg(long = "target", required = true)]
        targets: Vec<String>,
    },
    Delete {
        name: String,
    },
}

#[derive(Subcommand)]
pub enum ProvidersCmd {
    List,
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

/// `provider:upstream_model[:weight]`.
fn parse_target(t: &str) -> Result<sluice_config::Target, String> {
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
    })
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
        ModelsCmd::Set { name, targets } => {
            let targets = targets
                .iter()
                .map(|t| parse_target(t))
                .collect::<Result<Vec<_>, _>>()?;
            let r: ModelSet =
                c.send("PUT", &format!("/v1/models/{name}"), &ModelSpec { targets })?;
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
