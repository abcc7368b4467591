//! `sluice keys …`, `sluice budgets …`.

use clap::Subcommand;

use super::{opt, print_json, print_table, Client};
use crate::api::{BudgetSet, KeyCreated, KeyList, KeyRevoked, NewKey, SetBudget};

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a virtual key; the key is printed once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long, default_value = "")]
        owner: String,
        /// Allowed models (comma-separated); all when omitted.
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        #[arg(long)]
        budget_usd: Option<f64>,
        /// daily, monthly or total.
        #[arg(long)]
        period: Option<String>,
        #[arg(long)]
        expires_at: Option<i64>,
        /// Requests per minute (per Envoy).
        #[arg(long)]
        rpm: Option<i64>,
        /// Tokens per minute (per Envoy).
        #[arg(long)]
        tpm: Option<i64>,
        /// Streams open at once (per Envoy).
        #[arg(long)]
        concurrent_streams: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum BudgetsCmd {
    /// Set (or with --usd none, clear) a key's budget.
    Set {
        key_id: String,
        /// USD, or "none".
        #[arg(long)]
        usd: String,
        #[arg(long)]
        period: Option<String>,
    },
}

pub fn run_keys(c: &Client, cmd: KeysCmd) -> Result<(), String> {
    match cmd {
        KeysCmd::Create {
            name,
            owner,
            models,
            budget_usd,
            period,
            expires_at,
            rpm,
            tpm,
            concurrent_streams,
            json,
        } => {
            let body = NewKey {
                name,
                owner,
                models,
                budget_usd,
                budget_period: period,
                rpm,
                tpm,
                concurrent_streams,
                expires_at,
            };
            let k: KeyCreated = c.send("POST", "/v1/keys", &body)?;
            if json {
                return print_json(&k);
            }
            println!("created {} ({})", k.id, k.name);
            println!("key: {}", k.key);
            println!("(shown once: only its hash is stored)");
        }
        KeysCmd::List { json } => {
            let list: KeyList = c.get("/v1/keys")?;
            if json {
                return print_json(&list);
            }
            let rows: Vec<Vec<String>> = list
                .keys
                .into_iter()
                .map(|k| {
                    vec![
                        k.id,
                        k.prefix,
                        k.name,
                        k.status,
                        format!("{:.4}", k.spend_usd),
                        match k.budget_usd {
                            Some(b) => format!("{b:.2}/{}", k.budget_period),
                            None => "-".into(),
                        },
                    ]
                })
                .collect();
            print_table(
                &["ID", "PREFIX", "NAME", "STATUS", "SPEND_USD", "BUDGET"],
                &rows,
            );
        }
        KeysCmd::Revoke { id } => {
            let r: KeyRevoked = c.send("POST", &format!("/v1/keys/{id}/revoke"), &())?;
            println!("revoked {} (config version {})", r.id, r.config_version);
        }
    }
    Ok(())
}

pub fn run_budgets(c: &Client, cmd: BudgetsCmd) -> Result<(), String> {
    match cmd {
        BudgetsCmd::Set {
            key_id,
            usd,
            period,
        } => {
            let usd: Option<f64> = if usd == "none" {
                None
            } else {
                Some(
                    usd.parse()
                        .map_err(|_| format!("--usd: not a number: {usd}"))?,
                )
            };
            let r: BudgetSet = c.send(
                "PUT",
                &format!("/v1/keys/{key_id}/budget"),
                &SetBudget { usd, period },
            )?;
            println!(
                "budget of {key_id} set (config version {})",
                opt(Some(r.config_version))
            );
        }
    }
    Ok(())
}
