//! `sluice guardrails …`, `sluice capture …`, `sluice hosts …`,
//! `sluice shadow …`.

use clap::Subcommand;
use sluice_config::{CaptureConfig, Guardrails, ShadowConfig, ShadowRole};

use super::{print_json, Client};
use crate::api::{GuardrailsSet, Setting};

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
pub enum EndpointsCmd {
    Show,
    /// Replace the passed-through provider endpoints with a JSON list:
    /// `'[{"path": "/v1/moderations", "provider": "openai"},
    ///    {"path": "/v1/files/*", "provider": "openai",
    ///     "methods": ["GET", "POST", "DELETE"], "check_model": false}]'`
    /// (docs/translation.md). `[]` removes them all.
    Set {
        json: String,
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

fn version<T>(s: &Setting<T>) -> String {
    s.config_version
        .map_or_else(|| "-".into(), |v| v.to_string())
}

pub fn run_guardrails(c: &Client, cmd: GuardrailsCmd) -> Result<(), String> {
    match cmd {
        GuardrailsCmd::Show => print_json(&c.get::<Guardrails>("/v1/guardrails")?)?,
        GuardrailsCmd::Set { file } => {
            let bytes = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
            let r: GuardrailsSet = c.send_raw("PUT", "/v1/guardrails", bytes)?;
            println!(
                "{} rules set (config version {})",
                r.rules, r.config_version
            );
        }
    }
    Ok(())
}

pub fn run_capture(c: &Client, cmd: CaptureCmd) -> Result<(), String> {
    match cmd {
        CaptureCmd::Show => print_json(&c.get::<Setting<CaptureConfig>>("/v1/capture")?)?,
        CaptureCmd::Set {
            sample_rate,
            min_per_stratum,
            max_record_bytes,
        } => {
            let body = CaptureConfig {
                sample_rate,
                min_per_stratum,
                max_record_bytes,
            };
            let r: Setting<CaptureConfig> = c.send("PUT", "/v1/capture", &body)?;
            println!("capture on (config version {})", version(&r));
        }
        CaptureCmd::Off => {
            let r: Setting<CaptureConfig> = c.delete("/v1/capture")?;
            println!("capture off (config version {})", version(&r));
        }
    }
    Ok(())
}

pub fn run_hosts(c: &Client, cmd: HostsCmd) -> Result<(), String> {
    match cmd {
        HostsCmd::Show => print_json(&c.get::<Setting<Vec<String>>>("/v1/hosts")?)?,
        HostsCmd::Set { hosts } => {
            let r: Setting<Vec<String>> = c.send("PUT", "/v1/hosts", &hosts)?;
            println!("hosts set (config version {})", version(&r));
        }
    }
    Ok(())
}

pub fn run_endpoints(c: &Client, cmd: EndpointsCmd) -> Result<(), String> {
    type List = Vec<sluice_config::PassthroughEndpoint>;
    match cmd {
        EndpointsCmd::Show => print_json(&c.get::<Setting<List>>("/v1/endpoints")?)?,
        EndpointsCmd::Set { json } => {
            let list: List = serde_json::from_str(&json).map_err(|e| format!("endpoints: {e}"))?;
            let r: Setting<List> = c.send("PUT", "/v1/endpoints", &list)?;
            println!("endpoints set (config version {})", version(&r));
        }
    }
    Ok(())
}

pub fn run_shadow(c: &Client, cmd: ShadowCmd) -> Result<(), String> {
    match cmd {
        ShadowCmd::Show => print_json(&c.get::<Setting<ShadowConfig>>("/v1/shadow")?)?,
        ShadowCmd::Set { role } => {
            let role = match role.as_str() {
                "primary" => ShadowRole::Primary,
                "shadow" => ShadowRole::Shadow,
                other => return Err(format!("--role {other}: want primary or shadow")),
            };
            let body = ShadowConfig { role };
            let r: Setting<ShadowConfig> = c.send("PUT", "/v1/shadow", &body)?;
            println!(
                "shadow role {} (config version {})",
                role.as_str(),
                version(&r)
            );
        }
        ShadowCmd::Off => {
            let r: Setting<ShadowConfig> = c.delete("/v1/shadow")?;
            println!("shadow off (config version {})", version(&r));
        }
    }
    Ok(())
}
