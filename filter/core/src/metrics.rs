//! What each finished request contributes to Envoy's metrics.
//!
//! proxy-wasm metrics are flat names; labels ride in the name as
//! `;label=value` segments, which the bootstrap's `stats_config.stats_tags`
//! (one regex per label, see `envoy/launch.py`) turns into Prometheus labels:
//! `sluice_requests_total;provider=mock;model=mock-gpt;status_class=2xx`
//! is exported as `sluice_requests_total{provider="mock",model="mock-gpt",…}`.
//! Names follow the OpenTelemetry GenAI semantic conventions where one
//! exists. Label values come from the configuration (provider and model
//! names) or small fixed sets, so cardinality is bounded by the config.

use crate::usage::UsageRecord;

/// The labels Sluice puts on metrics (each needs a `stats_tags` rule).
pub const LABELS: &[&str] = &[
    "provider",
    "model",
    "status_class",
    "token_type",
    "client_dialect",
    "rule",
    "action",
    "reason",
    "key",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Histogram,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Full name including `;label=value` segments.
    pub name: String,
    pub kind: Kind,
    pub value: u64,
}

/// Label values may not contain the separators.
fn clean(v: &str) -> String {
    let v: String = v
        .chars()
        .take(64)
        .map(|c| {
            if matches!(c, ';' | '=' | ' ' | '.') {
                '_'
            } else {
                c
            }
        })
        .collect();
    if v.is_empty() {
        "none".into()
    } else {
        v
    }
}

/// Labels, plus `key` when per-key labels are on.
fn with_key(
    labels: &[(&'static str, &str)],
    per_key: bool,
    key: &str,
) -> Vec<(&'static str, String)> {
    let mut v: Vec<(&'static str, String)> =
        labels.iter().map(|(k, v)| (*k, v.to_string())).collect();
    if per_key {
        v.push(("key", key.to_string()));
    }
    v
}

fn name_owned(base: &str, labels: &[(&'static str, String)]) -> String {
    let borrowed: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    name(base, &borrowed)
}

fn name(base: &str, labels: &[(&str, &str)]) -> String {
    let mut n = String::with_capacity(base.len() + 64);
    n.push_str(base);
    for (k, v) in labels {
        n.push(';');
        n.push_str(k);
        n.push('=');
        n.push_str(&clean(v));
    }
    n
}

/// Guardrail hits: `sluice_guardrail_hits_total{rule, action}`.
pub fn guardrail_updates(hits: &[crate::guardrails::Hit]) -> Vec<Update> {
    hits.iter()
        .map(|h| {
            let action = match h.action {
                sluice_config::GuardAction::Block => "block",
                sluice_config::GuardAction::Mask => "mask",
                sluice_config::GuardAction::Hash => "hash",
            };
            Update {
                name: name(
                    "sluice_guardrail_hits_total",
                    &[("rule", &h.rule), ("action", action)],
                ),
                kind: Kind::Counter,
                value: 1,
            }
        })
        .collect()
}

/// The metric updates for one finished request. `per_key` adds a `key`
/// label (configuration switch: cardinality).
pub fn updates(r: &UsageRecord, per_key: bool) -> Vec<Update> {
    let provider = r.provider.as_deref().unwrap_or("none");
    let model = r.model.as_deref().unwrap_or("none");
    let key = r.key_id.as_deref().unwrap_or("none");
    let with_key = |labels: &[(&'static str, &str)]| with_key(labels, per_key, key);
    let status_class = match r.status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "other",
    };
    let base = [("provider", provider), ("model", model)];
    let mut out = Vec::with_capacity(8);
    let owned = |l: Vec<(&'static str, String)>| name_owned("sluice_requests_total", &l);
    out.push(Update {
        name: owned(with_key(&[
            base[0],
            base[1],
            ("status_class", status_class),
            ("client_dialect", r.client_dialect),
        ])),
        kind: Kind::Counter,
        value: 1,
    });
    if let Some(reason) = r.error {
        // Everything the gateway refused itself: rate limits, budgets,
        // guardrails, auth, bad requests.
        out.push(Update {
            name: name_owned(
                "sluice_rejections_total",
                &with_key(&[("reason", reason), base[1]]),
            ),
            kind: Kind::Counter,
            value: 1,
        });
    }
    if r.provider.is_none() {
        return out; // refused before routing: no provider-side figures
    }
    out.push(Update {
        name: name("gen_ai_client_operation_duration_milliseconds", &base),
        kind: Kind::Histogram,
        value: r.latency_ms,
    });
    if let Some(t) = r.ttft_ms {
        out.push(Update {
            name: name("gen_ai_server_time_to_first_token_milliseconds", &base),
            kind: Kind::Histogram,
            value: t,
        });
    }
    let t = &r.tokens;
    for (token_type, v) in [
        ("input", t.prompt_tokens),
        ("output", t.completion_tokens),
        ("cached_input", t.cached_tokens),
    ] {
        if v == 0 {
            continue;
        }
        let labels = [base[0], base[1], ("token_type", token_type)];
        out.push(Update {
            name: name_owned("sluice_tokens_total", &with_key(&labels)),
            kind: Kind::Counter,
            value: v,
        });
        if token_type != "cached_input" {
            out.push(Update {
                name: name("gen_ai_client_token_usage", &labels),
                kind: Kind::Histogram,
                value: v,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usage::TokenUsage;

    #[test]
    fn one_request_gives_counters_and_histograms() {
        let r = UsageRecord {
            provider: Some("mock".into()),
            model: Some("gpt;4=x".into()),
            client_dialect: "anthropic",
            status: 200,
            latency_ms: 12,
            ttft_ms: Some(3),
            tokens: TokenUsage {
                prompt_tokens: 10,
                completion_tokens: 5,
                ..Default::default()
            },
            ..Default::default()
        };
        let u = updates(&r, false);
        let names: Vec<&str> = u.iter().map(|u| u.name.as_str()).collect();
        assert_eq!(
            names,
            vec![
                "sluice_requests_total;provider=mock;model=gpt_4_x;status_class=2xx;client_dialect=anthropic",
                "gen_ai_client_operation_duration_milliseconds;provider=mock;model=gpt_4_x",
                "gen_ai_server_time_to_first_token_milliseconds;provider=mock;model=gpt_4_x",
                "sluice_tokens_total;provider=mock;model=gpt_4_x;token_type=input",
                "gen_ai_client_token_usage;provider=mock;model=gpt_4_x;token_type=input",
                "sluice_tokens_total;provider=mock;model=gpt_4_x;token_type=output",
                "gen_ai_client_token_usage;provider=mock;model=gpt_4_x;token_type=output",
            ]
        );
        assert_eq!(u[3].value, 10);
    }

    #[test]
    fn refused_requests_count_once() {
        let r = UsageRecord {
            status: 429,
            client_dialect: "openai",
            key_id: Some("k1".into()),
            model: Some("m".into()),
            error: Some("rate_limit_exceeded"),
            ..Default::default()
        };
        let u = updates(&r, false);
        assert_eq!(u.len(), 2);
        assert!(u[0].name.contains("provider=none") && u[0].name.contains("status_class=4xx"));
        assert_eq!(
            u[1].name,
            "sluice_rejections_total;reason=rate_limit_exceeded;model=m"
        );
        // Per-key labels only when switched on.
        assert!(!u[0].name.contains("key="));
        let u = updates(&r, true);
        assert!(u[0].name.ends_with(";key=k1") && u[1].name.ends_with(";key=k1"));
    }
}
