//! Replays baseline records through two gateways (black boxes, by URL) and
//! compares their answers. The provider behind both is the replaying mock
//! (`sluice-mock-provider --replay-baseline FILE`): each request carries
//! `x-sluice-replay-id`, which the gateways forward, and the mock answers
//! with that record's recorded provider response — so both gateways see
//! identical upstream behaviour — and logs what each side sent it
//! (`x-sluice-replay-side`) for the upstream-request comparison.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::compare::{compare_responses, compare_upstream, Diff, UpstreamSeen};
use crate::record::{HttpResponse, Record};
use crate::ruleset::Ruleset;

pub const REPLAY_ID_HEADER: &str = "x-sluice-replay-id";
pub const REPLAY_SIDE_HEADER: &str = "x-sluice-replay-side";
/// Bound on one answer read into memory.
const MAX_ANSWER_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// `None`: the recorded client response is the primary answer.
    pub primary: Option<String>,
    pub shadow: String,
    /// Virtual key sent to both gateways, in each dialect's header.
    pub api_key: String,
    /// Base URL of the replaying mock (for upstream-request comparison).
    pub upstream_log: Option<String>,
    pub concurrency: usize,
    pub timeout: Duration,
    /// No new record is started after this much time.
    pub max_time: Duration,
}

/// One gateway's answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub response: HttpResponse,
    pub latency_ms: f64,
    /// Transport failure (connect, timeout, reset).
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub record: usize,
    pub primary: Answer,
    pub shadow: Answer,
    pub diffs: Vec<Diff>,
}

fn dialect_auth(record: &Record, key: &str) -> (&'static str, String) {
    match record.meta.client_dialect.as_str() {
        "anthropic" => ("x-api-key", key.to_string()),
        "gemini" => ("x-goog-api-key", key.to_string()),
        _ => ("authorization", format!("Bearer {key}")),
    }
}

fn send(agent: &ureq::Agent, base: &str, record: &Record, key: &str, side: &str) -> Answer {
    let req = &record.client_request;
    let url = format!("{}{}", base.trim_end_matches('/'), req.path);
    let body = match &req.body {
        Value::Null => Vec::new(),
        Value::String(s) => s.clone().into_bytes(),
        v => v.to_string().into_bytes(),
    };
    let mut b = ureq::http::Request::builder()
        .method(req.method.as_str())
        .uri(&url);
    for (k, v) in &req.headers {
        b = b.header(k, v);
    }
    let (auth_name, auth_value) = dialect_auth(record, key);
    b = b
        .header(auth_name, auth_value)
        .header(REPLAY_ID_HEADER, &record.id)
        .header(REPLAY_SIDE_HEADER, side);
    let started = Instant::now();
    let failed = |e: String| Answer {
        response: HttpResponse {
            status: 0,
            headers: Default::default(),
            body: Value::Null,
            events: None,
        },
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
        error: Some(e),
    };
    let request = match b.body(body) {
        Ok(r) => r,
        Err(e) => return failed(e.to_string()),
    };
    let resp = match agent.run(request) {
        Ok(r) => r,
        Err(e) => return failed(e.to_string()),
    };
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let warnings = resp
        .headers()
        .get("x-sluice-warnings")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut text = String::new();
    let read = resp
        .into_body()
        .into_reader()
        .take(MAX_ANSWER_BYTES)
        .read_to_string(&mut text);
    if let Err(e) = read {
        return failed(e.to_string());
    }
    let mut response = HttpResponse::from_raw(status, content_type.as_deref(), &text);
    if let Some(w) = warnings {
        response.headers.insert("x-sluice-warnings".into(), w);
    }
    Answer {
        response,
        latency_ms: started.elapsed().as_secs_f64() * 1e3,
        error: None,
    }
}

fn upstream_seen(
    agent: &ureq::Agent,
    base: &str,
    id: &str,
) -> (Option<UpstreamSeen>, Option<UpstreamSeen>) {
    let url = format!("{}/__mock/replay-log?id={id}", base.trim_end_matches('/'));
    let Ok(resp) = agent.get(&url).call() else {
        return (None, None);
    };
    let mut text = String::new();
    if resp
        .into_body()
        .into_reader()
        .take(MAX_ANSWER_BYTES)
        .read_to_string(&mut text)
        .is_err()
    {
        return (None, None);
    }
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let side = |s: &str| serde_json::from_value::<UpstreamSeen>(v.get(s)?.clone()).ok();
    (side("primary"), side("shadow"))
}

/// Only what the ruleset compares: status and the compared headers.
fn recorded_answer(r: &Record) -> Answer {
    Answer {
        response: r.client_response.clone(),
        latency_ms: f64::NAN,
        error: None,
    }
}

/// Replays every record (bounded in concurrency and time) and compares.
pub fn run(records: &[Record], opts: &RunOptions, rules: &Ruleset) -> (Vec<Outcome>, usize) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(opts.timeout))
        .build()
        .into();
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::with_capacity(records.len()));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..opts.concurrency.max(1) {
            s.spawn(|| loop {
                if started.elapsed() > opts.max_time {
                    return;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(rec) = records.get(i) else {
                    return;
                };
                // Alternate which side goes first so neither gets the
                // warmer caches systematically.
                let (primary, shadow) = match &opts.primary {
                    None => (
                        recorded_answer(rec),
                        send(&agent, &opts.shadow, rec, &opts.api_key, "shadow"),
                    ),
                    Some(p) if i.is_multiple_of(2) => {
                        let a = send(&agent, p, rec, &opts.api_key, "primary");
                        (a, send(&agent, &opts.shadow, rec, &opts.api_key, "shadow"))
                    }
                    Some(p) => {
                        let b = send(&agent, &opts.shadow, rec, &opts.api_key, "shadow");
                        (send(&agent, p, rec, &opts.api_key, "primary"), b)
                    }
                };
                let mut diffs = compare_responses(&primary.response, &shadow.response, rules);
                if let Some(log) = &opts.upstream_log {
                    let (mut up_a, up_b) = upstream_seen(&agent, log, &rec.id);
                    if opts.primary.is_none() {
                        up_a = rec.upstream.as_ref().map(|u| UpstreamSeen {
                            path: u.path.clone(),
                            body: u.request.clone(),
                        });
                    }
                    diffs.extend(compare_upstream(up_a.as_ref(), up_b.as_ref(), rules));
                }
                let o = Outcome {
                    record: i,
                    primary,
                    shadow,
                    diffs,
                };
                out.lock().unwrap_or_else(|p| p.into_inner()).push(o);
            });
        }
    });
    let mut v = out.into_inner().unwrap_or_else(|p| p.into_inner());
    v.sort_by_key(|o| o.record);
    let skipped = records.len() - v.len();
    (v, skipped)
}
