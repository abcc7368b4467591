//! Global rate limits: Envoy's rate limit service API
//! (`envoy.service.ratelimit.v3`) with the counters in Redis, so that every
//! Envoy of a fleet counts a key's rpm and tpm against one window
//! (docs/fleet.md).
//!
//! Envoy's `envoy.filters.http.ratelimit` filter is the client. The bootstrap
//! (envoy/launch.py, `global_limits`) builds the descriptors from filter state
//! the Sluice filter sets: `sluice_key` (the key id, only for keys with rpm or
//! tpm limits) and, at the end of the response, `sluice_tokens` (what the
//! provider billed). Three entries per request:
//!
//! | descriptor | `hits_addend` | when | here |
//! |---|---|---|---|
//! | `sluice_key=<id>, sluice_limit=requests` | 1 | request | taken only if it fits |
//! | `sluice_key=<id>, sluice_limit=tokens` | 0 | request | checked, nothing counted |
//! | `sluice_key=<id>, sluice_limit=tokens` | the billed tokens | stream end | always charged |
//!
//! The limits themselves are the keys' `limits` in the published
//! configuration (the same numbers the filter enforces per Envoy): nothing
//! else to configure. A descriptor this service does not know (another
//! domain, a key without that limit) is answered OK.
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

/// One decision over every counter of a request, atomically (a script runs
/// alone in Redis). ARGV: ttl, then per KEY: limit, hits, mode.
/// - `take`: counted only if every `take` and `check` of the request fits;
/// - `check`: nothing counted; over when the window is already full;
/// - `charge`: always counted (usage that happened: refusing it is moot);
/// - `refund`: subtracted, never below zero.
///
/// Returns, per KEY, the counter after the decision, then 1 if over.
const SCRIPT: &str = r#"
local ttl = tonumber(ARGV[1])
local n = #KEYS
local cur = {}
local over = 0
for i = 1, n do
  local limit = tonumber(ARGV[i * 3 - 1])
  local hits = tonumber(ARGV[i * 3])
  local mode = ARGV[i * 3 + 1]
  cur[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if mode == 'take' and cur[i] + hits > limit then over = 1 end
  if mode == 'check' and cur[i] >= limit then over = 1 end
end
for i = 1, n do
  local hits = tonumber(ARGV[i * 3])
  local mode = ARGV[i * 3 + 1]
  if mode == 'charge' or (mode == 'take' and over == 0) then
    cur[i] = redis.call('INCRBY', KEYS[i], hits)
    redis.call('EXPIRE', KEYS[i], ttl, 'NX')
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
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
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
}

/// The rpm/tpm of each key with a limit, from the published configuration.
pub type LimitTable = HashMap<String, (Option<u64>, Option<u64>)>;

/// The table of a published configuration (keys without rpm and tpm are
/// left out: their descriptors are answered OK).
pub fn limit_table(config_json: &str) -> LimitTable {
    let Ok(cfg) = serde_json::from_str::<sluice_config::PluginConfig>(config_json) else {
        return LimitTable::new();
    };
    cfg.keys
        .into_iter()
        .filter_map(|k| {
            let l = k.limits?;
            (l.rpm.is_some() || l.tpm.is_some()).then_some((k.id, (l.rpm, l.tpm)))
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
    let kind = match entry(LIMIT_ENTRY)? {
        "requests" => Kind::Requests,
        "tokens" => Kind::Tokens,
        _ => return None,
    };
    let (rpm, tpm) = table.get(key_id)?;
    let limit = match kind {
        Kind::Requests => (*rpm)?,
        Kind::Tokens => (*tpm)?,
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
    } else if hits == 0 {
        Mode::Check
    } else {
        match kind {
            // A request either fits or is refused.
            Kind::Requests => Mode::Take,
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
    })
}

/// The Redis key of a counter: the window is part of the name, so a new
/// minute starts at zero without a reset.
fn counter_key(c: &Counted, window: u64) -> String {
    format!("sluice:rl:{}:{}:{window}", c.key_id, c.kind.as_str())
}

/// The refusal in the API the client speaks (the filter's own renderer),
/// found from the `:path` entry; OpenAI's when there is none.
/// (The Sluice filter ahead of Envoy's ratelimit filter rewrites it in the
/// client's API too, as translation needs; this body serves any other
/// client of the service.)
pub fn refusal(
    descriptors: &[RateLimitDescriptor],
    counted: &[Option<Counted>],
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
    let what = match counted.iter().flatten().find(|c| c.mode != Mode::Charge) {
        Some(c) if c.kind == Kind::Tokens => "tokens per minute",
        _ => "requests per minute",
    };
    let err = sluice_core::error::GatewayError::new(
        429,
        sluice_core::error::ErrorKind::RateLimited,
        format!("Rate limit reached for this API key ({what}, across all gateways). Retry later."),
    );
    (
        api.render_error(&err),
        vec![
            ("content-type".to_string(), "application/json".to_string()),
            ("retry-after".to_string(), reset_s.max(1).to_string()),
        ],
    )
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
        inv.arg(COUNTER_TTL_S);
        for c in counted {
            inv.key(counter_key(c, window));
            inv.arg(c.limit).arg(c.hits).arg(c.mode.as_str());
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
        let statuses = counted
            .iter()
            .map(|c| {
                let Some(c) = c else {
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
                DescriptorStatus {
                    code: if full { Code::OverLimit } else { Code::Ok } as i32,
                    current_limit: Some(RateLimit {
                        name: format!("{}:{}", c.key_id, c.kind.as_str()),
                        requests_per_unit: u32::try_from(c.limit).unwrap_or(u32::MAX),
                        unit: Unit::Minute as i32,
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
            let (body, headers) = refusal(&req.descriptors, &counted, reset.as_secs());
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
        LimitTable::from([("k1".to_string(), (Some(10), Some(1000)))])
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
            let (body, headers) = refusal(&d, &counted, 30);
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
            assert_eq!(c.decide(&[take], now + 60).await.unwrap(), (vec![1], false));
        });
    }

    #[test]
    fn descriptors_not_ours_are_not_counted() {
        let t = table();
        let mut d = desc("requests", Some(1), false);
        d.entries[0].value = "unknown-key".into();
        assert!(classify(&d, 0, &t).is_none());
        assert!(classify(&desc("bytes", Some(1), false), 0, &t).is_none());
        let no_tpm = LimitTable::from([("k1".to_string(), (Some(10), None))]);
        assert!(classify(&desc("tokens", Some(0), false), 0, &no_tpm).is_none());
    }

    #[test]
    fn the_table_holds_keys_with_rpm_or_tpm_only() {
        let cfg = serde_json::json!({
            "keys": [
                {"id": "a", "sha256": "00", "limits": {"rpm": 5}},
                {"id": "b", "sha256": "01", "limits": {"concurrent_streams": 2}},
                {"id": "c", "sha256": "02"}
            ],
            "providers": [], "models": []
        });
        let t = limit_table(&cfg.to_string());
        assert_eq!(t.get("a"), Some(&(Some(5), None)));
        assert!(!t.contains_key("b") && !t.contains_key("c"));
    }
}
