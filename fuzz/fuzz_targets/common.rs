//! One gateway for every target: all three provider kinds, keys with limits
//! and a budget, guardrails on both directions, capture on — so the fuzzed
//! requests reach every path the configuration can open.

use sluice_core::gateway::Gateway;

pub const KEY: &str = "sk-fuzz";
pub const LIMITED_KEY: &str = "sk-fuzz-limited";

thread_local! {
    static GATEWAY: Gateway = gateway();
}

pub fn with_gateway<R>(f: impl FnOnce(&Gateway) -> R) -> R {
    GATEWAY.with(f)
}

fn gateway() -> Gateway {
    let cfg = serde_json::json!({
        "version": "fuzz",
        "keys": [
            {"id": "k1", "sha256": sluice_config::hash_key(KEY)},
            {"id": "k2", "sha256": sluice_config::hash_key(LIMITED_KEY),
             "limits": {"rpm": 1000000, "tpm": 100000000, "concurrent_streams": 1000},
             "budget": {"remaining_usd": 1000.0, "epoch": 1}}
        ],
        "providers": [
            {"name": "o", "kind": "openai", "cluster": "co", "host": "o.example",
             "api_key_env": "K", "serves": ["openai-responses"]},
            {"name": "r", "kind": "openai-responses", "cluster": "cr", "host": "r.example",
             "api_key_env": "K"},
            {"name": "a", "kind": "anthropic", "cluster": "ca", "host": "a.example",
             "auth": {"type": "header", "name": "x-api-key"}, "api_key_env": "K"},
            {"name": "g", "kind": "gemini", "cluster": "cg", "host": "g.example",
             "auth": {"type": "header", "name": "x-goog-api-key"}, "api_key_env": "K"},
            {"name": "ou", "kind": "openai", "base_url": "https://o.example/v1",
             "api_key_env": "K"},
            {"name": "au", "kind": "anthropic", "base_url": "http://10.0.0.1:8000",
             "auth": {"type": "header", "name": "x-api-key"}, "api_key_secret": "S"},
            {"name": "gu", "kind": "gemini", "base_url": "http://[::1]:9/v1beta",
             "auth": {"type": "none"}}
        ],
        "models": [
            {"name": "gpt", "targets": [{"provider": "o", "model": "gpt-up",
              "price": {"input": 0.000001, "output": 0.000002}}]},
            {"name": "claude", "targets": [{"provider": "a", "model": "claude-up",
              "price": {"input": 0.000001, "output": 0.000002}}]},
            {"name": "gemini", "targets": [{"provider": "g", "model": "gemini-up",
              "price": {"input": 0.000001, "output": 0.000002}}]},
            {"name": "resp", "targets": [{"provider": "r", "model": "resp-up",
              "price": {"input": 0.000001, "output": 0.000002}}]},
            {"name": "split", "targets": [{"provider": "o", "model": "x", "weight": 2,
              "price": {"input": 0.000001, "output": 0.000002}},
              {"provider": "a", "model": "y",
              "price": {"input": 0.000001, "output": 0.000002}}]},
            {"name": "fallback", "targets": [
              {"provider": "ou", "model": "o-up", "price": {"input": 0.000001, "output": 0.000002}},
              {"provider": "au", "model": "a-up", "priority": 1,
               "price": {"input": 0.000003, "output": 0.000004}},
              {"provider": "gu", "model": "g-up", "priority": 2,
               "price": {"input": 0.000001, "output": 0.000001}}],
             "retry": {"attempts": 3}, "cooldown": {"consecutive_failures": 2, "seconds": 5}}
        ],
        "endpoints": [
            {"path": "/v1/moderations", "provider": "o"},
            {"path": "/v1/audio/transcriptions", "provider": "o", "max_body_bytes": 4096},
            {"path": "/v1/files/*", "provider": "o", "methods": ["GET", "POST", "DELETE"],
             "check_model": false}
        ],
        "limits": {"max_request_body_bytes": 65536, "max_response_body_bytes": 65536,
                   "max_sse_event_bytes": 4096},
        "guardrails": {"rules": [
            {"name": "email", "detector": "email", "action": "mask", "on": "both"},
            {"name": "card", "detector": "payment_card", "action": "block", "on": "both"},
            {"name": "ssn", "detector": "us_ssn", "action": "hash", "on": "response"}
        ]},
        "capture": {"sample_rate": 1.0, "min_per_stratum": 1, "max_record_bytes": 65536}
    });
    let cfg = serde_json::from_value(cfg).expect("fuzz config parses");
    Gateway::new(cfg, |_| Some("provider-secret".into())).expect("fuzz config is valid")
}
