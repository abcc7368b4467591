//! `sluice-replay`: replay baselines through a primary and a shadow gateway,
//! diff, attribute and gate (docs/replay.md).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use sluice_replay::record::{read_baseline, Record};
use sluice_replay::report::{self, Gates};
use sluice_replay::ruleset::{Module, Ruleset};
use sluice_replay::runner::{self, RunOptions};
use sluice_replay::sanitize::Sanitizer;

#[derive(Parser)]
#[command(
    name = "sluice-replay",
    version,
    about = "Replay baselines through two gateways, diff, attribute and gate"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay baselines through a primary and a shadow gateway and compare.
    /// Exit status 1 when a gate threshold is exceeded.
    Run(RunArgs),
    /// Sanitize records (or convert raw filter capture records) in place of
    /// a new file.
    Sanitize {
        #[arg(long = "in")]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The input holds the filter's capture records, not replay records.
        #[arg(long)]
        from_capture: bool,
        /// Env var with the PII hash salt (random if unset).
        #[arg(long, default_value = "SLUICE_REPLAY_SALT")]
        salt_env: String,
        /// Env vars whose values are redacted wherever they appear.
        #[arg(long, value_delimiter = ',')]
        redact_env: Vec<String>,
    },
    /// What a baseline covers: records by dialect, provider, stream, tools.
    Summary {
        #[arg(long, required = true)]
        baseline: Vec<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Baseline files (JSON Lines).
    #[arg(long, required = true)]
    baseline: Vec<PathBuf>,
    /// Primary gateway URL; omitted: the recorded answers are the primary.
    #[arg(long)]
    primary: Option<String>,
    /// Shadow gateway URL.
    #[arg(long)]
    shadow: String,
    /// Virtual key presented to both gateways.
    #[arg(long, env = "SLUICE_REPLAY_KEY", hide_env_values = true)]
    api_key: String,
    /// Base URL of the replaying mock provider (compares upstream requests).
    #[arg(long)]
    upstream_log: Option<String>,
    /// Ruleset file (default: the built-in diff_ruleset_v1).
    #[arg(long)]
    ruleset: Option<PathBuf>,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Per-request timeout.
    #[arg(long, default_value_t = 30)]
    timeout_s: u64,
    /// No record is started after this many seconds.
    #[arg(long, default_value_t = 300)]
    max_seconds: u64,
    /// Gate thresholds file (JSON: max_diff_rate, max_shadow_error_rate,
    /// max_p95_delta_ms, modules{}).
    #[arg(long)]
    gates: Option<PathBuf>,
    #[arg(long)]
    max_diff_rate: Option<f64>,
    #[arg(long)]
    max_shadow_error_rate: Option<f64>,
    #[arg(long)]
    max_p95_delta_ms: Option<f64>,
    /// Per-module diff-rate limit, `module=rate` (repeatable).
    #[arg(long)]
    module_max: Vec<String>,
    /// Write the JSON report here.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

fn load(paths: &[PathBuf]) -> Result<Vec<Record>, String> {
    let mut all = Vec::new();
    for p in paths {
        all.extend(read_baseline(p)?);
    }
    Ok(all)
}

fn gates(a: &RunArgs) -> Result<Gates, String> {
    let mut g: Gates = match &a.gates {
        Some(p) => serde_json::from_str(
            &std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )
        .map_err(|e| format!("{}: {e}", p.display()))?,
        None => Gates::default(),
    };
    if let Some(v) = a.max_diff_rate {
        g.max_diff_rate = v;
    }
    if let Some(v) = a.max_shadow_error_rate {
        g.max_shadow_error_rate = v;
    }
    if let Some(v) = a.max_p95_delta_ms {
        g.max_p95_delta_ms = v;
    }
    for m in &a.module_max {
        let (name, rate) = m
            .split_once('=')
            .ok_or_else(|| format!("--module-max {m}: expected module=rate"))?;
        let module: Module = serde_json::from_value(serde_json::Value::String(name.into()))
            .map_err(|_| format!("--module-max: unknown module '{name}'"))?;
        let rate: f64 = rate
            .parse()
            .map_err(|_| format!("--module-max {m}: bad rate"))?;
        g.modules.insert(module, rate);
    }
    Ok(g)
}

fn run(a: RunArgs) -> Result<bool, String> {
    let rules = Ruleset::load(a.ruleset.as_deref())?;
    let records = load(&a.baseline)?;
    let gates = gates(&a)?;
    let opts = RunOptions {
        primary: a.primary.clone(),
        shadow: a.shadow.clone(),
        api_key: a.api_key.clone(),
        upstream_log: a.upstream_log.clone(),
        concurrency: a.concurrency,
        timeout: Duration::from_secs(a.timeout_s.max(1)),
        max_time: Duration::from_secs(a.max_seconds),
    };
    let (outcomes, skipped) = runner::run(&records, &opts, &rules);
    let primary = a.primary.as_deref().unwrap_or("(recorded answers)");
    let r = report::build(
        &records,
        &outcomes,
        skipped,
        rules.version(),
        primary,
        &a.shadow,
        &gates,
    );
    print!("{}", report::render(&r));
    if let Some(p) = &a.json_out {
        let text = serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?;
        std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display()))?;
    }
    Ok(r.gate.passed)
}

fn salt(env: &str) -> Vec<u8> {
    match std::env::var(env) {
        Ok(s) if !s.is_empty() => s.into_bytes(),
        _ => {
            // Random per run: hashes stay consistent within the output,
            // and nobody can recompute them.
            let mut b = [0u8; 32];
            let seed = format!("{:?}{:?}", std::time::SystemTime::now(), std::process::id());
            let h = <sha2::Sha256 as sha2::Digest>::digest(seed.as_bytes());
            b.copy_from_slice(&h);
            b.to_vec()
        }
    }
}

fn sanitize(
    input: PathBuf,
    out: PathBuf,
    from_capture: bool,
    salt_env: String,
    redact_env: Vec<String>,
) -> Result<(), String> {
    let exact = redact_env
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .collect();
    let s = Sanitizer::new(&salt(&salt_env), exact)?;
    let mut records = if from_capture {
        let text =
            std::fs::read_to_string(&input).map_err(|e| format!("{}: {e}", input.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| Record::from_capture(l.as_bytes(), Ruleset::builtin().version()))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        read_baseline(&input)?
    };
    let mut lines = String::new();
    for r in &mut records {
        s.record(r);
        lines.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
        lines.push('\n');
    }
    std::fs::write(&out, lines).map_err(|e| format!("{}: {e}", out.display()))?;
    eprintln!("{} records sanitized → {}", records.len(), out.display());
    Ok(())
}

fn summary(paths: &[PathBuf]) -> Result<(), String> {
    let records = load(paths)?;
    let mut counts: BTreeMap<(String, String, bool, bool), usize> = BTreeMap::new();
    for r in &records {
        let kind = r
            .upstream
            .as_ref()
            .map_or("(gateway)".into(), |u| u.kind.clone());
        *counts
            .entry((
                r.meta.client_dialect.clone(),
                kind,
                r.meta.stream,
                r.meta.tools,
            ))
            .or_default() += 1;
    }
    println!(
        "{:<10} {:<10} {:<7} {:<6} {:>7}",
        "DIALECT", "PROVIDER", "STREAM", "TOOLS", "RECORDS"
    );
    for ((d, k, s, t), n) in &counts {
        println!("{d:<10} {k:<10} {s:<7} {t:<6} {n:>7}");
    }
    println!("{} records", records.len());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Run(a) => run(a).map(|passed| {
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }),
        Cmd::Sanitize {
            input,
            out,
            from_capture,
            salt_env,
            redact_env,
        } => sanitize(input, out, from_capture, salt_env, redact_env).map(|()| ExitCode::SUCCESS),
        Cmd::Summary { baseline } => summary(&baseline).map(|()| ExitCode::SUCCESS),
    };
    match res {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice-replay: {e}");
            ExitCode::from(2)
        }
    }
}
