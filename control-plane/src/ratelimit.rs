//! Global limits: Envoy's rate limit service API
//! (`envoy.service.ratelimit.v3`) with the counters in Redis, so that every
//! Envoy of a fleet counts a key's rpm, tpm and budget against one counter
//! (docs/fleet.md).
//!
//! Envoy's `envoy.filters.http.ratelimit` filter is the client. The bootstrap
//! (envoy/launch.py, `global_limits`) builds the descriptors from filter state
//! the Sluice filter sets: before the request leaves, `sluice_key` (the key
//! id, only for keys with rpm/tpm limits or a budget) and `sluice_budget_hold`
//! (the request's cost estimate, micro-dollars); when the response ends,
//! only if this service admitted it, `sluice_settle` (the key id again),
//! `sluice_tokens` and `sluice_budget_spent` (what the provider billed).
//!
//! | descriptor | `hits_addend` | when | here |
//! |---|---|---|---|
//! | `sluice_key=<id>, sluice_limit=requests` | 1 | request | taken only if all fit |
//! | `sluice_key=<id>, sluice_limit=tokens` | 0 | request | checked, nothing counted |
//! | `sluice_key=<id>, sluice_limit=budget` | the estimate | request | reserved only if all fit |
//! | `sluice_key=<settle>, sluice_limit=tokens` | the billed tokens | stream end | always charged |
//! | `sluice_key=<settle>, sluice_limit=budget_spent` | the billed cost | stream end | always charged |
//! | `sluice_key=<settle>, sluice_limit=budget`, negative | the estimate | stream end | released |
//!
//! So a budget counter holds what was billed plus what requests in flight
//! reserved: N Envoys together overshoot a budget by no more than the
//! difference between what in-flight requests were estimated at and what
//! they are billed.
//!
//! The limits themselves come from the published configuration: the keys'
//! `limits` (the same numbers the filter enforces per Envoy) and `budget`
//! (what remained when its epoch started; the counter is per epoch, so a
//! new budget or period starts from zero as the filter's own counters do).
//! Nothing else to configure. A descriptor this service does not know
//! (another domain, a key without that limit) is answered OK.
//!
//! Why not the `limitador` crate: its counters only grow (`delta: u64`), so
//! `is_negative_hits` refunds cannot be expressed; its limits are static
//! `Limit` objects per namespace with CEL conditions, where ours are per key
//! and change on every push; and it brings a CEL interpreter and RocksDB.
//! The part that must be right — one atomic decision over several counters —
//! is one Lua script run by Redis itself, through the `redis` crate.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitService;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use tokio::sync::watch;

use crate::app::Snapshot;

/// The descriptor domain the bootstrap's ratelimit filter uses.
pub const DOMAIN: &str = "sluice";
/// Descriptor entry keys (envoy/launch.py builds them).
pub const KEY_ENTRY: &str = "sluice_key";
pub const LIMIT_ENTRY: &str = "sluice_limit";
/// The request's `:path`, so a refusal is written in the client's API.
pub const PATH_ENTRY: &str = "sluice_path";

/// Fixed windows of one minute, as the filter's own limits.
const WINDOW_S: u64 = 60;
/// Counters outlive their window by one more, then Redis drops them.
const COUNTER_TTL_S: u64 = 2 * WINDOW_S;
/// A budget counter lives as long as its epoch is in use: its expiry is
/// pushed back on every touch, and an epoch idle this long is dropped.
const BUDGET_TTL_S: u64 = 400 * 86_400;

/// One decision over every counter of a request, atomically (a script runs
/// alone in Redis). ARGV per KEY: limit, hits, mode, ttl, and 1 when the
/// ttl is pushed back on every touch (budgets) rather than set once
/// (windows).
/// - `take`: counted only if every `take` and `check` of the request fits;
/// - `check`: nothing counted; over when the window is already full;
/// - `charge`: always counted (usage that happened: refusing it is moot);
/// - `refund`: subtracted, never below zero.
///
/// Returns, per KEY, the counter after the decision, then 1 if over.
const SCRIPT: &str = r#"
local n = #KEYS
local cur = {}
local over = 0
for i = 1, n do
  local limit = tonumber(ARGV[i * 5 - 4])
  local hits = tonumber(ARGV[i * 5 - 3])
  local mode = ARGV[i * 5 - 2]
  cur[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if mode == 'take' and cur[i] + hits > limit then over = 1 end
  if mode == 'check' and cur[i] >= limit then over = 1 end
end
for i = 1, n do
  local hits = tonumber(ARGV[i * 5 - 3])
  local mode = ARGV[i * 5 - 2]
  local ttl = tonumber(ARGV[i * 5 - 1])
  if mode == 'charge' or (mode == 'take' and over == 0) then
    cur[i] = redis.call('INCRBY', KEYS[i], hits)
    if ARGV[i * 5] == '1' then
      redis.call('EXPIRE', KEYS[i], ttl)
    else
      redis.call('EXPIRE', KEYS[i], ttl, 'NX')
    end
  elseif mode == 'refund' then
    cur[i] = redis.call('DECRBY', KEYS[i], hits)
    if cur[i] < 0 then
      redis.call('SET', KEYS[i], 0, 'KEEPTTL')
      cur[i] = 0
    end
  end
end
cur[n + 1] = over
return cur
"#;

/// What one descriptor asks of its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Take,
    Check,
    Charge,
    Refund,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Take => "take",
            Mode::Check => "check",
            Mode::Charge => "charge",
            Mode::Refund => "refund",
        }
    }
}

/// Which of a key's limits a descriptor counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Requests,
    Tokens,
    /// Micro-dollars of the budget's epoch (`Counted::window` is the
    /// epoch).
    Budget,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::Budget => "budget",
        }
    }
}

/// One descriptor this service counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    pub key_id: String,
    pub kind: Kind,
    pub limit: u64,
    pub hits: u64,
    pub mode: Mode,
    /// A budget's epoch (its counter's name); unused for the windows.
    pub epoch: u64,
}

/// What one key is limited to across Envoys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLimits {
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    /// (micro-dollars remaining when the epoch started, epoch).
    pub budget: Option<(u64, u64)>,
}

/// The limits of each key that has any, from the published configuration.
pub type LimitTable = HashMap<String, KeyLimits>;

/// The table of a published configuration (keys without rpm, tpm or a
/// budget are left out: their descriptors are answered OK).
pub fn limit_table(config_json: &str) -> LimitTable {
    let Ok(cfg) = serde_json::from_str::<sluice_config::PluginConfig>(config_json) else {
        return LimitTable::new();
    };
    cfg.keys
        .into_iter()
        .filter_map(|k| {
            let l = KeyLimits {
                rpm: k.limits.and_then(|l| l.rpm),
                tpm: k.limits.and_then(|l| l.tpm),
                budget: k
                    .budget
                    .map(|b| (sluice_core::budget::micros(b.remaining_usd), b.epoch)),
            };
            (l != KeyLimits::default()).then_some((k.id, l))
        })
        .collect()
}

/// What a descriptor asks, or `None` when it is not one of ours. The hits
/// are the descriptor's own `hits_addend` when set (0 = check only), else
/// the request's (0 there means 1, as the API says).
pub fn classify(d: &RateLimitDescriptor, request_hits: u32, table: &LimitTable) -> Option<Counted> {
    let entry = |name: &str| {
        d.entries
            .iter()
            .find(|e| e.key == name)
            .map(|e| e.value.as_str())
    };
    let key_id = entry(KEY_ENTRY)?;
    // `budget_spent`: the budget's stream-end charge (its request-time
    // reservation and the release are `budget`).
    let (kind, spent) = match entry(LIMIT_ENTRY)? {
        "requests" => (Kind::Requests, false),
        "tokens" => (Kind::Tokens, false),
        "budget" => (Kind::Budget, false),
        "budget_spent" => (Kind::Budget, true),
        _ => return None,
    };
    let l = table.get(key_id)?;
    let (limit, epoch) = match kind {
        Kind::Requests => (l.rpm?, 0),
        Kind::Tokens => (l.tpm?, 0),
        Kind::Budget => l.budget?,
    };
    let hits = d
        .hits_addend
        .as_ref()
        .map(|h| h.value)
        .unwrap_or(if request_hits == 0 {
            1
        } else {
            u64::from(request_hits)
        });
    let mode = if d.is_negative_hits {
        Mode::Refund
    } else if spent {
        // What was billed is charged, nothing to decide (0: no change).
        Mode::Charge
    } else if hits == 0 {
        Mode::Check
    } else {
        match kind {
            // A request, or its budget estimate, either fits or is refused.
            Kind::Requests | Kind::Budget => Mode::Take,
            // Tokens counted at stream end were spent: always charged.
            Kind::Tokens => Mode::Charge,
        }
    };
    Some(Counted {
        key_id: key_id.to_string(),
        kind,
        limit,
        hits,
        mode,
        epoch,
    })
}

/// The Redis key of a counter: the window (a budget: its epoch) is part of
/// the name, so a new minute or budget epoch starts at zero without a
/// reset.
fn counter_key(c: &Counted, window: u64) -> String {
    match c.kind {
        Kind::Budget => format!("sluice:budget:{}:{}", c.key_id, c.epoch),
        _ => format!("sluice:rl:{}:{}:{window}", c.key_id, c.kind.as_str()),
    }
}

/// The refusal in the API the client speaks (the filter's own renderer),
/// found from the `:path` entry; OpenAI's when there is none.
/// (The Sluice filter ahead of Envoy's ratelimit filter rewrites it in the
/// client's API too, as translation needs; this body serves any other
/// client of the service.)
/// `full`: per descriptor, whether its counter is what refused the request.
pub fn refusal(
    descriptors: &[RateLimitDescriptor],
    counted: &[Option<Counted>],
    full: &[bool],
    reset_s: u64,
) -> (Vec<u8>, Vec<(String, String)>) {
    let path = descriptors
        .iter()
        .flat_map(|d| d.entries.iter())
        .find(|e| e.key == PATH_ENTRY)
        .map(|e| e.value.as_str())
        .unwrap_or_default();
    let bare = path.split(['?', '#']).next().unwrap_or_default();
    let api = match sluice_core::registry::recognize("POST", bare, path) {
        sluice_core::registry::Recognized::Generate(ep) => ep.api,
        _ => sluice_core::registry::default_api(),
    };
    let refusing = || {
        counted
            .iter()
            .zip(full)
            .filter_map(|(c, f)| c.as_ref().filter(|_| *f))
    };
    // The budget speaks only when no rate-limit window is full too (a
    // window empties within the minute; say so first).
    let budget = refusing().all(|c| c.kind == Kind::Budget) && refusing().next().is_some();
    let what = match refusing().find(|c| c.kind != Kind::Budget) {
        Some(c) if c.kind == Kind::Tokens => "tokens per minute",
        _ => "requests per minute",
    };
    use sluice_core::error::{ErrorKind, GatewayError};
    let err = if budget {
        GatewayError::over_budget_across_gateways()
    } else {
        GatewayError::new(
            429,
            ErrorKind::RateLimited,
            format!(
                "Rate limit reached for this API key ({what}, across all gateways). Retry later."
            ),
        )
    };
    let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
    if budget {
        // Tells the Sluice filter which refusal to write; waiting does not
        // bring a budget back, so no retry-after.
        headers.push(("x-sluice-limit".to_string(), "budget".to_string()));
    } else {
        headers.push(("retry-after".to_string(), reset_s.max(1).to_string()));
    }
    (api.render_error(&err), headers)
}

/// Counters shared by every Envoy, in Redis.
#[derive(Clone)]
pub struct RedisCounters {
    conn: redis::aio::ConnectionManager,
    script: Arc<redis::Script>,
}

impl RedisCounters {
    /// Connects (and reconnects on its own when Redis comes back). Each
    /// command waits at most `timeout`: Envoy's own deadline is shorter and
    /// fails open, so waiting longer only holds a task.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis {url}: {e}"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(timeout))
            .set_connection_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| format!("redis {url}: {e}"))?;
        Ok(Self {
            conn,
            script: Arc::new(redis::Script::new(SCRIPT)),
        })
    }

    /// Runs the decision; returns each counter after it and whether the
    /// request is over a limit.
    pub async fn decide(
        &self,
        counted: &[Counted],
        now_s: u64,
    ) -> Result<(Vec<u64>, bool), String> {
        let window = now_s / WINDOW_S;
        let mut inv = self.script.prepare_invoke();
        for c in counted {
            inv.key(counter_key(c, window));
            inv.arg(c.limit).arg(c.hits).arg(c.mode.as_str());
            match c.kind {
                Kind::Budget => inv.arg(BUDGET_TTL_S).arg(1),
                _ => inv.arg(COUNTER_TTL_S).arg(0),
            };
        }
        let mut conn = self.conn.clone();
        let mut out: Vec<i64> = inv
            .invoke_async(&mut conn)
            .await
            .map_err(|e| format!("redis: {e}"))?;
        let over = out.pop().unwrap_or(0) == 1;
        Ok((
            out.into_iter().map(|v| v.max(0).unsigned_abs()).collect(),
            over,
        ))
    }
}

/// The gRPC service.
pub struct Service {
    pub counters: RedisCounters,
    pub limits: Arc<RwLock<LimitTable>>,
}

impl Service {
    /// Keeps the limit table in step with every published version.
    pub fn new(counters: RedisCounters, mut snapshots: watch::Receiver<Arc<Snapshot>>) -> Self {
        let limits = Arc::new(RwLock::new(limit_table(&snapshots.borrow().config_json)));
        let table = limits.clone();
        tokio::spawn(async move {
            while snapshots.changed().await.is_ok() {
                let t = limit_table(&snapshots.borrow_and_update().config_json);
                *table.write().unwrap_or_else(|p| p.into_inner()) = t;
            }
        });
        Self { counters, limits }
    }
}

#[tonic::async_trait]
impl RateLimitService for Service {
    async fn should_rate_limit(
        &self,
        request: tonic::Request<RateLimitRequest>,
    ) -> Result<tonic::Response<RateLimitResponse>, tonic::Status> {
        let req = request.into_inner();
        let counted: Vec<Option<Counted>> = if req.domain == DOMAIN {
            let table = self.limits.read().unwrap_or_else(|p| p.into_inner());
            req.descriptors
                .iter()
                .map(|d| classify(d, req.hits_addend, &table))
                .collect()
        } else {
            vec![None; req.descriptors.len()]
        };
        let ours: Vec<Counted> = counted.iter().flatten().cloned().collect();
        let now_s = crate::store::now_s().max(0).unsigned_abs();
        let (after, over) = if ours.is_empty() {
            (Vec::new(), false)
        } else {
            match self.counters.decide(&ours, now_s).await {
                Ok(r) => r,
                // Envoy's filter applies its failure mode (open by default)
                // and counts it: `ratelimit.error`, `failure_mode_allowed`.
                Err(e) => return Err(tonic::Status::unavailable(e)),
            }
        };
        let reset = Duration::from_secs(WINDOW_S.saturating_sub(now_s % WINDOW_S));
        let mut after = after.into_iter();
        let mut fulls = Vec::with_capacity(counted.len());
        let statuses = counted
            .iter()
            .map(|c| {
                let Some(c) = c else {
                    fulls.push(false);
                    return DescriptorStatus {
                        code: Code::Ok as i32,
                        ..Default::default()
                    };
                };
                let now = after.next().unwrap_or(0);
                let full = match c.mode {
                    Mode::Take => over && now.saturating_add(c.hits) > c.limit,
                    Mode::Check => now >= c.limit,
                    Mode::Charge | Mode::Refund => false,
                };
                fulls.push(full);
                DescriptorStatus {
                    code: if full { Code::OverLimit } else { Code::Ok } as i32,
                    current_limit: Some(RateLimit {
                        name: format!("{}:{}", c.key_id, c.kind.as_str()),
                        requests_per_unit: u32::try_from(c.limit).unwrap_or(u32::MAX),
                        unit: match c.kind {
                            Kind::Budget => Unit::Unknown,
                            _ => Unit::Minute,
                        } as i32,
                    }),
                    limit_remaining: u32::try_from(c.limit.saturating_sub(now)).unwrap_or(u32::MAX),
                    duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                        seconds: i64::try_from(reset.as_secs()).unwrap_or(0),
                        nanos: 0,
                    }),
                    ..Default::default()
                }
            })
            .collect();
        let mut resp = RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..Default::default()
        };
        if over {
            let (body, headers) = refusal(&req.descriptors, &counted, &fulls, reset.as_secs());
            resp.raw_body = body;
            resp.response_headers_to_add = headers
                .into_iter()
                .map(
                    |(key, value)| envoy_types::pb::envoy::config::core::v3::HeaderValue {
                        key,
                        value,
                        ..Default::default()
                    },
                )
                .collect();
        }
        Ok(tonic::Response::new(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
    use envoy_types::pb::google::protobuf::UInt64Value;

    fn desc(kind: &str, hits: Option<u64>, negative: bool) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: vec![
                Entry {
                    key: KEY_ENTRY.into(),
                    value: "k1".into(),
                },
                Entry {
                    key: LIMIT_ENTRY.into(),
                    value: kind.into(),
                },
            ],
            hits_addend: hits.map(|value| UInt64Value { value }),
            is_negative_hits: negative,
            ..Default::default()
        }
    }

    fn table() -> LimitTable {
        LimitTable::from([(
            "k1".to_string(),
            KeyLimits {
                rpm: Some(10),
                tpm: Some(1000),
                budget: Some((5_000_000, 7)),
            },
        )])
    }

    #[test]
    fn descriptor_hits_and_modes_follow_the_api() {
        let t = table();
        let c = classify(&desc("requests", Some(1), false), 0, &t).unwrap();
        assert_eq!((c.mode, c.hits, c.limit), (Mode::Take, 1, 10));
        // Unset per-descriptor addend: the request's, and 0 there means 1.
        assert_eq!(
            classify(&desc("requests", None, false), 0, &t)
                .unwrap()
                .hits,
            1
        );
        assert_eq!(
            classify(&desc("requests", None, false), 3, &t)
                .unwrap()
                .hits,
            3
        );
        // An explicit 0 is a check.
        let c = classify(&desc("tokens", Some(0), false), 0, &t).unwrap();
        assert_eq!((c.mode, c.limit), (Mode::Check, 1000));
        // Tokens at stream end are charged; a negative addend is a refund.
        assert_eq!(
            classify(&desc("tokens", Some(77), false), 0, &t)
                .unwrap()
                .mode,
            Mode::Charge
        );
        assert_eq!(
            classify(&desc("tokens", Some(77), true), 0, &t)
                .unwrap()
                .mode,
            Mode::Refund
        );
    }

    #[test]
    fn refusals_are_in_the_clients_api() {
        let t = table();
        let with_path = |p: &str| {
            let mut d = desc("requests", Some(1), false);
            d.entries.push(Entry {
                key: PATH_ENTRY.into(),
                value: p.into(),
            });
            d
        };
        for (path, needle) in [
            ("/v1/chat/completions", "\"code\":\"rate_limit_exceeded\""),
            ("/v1/messages", "\"type\":\"rate_limit_error\""),
            (
                "/v1beta/models/gemini-2.5-flash:generateContent?key=x",
                "RESOURCE_EXHAUSTED",
            ),
        ] {
            let d = [with_path(path)];
            let counted = [classify(&d[0], 0, &t)];
            let (body, headers) = refusal(&d, &counted, &[true], 30);
            let body = String::from_utf8(body).unwrap();
            assert!(body.contains(needle), "{path}: {body}");
            assert!(body.contains("requests per minute"), "{body}");
            assert_eq!(headers[0].1, "application/json");
            assert_eq!(headers[1], ("retry-after".to_string(), "30".to_string()));
        }
    }

    /// The script's decisions on a real redis-server (installed by
    /// scripts/ensure-deps.sh): take fits or refuses without counting,
    /// check counts nothing, charge always counts, refunds floor at zero.
    #[test]
    fn the_script_decides_atomically_on_real_redis() {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        /// Stops the server even when an assertion fails.
        struct Server(std::process::Child);
        impl Drop for Server {
            fn drop(&mut self) {
                let _ = self.0.kill();
                let _ = self.0.wait();
            }
        }
        let _redis = Server(
            std::process::Command::new("redis-server")
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                ])
                .current_dir(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server (scripts/ensure-deps.sh installs it)"),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let url = format!("redis://127.0.0.1:{port}/");
            let mut counters = None;
            for _ in 0..100 {
                match RedisCounters::connect(&url, Duration::from_millis(500)).await {
                    Ok(c) => {
                        counters = Some(c);
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
            let c = counters.expect("redis did not come up");
            let now = 120 * 60 + 5;
            let item = |kind, limit, hits, mode| Counted {
                key_id: "k".into(),
                kind,
                limit,
                hits,
                mode,
                epoch: 1,
            };
            let take = item(Kind::Requests, 2, 1, Mode::Take);
            let check = item(Kind::Tokens, 100, 0, Mode::Check);
            // Two fit, the third is refused and not counted.
            assert_eq!(
                c.decide(&[take.clone(), check.clone()], now).await.unwrap(),
                (vec![1, 0], false)
            );
            assert_eq!(
                c.decide(&[take.clone(), check.clone()], now).await.unwrap(),
                (vec![2, 0], false)
            );
            assert_eq!(
                c.decide(&[take.clone(), check.clone()], now).await.unwrap(),
                (vec![2, 0], true)
            );
            // Tokens spent are charged even past the limit; then the check
            // refuses, and the request's take is not counted either.
            let charge = item(Kind::Tokens, 100, 150, Mode::Charge);
            assert_eq!(c.decide(&[charge], now).await.unwrap(), (vec![150], false));
            let roomy = item(Kind::Requests, 50, 1, Mode::Take);
            let roomy = Counted {
                key_id: "other".into(),
                ..roomy
            };
            let check_k = check.clone();
            assert_eq!(
                c.decide(&[roomy, check_k], now).await.unwrap(),
                (vec![0, 150], true)
            );
            // A refund lowers it, never below zero.
            let refund = item(Kind::Tokens, 100, 60, Mode::Refund);
            assert_eq!(
                c.decide(std::slice::from_ref(&refund), now).await.unwrap(),
                (vec![90], false)
            );
            assert_eq!(
                c.decide(std::slice::from_ref(&check), now).await.unwrap(),
                (vec![90], false)
            );
            // Each counter as it stood after its own step: 90 → 30 → 0.
            assert_eq!(
                c.decide(&[refund.clone(), refund], now).await.unwrap(),
                (vec![30, 0], false)
            );
            // The next minute starts empty.
            assert_eq!(
                c.decide(std::slice::from_ref(&take), now + 60)
                    .await
                    .unwrap(),
                (vec![1], false)
            );
            // A budget of $1: two estimates of $0.4 are reserved, a third is
            // refused; the first settles at $0.1 billed (its $0.4 released),
            // which makes room again. Budget counters are the epoch's, not
            // the minute's.
            let hold = item(Kind::Budget, 1_000_000, 400_000, Mode::Take);
            assert_eq!(
                c.decide(std::slice::from_ref(&hold), now).await.unwrap(),
                (vec![400_000], false)
            );
            assert_eq!(
                c.decide(std::slice::from_ref(&hold), now + 600)
                    .await
                    .unwrap(),
                (vec![800_000], false)
            );
            assert_eq!(
                c.decide(std::slice::from_ref(&hold), now).await.unwrap(),
                (vec![800_000], true)
            );
            let spent = item(Kind::Budget, 1_000_000, 100_000, Mode::Charge);
            let release = item(Kind::Budget, 1_000_000, 400_000, Mode::Refund);
            assert_eq!(
                c.decide(&[spent, release], now).await.unwrap(),
                (vec![900_000, 500_000], false)
            );
            assert_eq!(
                c.decide(std::slice::from_ref(&hold), now).await.unwrap(),
                (vec![900_000], false)
            );
            // A new epoch (a budget set again, a period rolled over) starts
            // at zero.
            let next = Counted {
                epoch: 2,
                ..hold.clone()
            };
            assert_eq!(
                c.decide(&[next], now).await.unwrap(),
                (vec![400_000], false)
            );
            // Together with a window: one refuses, neither is counted.
            let small = Counted { limit: 100, ..hold };
            assert_eq!(
                c.decide(&[take, small], now + 60).await.unwrap(),
                (vec![1, 900_000], true)
            );
        });
    }

    #[test]
    fn budget_descriptors_reserve_charge_and_release() {
        let t = table();
        let c = classify(&desc("budget", Some(300), false), 0, &t).unwrap();
        assert_eq!(
            (c.kind, c.mode, c.limit, c.hits, c.epoch),
            (Kind::Budget, Mode::Take, 5_000_000, 300, 7)
        );
        let c = classify(&desc("budget_spent", Some(250), false), 0, &t).unwrap();
        assert_eq!((c.kind, c.mode), (Kind::Budget, Mode::Charge));
        // Billed nothing: charged nothing, never a check at stream end.
        let c = classify(&desc("budget_spent", Some(0), false), 0, &t).unwrap();
        assert_eq!((c.mode, c.hits), (Mode::Charge, 0));
        let c = classify(&desc("budget", Some(300), true), 0, &t).unwrap();
        assert_eq!(c.mode, Mode::Refund);
        // An unpriced estimate of 0: the budget is only checked.
        let c = classify(&desc("budget", Some(0), false), 0, &t).unwrap();
        assert_eq!(c.mode, Mode::Check);
        // The refusal says budget (and the filter is told so), unless a
        // rate-limit window refused the request too.
        let d = [
            desc("budget", Some(300), false),
            desc("requests", Some(1), false),
        ];
        let counted: Vec<_> = d.iter().map(|d| classify(d, 0, &t)).collect();
        let (body, headers) = refusal(&d, &counted, &[true, false], 30);
        let body = String::from_utf8(body).unwrap();
        assert!(
            body.contains("insufficient_quota") && body.contains("budget"),
            "{body}"
        );
        assert!(headers.contains(&("x-sluice-limit".to_string(), "budget".to_string())));
        assert!(!headers.iter().any(|(k, _)| k == "retry-after"));
        let (body, headers) = refusal(&d, &counted, &[true, true], 30);
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("requests per minute"));
        assert!(headers.iter().any(|(k, _)| k == "retry-after"));
    }

    #[test]
    fn descriptors_not_ours_are_not_counted() {
        let t = table();
        let mut d = desc("requests", Some(1), false);
        d.entries[0].value = "unknown-key".into();
        assert!(classify(&d, 0, &t).is_none());
        assert!(classify(&desc("bytes", Some(1), false), 0, &t).is_none());
        let no_tpm = LimitTable::from([(
            "k1".to_string(),
            KeyLimits {
                rpm: Some(10),
                ..Default::default()
            },
        )]);
        assert!(classify(&desc("tokens", Some(0), false), 0, &no_tpm).is_none());
    }

    #[test]
    fn the_table_holds_keys_with_rpm_or_tpm_only() {
        let cfg = serde_json::json!({
            "keys": [
                {"id": "a", "sha256": "00", "limits": {"rpm": 5}},
                {"id": "b", "sha256": "01", "limits": {"concurrent_streams": 2}},
                {"id": "c", "sha256": "02"},
                {"id": "d", "sha256": "03", "budget": {"remaining_usd": 2.5, "epoch": 9}}
            ],
            "providers": [], "models": []
        });
        let t = limit_table(&cfg.to_string());
        assert_eq!(
            t.get("a"),
            Some(&KeyLimits {
                rpm: Some(5),
                ..Default::default()
            })
        );
        assert_eq!(t.get("d").and_then(|l| l.budget), Some((2_500_000, 9)));
        assert!(!t.contains_key("b") && !t.contains_key("c"));
    }
}
