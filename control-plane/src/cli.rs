//! CLI subcommands: thin clients of the admin API.

use clap::Subcommand;
use serde_json::{json, Value};

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
pub enum GuardrailsCmd {
    Show,
    /// Replace the guardrail policy with a JSON file (docs/guardrails.md).
    Set {
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
pub enum CaptureCmd {
    Show,
    /// Capture traffic for replay baselines (docs/replay.md).
    Set {
        /// Fraction captured after the per-stratum minimum (0–1).
        #[arg(long, default_value_t = 0.01)]
        sample_rate: f64,
        /// Requests captured per (model, tools, stream) stratum first.
        #[arg(long, default_value_t = 5)]
        min_per_stratum: u32,
        /// Records larger than this are dropped.
        #[arg(long, default_value_t = 256 * 1024)]
        max_record_bytes: u64,
    },
    /// Stop capturing.
    Off,
}

#[derive(Subcommand)]
pub enum HostsCmd {
    Show,
    /// Serve only these hosts (`llm.example.com`, `*.example.com`); other
    /// hosts on the same listener pass through untouched. None: all hosts.
    Set {
        hosts: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum ShadowCmd {
    Show,
    /// The pushed filter reports digests as the `primary` (or `shadow`) of
    /// an online comparison.
    Set {
        #[arg(long, default_value = "primary")]
        role: String,
    },
    Off,
}

#[derive(Subcommand)]
pub enum PricesCmd {
    List,
    /// Import LiteLLM's model_prices_and_context_window.json.
    Import {
        file: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
pub enum UsageCmd {
    Report {
        #[arg(long, default_value_t = 7)]
        days: i64,
        /// key, model or provider.
        #[arg(long, default_value = "key")]
        by: String,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        csv: bool,
    },
}

pub enum Command {
    Keys(KeysCmd),
    Budgets(BudgetsCmd),
    Models(ModelsCmd),
    Providers(ProvidersCmd),
    Prices(PricesCmd),
    Usage(UsageCmd),
    Guardrails(GuardrailsCmd),
    Capture(CaptureCmd),
    Hosts(HostsCmd),
    Shadow(ShadowCmd),
    Status { json: bool },
}

struct Client {
    base: String,
    token: String,
    agent: ureq::Agent,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<Vec<u8>>) -> Result<Value, String> {
        let url = format!("{}{}", self.base.trim_end_matches('/'), path);
        let auth = format!("Bearer {}", self.token);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", &auth).call(),
            ("DELETE", _) => self
                .agent
                .delete(&url)
                .header("Authorization", &auth)
                .call(),
            (m, b) => {
                let b = b.unwrap_or_default();
                let req = if m == "PUT" {
                    self.agent.put(&url)
                } else {
                    self.agent.post(&url)
                };
                req.header("Authorization", &auth)
                    .header("Content-Type", "application/json")
                    .send(&b[..])
            }
        };
        let mut resp =
            resp.map_err(|e| format!("cannot reach the admin API at {}: {e}", self.base))?;
        let status = resp.status().as_u16();
        let v: Value = resp
            .body_mut()
            .read_json()
            .map_err(|e| format!("bad response from the admin API: {e}"))?;
        if status >= 400 {
            return Err(v["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {status}")));
        }
        Ok(v)
    }
}

fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(headers.iter().map(|s| s.to_string()).collect()));
    for r in rows {
        println!("{}", line(r.clone()));
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

fn csv_cell(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

pub fn run(base: &str, token: &str, cmd: Command) -> Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(std::time::Duration::from_secs(30)))
        .build()
        .into();
    let c = Client {
        base: base.to_string(),
        token: token.to_string(),
        agent,
    };
    match cmd {
        Command::Keys(KeysCmd::Create {
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
        }) => {
            let body = json!({"name": name, "owner": owner, "models": models,
                              "budget_usd": budget_usd, "budget_period": period,
                              "expires_at": expires_at, "rpm": rpm, "tpm": tpm,
                              "concurrent_streams": concurrent_streams});
            let v = c.call("POST", "/v1/keys", Some(body.to_string().into_bytes()))?;
            if json {
                println!("{v}");
            } else {
                println!("created {} ({})", s(&v["id"]), s(&v["name"]));
                println!("key: {}", s(&v["key"]));
                println!("(shown once: only its hash is stored)");
            }
        }
        Command::Keys(KeysCmd::List { json }) => {
            let v = c.call("GET", "/v1/keys", None)?;
            if json {
                println!("{v}");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|k| {
                    vec![
                        s(&k["id"]),
                        s(&k["prefix"]),
                        s(&k["name"]),
                        s(&k["status"]),
                        format!("{:.4}", k["spend_usd"].as_f64().unwrap_or(0.0)),
                        match k["budget_usd"].as_f64() {
                            Some(b) => format!("{b:.2}/{}", s(&k["budget_period"])),
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
        Command::Keys(KeysCmd::Revoke { id }) => {
            let v = c.call(
                "POST",
                &format!("/v1/keys/{id}/revoke"),
                Some(b"{}".to_vec()),
            )?;
            println!(
                "revoked {} (config version {})",
                s(&v["id"]),
                s(&v["config_version"])
            );
        }
        Command::Budgets(BudgetsCmd::Set {
            key_id,
            usd,
            period,
        }) => {
            let usd: Option<f64> = if usd == "none" {
                None
            } else {
                Some(
                    usd.parse()
                        .map_err(|_| format!("--usd: not a number: {usd}"))?,
                )
            };
            let body = json!({"usd": usd, "period": period});
            let v = c.call(
                "PUT",
                &format!("/v1/keys/{key_id}/budget"),
                Some(body.to_string().into_bytes()),
            )?;
            println!(
                "budget of {} set (config version {})",
                key_id,
                s(&v["config_version"])
            );
        }
        Command::Models(ModelsCmd::List) => {
            let v = c.call("GET", "/v1/models", None)?;
            let rows: Vec<Vec<String>> = v["models"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| vec![s(&m["name"]), m["targets"].to_string()])
                .collect();
            print_table(&["MODEL", "TARGETS"], &rows);
        }
        Command::Models(ModelsCmd::Set { name, targets }) => {
            let mut ts = Vec::new();
            for t in &targets {
                let parts: Vec<&str> = t.split(':').collect();
                let (p, m, w) = match parts.as_slice() {
                    [p, m] => (*p, *m, 1u32),
                    [p, m, w] => (*p, *m, w.parse().map_err(|_| format!("bad weight in {t}"))?),
                    _ => return Err(format!("--target {t}: want provider:model[:weight]")),
                };
                ts.push(json!({"provider": p, "model": m, "weight": w}));
            }
            let v = c.call(
                "PUT",
                &format!("/v1/models/{name}"),
                Some(json!({"targets": ts}).to_string().into_bytes()),
            )?;
            println!(
                "model {name} set (config version {})",
                s(&v["config_version"])
            );
        }
        Command::Models(ModelsCmd::Delete { name }) => {
            let v = c.call("DELETE", &format!("/v1/models/{name}"), None)?;
            println!(
                "model {name} deleted (config version {})",
                s(&v["config_version"])
            );
        }
        Command::Providers(ProvidersCmd::List) => {
            println!("{}", c.call("GET", "/v1/providers", None)?);
        }
        Command::Providers(ProvidersCmd::Set { name, spec_json }) => {
            let mut spec: Value =
                serde_json::from_str(&spec_json).map_err(|e| format!("spec is not JSON: {e}"))?;
            spec["name"] = json!(name);
            let v = c.call(
                "PUT",
                &format!("/v1/providers/{name}"),
                Some(spec.to_string().into_bytes()),
            )?;
            println!(
                "provider {name} set (config version {})",
                s(&v["config_version"])
            );
        }
        Command::Providers(ProvidersCmd::Delete { name }) => {
            let v = c.call("DELETE", &format!("/v1/providers/{name}"), None)?;
            println!(
                "provider {name} deleted (config version {})",
                s(&v["config_version"])
            );
        }
        Command::Guardrails(GuardrailsCmd::Show) => {
            println!("{}", c.call("GET", "/v1/guardrails", None)?);
        }
        Command::Guardrails(GuardrailsCmd::Set { file }) => {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let v = c.call("PUT", "/v1/guardrails", Some(bytes))?;
            println!(
                "{} rules set (config version {})",
                s(&v["rules"]),
                s(&v["config_version"])
            );
        }
        Command::Capture(CaptureCmd::Show) => {
            println!("{}", c.call("GET", "/v1/capture", None)?);
        }
        Command::Capture(CaptureCmd::Set {
            sample_rate,
            min_per_stratum,
            max_record_bytes,
        }) => {
            let body = serde_json::json!({
                "sample_rate": sample_rate,
                "min_per_stratum": min_per_stratum,
                "max_record_bytes": max_record_bytes,
            });
            let v = c.call("PUT", "/v1/capture", Some(body.to_string().into_bytes()))?;
            println!("capture on (config version {})", s(&v["config_version"]));
        }
        Command::Capture(CaptureCmd::Off) => {
            let v = c.call("DELETE", "/v1/capture", None)?;
            println!("capture off (config version {})", s(&v["config_version"]));
        }
        Command::Hosts(HostsCmd::Show) => {
            println!("{}", c.call("GET", "/v1/hosts", None)?);
        }
        Command::Hosts(HostsCmd::Set { hosts }) => {
            let body = serde_json::to_vec(&hosts).map_err(|e| e.to_string())?;
            let v = c.call("PUT", "/v1/hosts", Some(body))?;
            println!("hosts set (config version {})", s(&v["config_version"]));
        }
        Command::Shadow(ShadowCmd::Show) => {
            println!("{}", c.call("GET", "/v1/shadow", None)?);
        }
        Command::Shadow(ShadowCmd::Set { role }) => {
            let body = serde_json::json!({ "role": role });
            let v = c.call("PUT", "/v1/shadow", Some(body.to_string().into_bytes()))?;
            println!(
                "shadow role {role} (config version {})",
                s(&v["config_version"])
            );
        }
        Command::Shadow(ShadowCmd::Off) => {
            let v = c.call("DELETE", "/v1/shadow", None)?;
            println!("shadow off (config version {})", s(&v["config_version"]));
        }
        Command::Prices(PricesCmd::List) => {
            let v = c.call("GET", "/v1/prices", None)?;
            let rows: Vec<Vec<String>> = v["prices"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    let per_m =
                        |x: &Value| x.as_f64().map_or("-".into(), |f| format!("{:.4}", f * 1e6));
                    vec![
                        s(&p["model"]),
                        per_m(&p["input_per_token"]),
                        per_m(&p["output_per_token"]),
                        per_m(&p["cached_input_per_token"]),
                        s(&p["source"]),
                    ]
                })
                .collect();
            print_table(
                &["MODEL", "IN $/M", "OUT $/M", "CACHED $/M", "SOURCE"],
                &rows,
            );
        }
        Command::Prices(PricesCmd::Import { file }) => {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let v = c.call("POST", "/v1/prices/import", Some(bytes))?;
            println!("imported {} prices", s(&v["imported"]));
        }
        Command::Usage(UsageCmd::Report {
            days,
            by,
            json,
            csv,
        }) => {
            let v = c.call("GET", &format!("/v1/usage?days={days}&by={by}"), None)?;
            let cols = [
                "group",
                "requests",
                "prompt_tokens",
                "completion_tokens",
                "cached_tokens",
                "cost_usd",
                "errors",
            ];
            let rows: Vec<Vec<String>> = v["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    cols.iter()
                        .map(|c| {
                            if *c == "cost_usd" {
                                format!("{:.6}", r[c].as_f64().unwrap_or(0.0))
                            } else {
                                s(&r[*c])
                            }
                        })
                        .collect()
                })
                .collect();
            if json {
                println!("{v}");
            } else if csv {
                println!("{by},{}", cols[1..].join(","));
                for r in rows {
                    println!(
                        "{}",
                        r.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",")
                    );
                }
            } else {
                let mut h = vec![by.to_uppercase()];
                h.extend(cols[1..].iter().map(|c| c.to_uppercase()));
                let h: Vec<&str> = h.iter().map(String::as_str).collect();
                print_table(&h, &rows);
            }
        }
        Command::Status { json } => {
            let v = c.call("GET", "/v1/status", None)?;
            if json {
                println!("{v}");
                return Ok(());
            }
            println!(
                "config version: {}   ledger rows: {}",
                s(&v["version"]),
                s(&v["ledger_rows"])
            );
            let rows: Vec<Vec<String>> = v["nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|n| {
                    let node = s(&n["node"]);
                    vec![
                        node.clone(),
                        s(&n["streams"]),
                        s(&n["acked_version"]),
                        s(&n["nacked_version"]),
                        s(&n["nack_error"]),
                        s(&v["lost_records_by_node"][&node]),
                    ]
                })
                .collect();
            print_table(
                &[
                    "ENVOY",
                    "STREAMS",
                    "ACKED",
                    "NACKED",
                    "NACK_ERROR",
                    "LOST_RECORDS",
                ],
                &rows,
            );
            let sh = &v["shadow"];
            if sh["pairs"].as_u64().unwrap_or(0) > 0
                || sh["unpaired_shadow"].as_u64().unwrap_or(0) > 0
            {
                println!(
                    "shadow: {} pairs, diff rate {:.2}% ({}), shadow error rate {:.2}% ({}), unpaired shadow records {}, mean latency delta {:+.1} ms",
                    s(&sh["pairs"]),
                    sh["diff_rate"].as_f64().unwrap_or(0.0) * 100.0,
                    s(&sh["diffs"]),
                    sh["shadow_error_rate"].as_f64().unwrap_or(0.0) * 100.0,
                    s(&sh["shadow_errors"]),
                    s(&sh["unpaired_shadow"]),
                    sh["mean_latency_delta_ms"].as_f64().unwrap_or(0.0),
                );
            }
            let cap = &v["capture"];
            if cap["received"].as_u64().unwrap_or(0) > 0 {
                println!(
                    "capture: {} received, {} written to {}, {} dropped",
                    s(&cap["received"]),
                    s(&cap["written"]),
                    s(&cap["dir"]),
                    s(&cap["dropped"]),
                );
            }
        }
    }
    Ok(())
}
