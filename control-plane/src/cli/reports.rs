//! `sluice usage report`, `sluice status`.

use clap::Subcommand;

use super::{opt, print_json, print_table, Client};
use crate::api::{Status, UsageReport};

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

fn csv_cell(v: &str) -> String {
    if v.contains([',', '"', '\n']) {
        format!("\"{}\"", v.replace('"', "\"\""))
    } else {
        v.to_string()
    }
}

pub fn run_usage(c: &Client, cmd: UsageCmd) -> Result<(), String> {
    let UsageCmd::Report {
        days,
        by,
        json,
        csv,
    } = cmd;
    let report: UsageReport = c.get(&format!("/v1/usage?days={days}&by={by}"))?;
    if json {
        return print_json(&report);
    }
    let cols = [
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cost_usd",
        "errors",
    ];
    let rows: Vec<Vec<String>> = report
        .rows
        .into_iter()
        .map(|r| {
            vec![
                r.group,
                r.requests.to_string(),
                r.prompt_tokens.to_string(),
                r.completion_tokens.to_string(),
                r.cached_tokens.to_string(),
                format!("{:.6}", r.cost_usd),
                r.errors.to_string(),
            ]
        })
        .collect();
    if csv {
        println!("{by},{}", cols.join(","));
        for r in rows {
            println!(
                "{}",
                r.iter().map(|c| csv_cell(c)).collect::<Vec<_>>().join(",")
            );
        }
    } else {
        let mut h = vec![by.to_uppercase()];
        h.extend(cols.iter().map(|c| c.to_uppercase()));
        let h: Vec<&str> = h.iter().map(String::as_str).collect();
        print_table(&h, &rows);
    }
    Ok(())
}

pub fn run_status(c: &Client, json: bool) -> Result<(), String> {
    let v: Status = c.get("/v1/status")?;
    if json {
        return print_json(&v);
    }
    println!(
        "config version: {}   ledger rows: {}",
        v.version, v.ledger_rows
    );
    let rows: Vec<Vec<String>> = v
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node.clone(),
                n.streams.to_string(),
                opt(n.acked_version.as_ref()),
                opt(n.nacked_version.as_ref()),
                opt(n.nack_error.as_ref()),
                opt(v.lost_records_by_node.get(&n.node)),
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
    let sh = &v.shadow;
    if sh.pairs > 0 || sh.unpaired_shadow > 0 {
        println!(
            "shadow: {} pairs, diff rate {:.2}% ({}), shadow error rate {:.2}% ({}), unpaired shadow records {}, mean latency delta {:+.1} ms",
            sh.pairs,
            sh.diff_rate * 100.0,
            sh.diffs,
            sh.shadow_error_rate * 100.0,
            sh.shadow_errors,
            sh.unpaired_shadow,
            sh.mean_latency_delta_ms,
        );
    }
    let cap = &v.capture;
    if cap.received > 0 {
        println!(
            "capture: {} received, {} written to {}, {} dropped",
            cap.received,
            cap.written,
            opt(cap.dir.as_ref()),
            cap.dropped,
        );
    }
    Ok(())
}
