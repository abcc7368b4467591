//! A model's retry policy and timeouts as Envoy router request headers.
//! Set by the filter on each request of a resilient model, they combine with
//! the route's retry policy, which holds what has no header (the move to
//! the next priority, back-off, `retry-after`). Clients' own values for
//! these headers are always removed (`upstream::UPSTREAM_REMOVE`): a client
//! must not buy itself ten billed attempts.

use sluice_config::{Model, RetryOn};

/// The router headers a client could use to steer retries and timeouts.
pub const CLIENT_ROUTER_HEADERS: [&str; 8] = [
    "x-envoy-max-retries",
    "x-envoy-retry-on",
    "x-envoy-retriable-status-codes",
    "x-envoy-retriable-header-names",
    "x-envoy-retry-grpc-on",
    "x-envoy-upstream-rq-timeout-ms",
    "x-envoy-upstream-rq-per-try-timeout-ms",
    "x-envoy-hedge-on-per-try-timeout",
];

/// Statuses each retry condition covers.
const SERVER_ERRORS: &[u16] = &[500, 502, 503, 504, 529];
const OVERLOADED: &[u16] = &[503, 529];

/// Header name and value for each of the model's router settings.
pub fn headers(m: &Model) -> Vec<(&'static str, String)> {
    let retry = m
        .retry
        .clone()
        .unwrap_or_else(|| sluice_config::RetryPolicy {
            // Fallback priorities without a policy: one more attempt, on the
            // failures every gateway retries.
            attempts: if m.targets.iter().any(|t| t.priority != 0) {
                2
            } else {
                1
            },
            on: sluice_config::RetryPolicy::default().on,
        });
    let mut out = Vec::with_capacity(5);
    out.push((
        "x-envoy-max-retries",
        retry.attempts.saturating_sub(1).to_string(),
    ));
    let mut conditions: Vec<&str> = Vec::new();
    let mut codes: Vec<u16> = Vec::new();
    for on in &retry.on {
        match on {
            RetryOn::RateLimited => codes.push(429),
            RetryOn::ServerError => codes.extend_from_slice(SERVER_ERRORS),
            RetryOn::Overloaded => codes.extend_from_slice(OVERLOADED),
            RetryOn::ConnectFailure => conditions.push("connect-failure"),
            // Envoy counts a per-try (first-byte) timeout as a reset: one
            // condition serves both.
            RetryOn::Reset | RetryOn::Timeout => conditions.push("reset"),
        }
    }
    codes.sort_unstable();
    codes.dedup();
    if !codes.is_empty() {
        conditions.push("retriable-status-codes");
    }
    conditions.sort_unstable();
    conditions.dedup();
    if retry.attempts > 1 && !conditions.is_empty() {
        out.push(("x-envoy-retry-on", conditions.join(",")));
        if !codes.is_empty() {
            let list: Vec<String> = codes.iter().map(u16::to_string).collect();
            out.push(("x-envoy-retriable-status-codes", list.join(",")));
        }
    }
    if let Some(t) = &m.timeouts {
        if let Some(ms) = t.total_ms {
            out.push(("x-envoy-upstream-rq-timeout-ms", ms.to_string()));
        }
        if let Some(ms) = t.first_byte_ms {
            out.push(("x-envoy-upstream-rq-per-try-timeout-ms", ms.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(v: serde_json::Value) -> Model {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_policy_becomes_router_headers() {
        let m = model(serde_json::json!({
            "name": "m", "targets": [{"provider": "p", "model": "x"}],
            "retry": {"attempts": 4, "on": ["rate_limited", "overloaded", "timeout", "connect_failure"]},
            "timeouts": {"first_byte_ms": 2000, "total_ms": 30000}
        }));
        let h = headers(&m);
        let get = |k: &str| h.iter().find(|(n, _)| *n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("x-envoy-max-retries"), Some("3"));
        assert_eq!(
            get("x-envoy-retry-on"),
            Some("connect-failure,reset,retriable-status-codes")
        );
        assert_eq!(get("x-envoy-retriable-status-codes"), Some("429,503,529"));
        assert_eq!(get("x-envoy-upstream-rq-timeout-ms"), Some("30000"));
        assert_eq!(get("x-envoy-upstream-rq-per-try-timeout-ms"), Some("2000"));
    }

    #[test]
    fn no_retry_is_zero_retries_and_fallback_alone_gets_one() {
        let one = model(serde_json::json!({
            "name": "m", "targets": [{"provider": "p", "model": "x"}],
            "retry": {"attempts": 1}
        }));
        assert_eq!(
            headers(&one),
            vec![("x-envoy-max-retries", "0".to_string())]
        );
        let fallback = model(serde_json::json!({
            "name": "m", "targets": [{"provider": "p", "model": "x"},
                                     {"provider": "q", "model": "y", "priority": 1}]
        }));
        let h = headers(&fallback);
        assert_eq!(h[0], ("x-envoy-max-retries", "1".to_string()));
        assert_eq!(
            h[1],
            (
                "x-envoy-retry-on",
                "connect-failure,reset,retriable-status-codes".to_string()
            )
        );
        assert_eq!(
            h[2],
            (
                "x-envoy-retriable-status-codes",
                "429,500,502,503,504,529".to_string()
            )
        );
    }
}
