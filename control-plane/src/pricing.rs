//! Model prices: a small built-in table, LiteLLM's
//! `model_prices_and_context_window.json` import, and cost from usage.

use std::collections::HashMap;

use serde::Deserialize;

use crate::store::Price;

/// USD per million tokens: (model, input, output, cached input). Public list
/// prices at the time of writing; `sluice prices import` overrides them.
const BUILTIN: &[(&str, f64, f64, Option<f64>)] = &[
    ("gpt-4o", 2.50, 10.00, Some(1.25)),
    ("gpt-4o-mini", 0.15, 0.60, Some(0.075)),
    ("gpt-4.1", 2.00, 8.00, Some(0.50)),
    ("gpt-4.1-mini", 0.40, 1.60, Some(0.10)),
    ("gpt-4.1-nano", 0.10, 0.40, Some(0.025)),
    ("o4-mini", 1.10, 4.40, Some(0.275)),
    ("claude-sonnet-4-5", 3.00, 15.00, Some(0.30)),
    ("claude-haiku-4-5", 1.00, 5.00, Some(0.10)),
    ("claude-opus-4-1", 15.00, 75.00, Some(1.50)),
    ("gemini-2.5-pro", 1.25, 10.00, Some(0.31)),
    ("gemini-2.5-flash", 0.30, 2.50, Some(0.075)),
    ("gemini-2.5-flash-lite", 0.10, 0.40, Some(0.025)),
];

pub fn builtin() -> Vec<Price> {
    BUILTIN
        .iter()
        .map(|(m, i, o, c)| Price {
            model: m.to_string(),
            input_per_token: i / 1e6,
            output_per_token: o / 1e6,
            cached_input_per_token: c.map(|c| c / 1e6),
            // Unset: input × 1.25, Anthropic's price for a cache write.
            cache_write_input_per_token: None,
            source: "builtin".into(),
        })
        .collect()
}

#[derive(Deserialize)]
struct LiteLlmEntry {
    #[serde(default)]
    input_cost_per_token: Option<f64>,
    #[serde(default)]
    output_cost_per_token: Option<f64>,
    #[serde(default)]
    cache_read_input_token_cost: Option<f64>,
    #[serde(default)]
    cache_creation_input_token_cost: Option<f64>,
    #[serde(default)]
    mode: Option<String>,
}

/// Parses LiteLLM's price file: `{ "model": {"input_cost_per_token": …}, … }`.
/// Entries without both token prices (images, embeddings without output,
/// the `sample_spec` documentation entry) are skipped.
pub fn parse_litellm(json: &[u8]) -> Result<Vec<Price>, String> {
    let map: HashMap<String, serde_json::Value> =
        serde_json::from_slice(json).map_err(|e| format!("not a LiteLLM price file: {e}"))?;
    let mut out = Vec::new();
    for (model, v) in map {
        let Ok(e) = serde_json::from_value::<LiteLlmEntry>(v) else {
            continue;
        };
        if e.mode
            .as_deref()
            .is_some_and(|m| m != "chat" && m != "completion")
        {
            continue;
        }
        let (Some(i), Some(o)) = (e.input_cost_per_token, e.output_cost_per_token) else {
            continue;
        };
        if !(i.is_finite() && o.is_finite() && i >= 0.0 && o >= 0.0) {
            continue;
        }
        out.push(Price {
            model,
            input_per_token: i,
            output_per_token: o,
            cached_input_per_token: e.cache_read_input_token_cost.filter(|c| c.is_finite()),
            cache_write_input_per_token: e
                .cache_creation_input_token_cost
                .filter(|c| c.is_finite() && *c >= 0.0),
            source: "litellm".into(),
        });
    }
    if out.is_empty() {
        return Err("no chat model prices found in the file".into());
    }
    out.sort_by(|a, b| a.model.cmp(&b.model));
    Ok(out)
}

/// Finds the price of a model: exact, then without a provider prefix
/// (`openai/gpt-4o`), then the longest known prefix (`gpt-4o-2024-08-06`).
pub fn lookup<'a>(prices: &'a [Price], model: &str) -> Option<&'a Price> {
    let bare = model.rsplit('/').next().unwrap_or(model);
    prices
        .iter()
        .find(|p| p.model == model || p.model == bare)
        .or_else(|| {
            prices
                .iter()
                .filter(|p| bare.starts_with(p.model.rsplit('/').next().unwrap_or(&p.model)))
                .max_by_key(|p| p.model.len())
        })
}

/// Cost of one request from provider-reported usage: the same arithmetic
/// as the filter's budget settlement (`TokenPrice`), so the ledger and the
/// precheck agree. Cached prompt tokens at the cached price; prompt tokens
/// written to the cache at the cache-write price.
pub fn cost(p: &Price, prompt: i64, completion: i64, cached: i64, written: i64) -> f64 {
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    sluice_config::TokenPrice {
        input: p.input_per_token,
        output: p.output_per_token,
        cached_input: p.cached_input_per_token,
        cache_write_input: p.cache_write_input_per_token,
    }
    .cost_with_cache_writes(n(prompt), n(completion), n(cached), n(written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_litellm_format() {
        let j = br#"{
            "sample_spec": {"max_tokens": "set to max", "input_cost_per_token": 0},
            "gpt-4o": {"input_cost_per_token": 2.5e-06, "output_cost_per_token": 1e-05,
                       "cache_read_input_token_cost": 1.25e-06, "mode": "chat"},
            "dall-e-3": {"mode": "image_generation", "output_cost_per_image": 0.04},
            "text-embedding-3-small": {"input_cost_per_token": 2e-08, "output_cost_per_token": 0, "mode": "embedding"}
        }"#;
        let p = parse_litellm(j).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].model, "gpt-4o");
        assert!(parse_litellm(b"[]").is_err());
    }

    #[test]
    fn lookup_and_cost() {
        let b = builtin();
        assert_eq!(lookup(&b, "gpt-4o-2024-08-06").unwrap().model, "gpt-4o");
        assert_eq!(lookup(&b, "gpt-4o-mini").unwrap().model, "gpt-4o-mini");
        assert_eq!(lookup(&b, "openai/gpt-4.1").unwrap().model, "gpt-4.1");
        assert!(lookup(&b, "mystery").is_none());
        let p = lookup(&b, "gpt-4o").unwrap();
        // 1M fresh input + 1M output = $12.50; cached at half price.
        assert!((cost(p, 1_000_000, 1_000_000, 0, 0) - 12.5).abs() < 1e-9);
        assert!((cost(p, 1_000_000, 0, 1_000_000, 0) - 1.25).abs() < 1e-9);
    }

    #[test]
    fn cache_writes_cost_more_than_plain_input() {
        let b = builtin();
        let p = lookup(&b, "claude-sonnet-4-5").unwrap();
        // 1M prompt tokens of which 1M written to the cache: $3 × 1.25.
        assert!((cost(p, 1_000_000, 0, 0, 1_000_000) - 3.75).abs() < 1e-9);
        // An imported price for cache writes is used as is.
        let j = br#"{"claude-x": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                     "cache_creation_input_token_cost": 6e-06, "mode": "chat"}}"#;
        let p = &parse_litellm(j).unwrap()[0];
        assert!((cost(p, 1_000_000, 0, 0, 500_000) - 4.5).abs() < 1e-9);
        // Reads, writes and fresh input never count a token twice.
        // (10 prompt: 8 read at the input price — no cached price imported —
        // and only the 2 left can have been written.)
        assert!((cost(p, 10, 0, 8, 8) - (8.0 * 3e-06 + 2.0 * 6e-06)).abs() < 1e-12);
    }
}
