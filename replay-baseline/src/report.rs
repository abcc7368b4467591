//! The replay report (human table and JSON) and the release gate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compare::Diff;
use crate::record::Record;
use crate::ruleset::Module;
use crate::runner::Outcome;

/// Gate thresholds: the defaults are the shadow → canary → default policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    #[serde(default = "d_diff")]
    pub max_diff_rate: f64,
    #[serde(default = "d_err")]
    pub max_shadow_error_rate: f64,
    #[serde(default = "d_p95")]
    pub max_p95_delta_ms: f64,
    /// Stricter diff-rate limits per module (e.g. `"guardrail": 0`).
    #[serde(default)]
    pub modules: BTreeMap<Module, f64>,
}

fn d_diff() -> f64 {
    0.005
}
fn d_err() -> f64 {
    0.001
}
fn d_p95() -> f64 {
    10.0
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            max_diff_rate: d_diff(),
            max_shadow_error_rate: d_err(),
            max_p95_delta_ms: d_p95(),
            modules: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Group {
    pub records: usize,
    pub diffs: usize,
    pub diff_rate: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct RecordResult {
    pub id: String,
    pub route: String,
    pub provider: Option<String>,
    pub dialect: String,
    pub stream: bool,
    /// `match`, `diff`, `shadow_error`.
    pub outcome: &'static str,
    pub primary_status: u16,
    pub shadow_status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub modules: Vec<Module>,
    /// Counted differences (at most 20 per record), then the count of
    /// nondeterministic ones.
    pub diffs: Vec<Diff>,
    pub nondeterministic: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct GateResult {
    pub passed: bool,
    pub thresholds: Gates,
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub ruleset: String,
    pub primary: String,
    pub shadow: String,
    pub records: usize,
    pub compared: usize,
    /// Not replayed within the time bound.
    pub skipped: usize,
    pub diff_records: usize,
    pub diff_rate: f64,
    pub shadow_errors: usize,
    pub shadow_error_rate: f64,
    pub by_module: BTreeMap<Module, Group>,
    pub by_provider: BTreeMap<String, Group>,
    pub by_dialect: BTreeMap<String, Group>,
    pub by_route: BTreeMap<String, Group>,
    pub latency_primary: Option<Latency>,
    pub latency_shadow: Latency,
    pub p95_delta_ms: Option<f64>,
    pub gate: GateResult,
    pub results: Vec<RecordResult>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn latency(mut v: Vec<f64>) -> Option<Latency> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(Latency {
        p50_ms: pct(&v, 50.0),
        p95_ms: pct(&v, 95.0),
        p99_ms: pct(&v, 99.0),
    })
}

fn rate(n: usize, d: usize) -> f64 {
    if d == 0 {
        0.0
    } else {
        n as f64 / d as f64
    }
}

/// Routes grouped without the model in Gemini paths.
fn route_group(route: &str) -> String {
    match route.split_once("/models/") {
        Some((base, rest)) => match rest.rsplit_once(':') {
            Some((_, action)) => format!("{base}/models/*:{action}"),
            None => route.to_string(),
        },
        None => route.to_string(),
    }
}

fn bump(m: &mut BTreeMap<String, Group>, k: &str, diff: bool) {
    let g = m.entry(k.to_string()).or_default();
    g.records += 1;
    g.diffs += usize::from(diff);
}

fn finish_rates<K: Ord>(m: &mut BTreeMap<K, Group>) {
    for g in m.values_mut() {
        g.diff_rate = rate(g.diffs, g.records);
    }
}

pub fn build(
    records: &[Record],
    outcomes: &[Outcome],
    skipped: usize,
    ruleset: &str,
    primary: &str,
    shadow: &str,
    gates: &Gates,
) -> Report {
    let mut by_module: BTreeMap<Module, Group> = BTreeMap::new();
    let mut by_provider = BTreeMap::new();
    let mut by_dialect = BTreeMap::new();
    let mut by_route = BTreeMap::new();
    let mut results = Vec::new();
    let (mut diff_records, mut shadow_errors) = (0, 0);
    for o in outcomes {
        let rec = &records[o.record];
        let counted: Vec<&Diff> = o.diffs.iter().filter(|d| d.counts()).collect();
        let mut modules: Vec<Module> = counted.iter().map(|d| d.module).collect();
        modules.sort();
        modules.dedup();
        let shadow_error = o.shadow.error.is_some()
            || (o.shadow.response.status >= 500 && o.primary.response.status < 500);
        let diff = !counted.is_empty() || o.shadow.error.is_some();
        diff_records += usize::from(diff);
        shadow_errors += usize::from(shadow_error);
        for m in [
            Module::Translation,
            Module::Streaming,
            Module::Usage,
            Module::Guardrail,
            Module::Routing,
        ] {
            let g = by_module.entry(m).or_default();
            g.records += 1;
            g.diffs += usize::from(modules.contains(&m));
        }
        let provider = rec
            .meta
            .provider
            .clone()
            .unwrap_or_else(|| "(gateway)".into());
        bump(&mut by_provider, &provider, diff);
        bump(&mut by_dialect, &rec.meta.client_dialect, diff);
        bump(&mut by_route, &route_group(&rec.route), diff);
        results.push(RecordResult {
            id: rec.id.clone(),
            route: rec.route.clone(),
            provider: rec.meta.provider.clone(),
            dialect: rec.meta.client_dialect.clone(),
            stream: rec.meta.stream,
            outcome: if shadow_error {
                "shadow_error"
            } else if diff {
                "diff"
            } else {
                "match"
            },
            primary_status: o.primary.response.status,
            shadow_status: o.shadow.response.status,
            error: o.shadow.error.clone(),
            modules,
            diffs: counted.into_iter().take(20).cloned().collect(),
            nondeterministic: o.diffs.iter().filter(|d| !d.counts()).count(),
        });
    }
    finish_rates(&mut by_module);
    finish_rates(&mut by_provider);
    finish_rates(&mut by_dialect);
    finish_rates(&mut by_route);
    let compared = outcomes.len();
    let latency_primary = latency(outcomes.iter().map(|o| o.primary.latency_ms).collect());
    let latency_shadow =
        latency(outcomes.iter().map(|o| o.shadow.latency_ms).collect()).unwrap_or_default();
    let p95_delta_ms = latency_primary
        .as_ref()
        .map(|p| latency_shadow.p95_ms - p.p95_ms);
    let diff_rate = rate(diff_records, compared);
    let shadow_error_rate = rate(shadow_errors, compared);
    let mut failures = Vec::new();
    if compared == 0 {
        failures.push("no record was replayed".to_string());
    }
    if skipped > 0 {
        failures.push(format!(
            "{skipped} records not replayed within the time bound"
        ));
    }
    if diff_rate > gates.max_diff_rate {
        failures.push(format!(
            "diff rate {:.2}% > {:.2}%",
            diff_rate * 100.0,
            gates.max_diff_rate * 100.0
        ));
    }
    if shadow_error_rate > gates.max_shadow_error_rate {
        failures.push(format!(
            "shadow error rate {:.2}% > {:.2}%",
            shadow_error_rate * 100.0,
            gates.max_shadow_error_rate * 100.0
        ));
    }
    if let Some(d) = p95_delta_ms {
        if d > gates.max_p95_delta_ms {
            failures.push(format!(
                "p95 latency delta {d:+.1} ms > {:+.1} ms",
                gates.max_p95_delta_ms
            ));
        }
    }
    for (m, max) in &gates.modules {
        let r = by_module.get(m).map_or(0.0, |g| g.diff_rate);
        if r > *max {
            failures.push(format!(
                "{} diff rate {:.2}% > {:.2}%",
                m.as_str(),
                r * 100.0,
                max * 100.0
            ));
        }
    }
    Report {
        ruleset: ruleset.to_string(),
        primary: primary.to_string(),
        shadow: shadow.to_string(),
        records: records.len(),
        compared,
        skipped,
        diff_records,
        diff_rate,
        shadow_errors,
        shadow_error_rate,
        by_module,
        by_provider,
        by_dialect,
        by_route,
        latency_primary,
        latency_shadow,
        p95_delta_ms,
        gate: GateResult {
            passed: failures.is_empty(),
            thresholds: gates.clone(),
            failures,
        },
        results,
    }
}

fn table<K: std::fmt::Display>(out: &mut String, title: &str, m: &BTreeMap<K, Group>) {
    out.push_str(&format!(
        "\n{title:<40} {:>8} {:>7} {:>9}\n",
        "records", "diffs", "diff rate"
    ));
    for (k, g) in m {
        out.push_str(&format!(
            "  {:<38} {:>8} {:>7} {:>8.2}%\n",
            k.to_string(),
            g.records,
            g.diffs,
            g.diff_rate * 100.0
        ));
    }
}

impl std::fmt::Display for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The human-readable report.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "sluice-replay: {} records, {} compared, {} skipped (ruleset {})\n",
        r.records, r.compared, r.skipped, r.ruleset
    ));
    out.push_str(&format!("primary: {}\nshadow:  {}\n", r.primary, r.shadow));
    out.push_str(&format!(
        "diff rate {:.2}% ({} records); shadow error rate {:.2}% ({})\n",
        r.diff_rate * 100.0,
        r.diff_records,
        r.shadow_error_rate * 100.0,
        r.shadow_errors
    ));
    let l = |x: &Latency| {
        format!(
            "p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms",
            x.p50_ms, x.p95_ms, x.p99_ms
        )
    };
    match &r.latency_primary {
        Some(p) => out.push_str(&format!("latency primary: {}\n", l(p))),
        None => out.push_str("latency primary: (recorded answers)\n"),
    }
    out.push_str(&format!("latency shadow:  {}\n", l(&r.latency_shadow)));
    if let Some(d) = r.p95_delta_ms {
        out.push_str(&format!("p95 delta: {d:+.1} ms\n"));
    }
    table(&mut out, "by module", &r.by_module);
    table(&mut out, "by provider", &r.by_provider);
    table(&mut out, "by dialect", &r.by_dialect);
    table(&mut out, "by route", &r.by_route);
    let bad: Vec<&RecordResult> = r.results.iter().filter(|x| x.outcome != "match").collect();
    if !bad.is_empty() {
        out.push_str("\ndifferences (first 3 per record):\n");
        for x in bad.iter().take(50) {
            out.push_str(&format!(
                "  {} {} {} {} → {} [{}]\n",
                x.id,
                x.dialect,
                x.provider.as_deref().unwrap_or("(gateway)"),
                x.primary_status,
                x.shadow_status,
                x.outcome
            ));
            if let Some(e) = &x.error {
                out.push_str(&format!("      error: {e}\n"));
            }
            for d in x.diffs.iter().take(3) {
                let v = |v: &Option<serde_json::Value>| {
                    v.as_ref().map_or("-".to_string(), |v| v.to_string())
                };
                out.push_str(&format!(
                    "      {:<12} {:<10} {} {}: {} → {}\n",
                    d.module.as_str(),
                    d.side,
                    serde_json::to_value(d.kind)
                        .ok()
                        .and_then(|k| k.as_str().map(str::to_string))
                        .unwrap_or_default(),
                    if d.path.is_empty() {
                        "(whole)"
                    } else {
                        &d.path
                    },
                    v(&d.a),
                    v(&d.b)
                ));
            }
        }
        let mut modules: Vec<Module> = bad.iter().flat_map(|x| x.modules.clone()).collect();
        modules.sort();
        modules.dedup();
        for m in modules {
            out.push_str(&format!("  → {}: {}\n", m.as_str(), m.source_hint()));
        }
    }
    out.push_str(&format!(
        "\ngate (diff ≤ {:.2}%, shadow errors ≤ {:.2}%, p95 delta ≤ {:+.1} ms): {}\n",
        r.gate.thresholds.max_diff_rate * 100.0,
        r.gate.thresholds.max_shadow_error_rate * 100.0,
        r.gate.thresholds.max_p95_delta_ms,
        if r.gate.passed { "PASS" } else { "FAIL" }
    ));
    for f in &r.gate.failures {
        out.push_str(&format!("  - {f}\n"));
    }
    out
}
