//! `sluice serve`: start-up (store, seed, prices, the first published
//! version), the gRPC services (ECDS, SDS, access logs; every call needs the
//! gRPC token) and the admin HTTP API on a runtime of its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use envoy_types::pb::envoy::service::accesslog::v3::access_log_service_server::AccessLogServiceServer;
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::ClusterDiscoveryServiceServer;
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryServiceServer;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;
use tokio::sync::{mpsc, watch};

use crate::{admin, als, app, capture, config_build, ingest, pricing, ratelimit, sds, store, xds};

/// Largest access-log message accepted: above any batch Envoy sends (its
/// buffer flushes at 16 KiB) plus capture records at their 16 MiB cap.
const MAX_ACCESS_LOG_MESSAGE: usize = 64 << 20;

/// `sluice serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The store: a sqlite file (created if missing; the embedded
    /// default) or `postgres://user@host:port/db`, shared by control-plane
    /// replicas (docs/fleet.md).
    #[arg(
        long,
        env = "SLUICE_DB",
        hide_env_values = true,
        default_value = "sluice.db"
    )]
    db: String,
    /// With `?sslmode=require` in a Postgres `--db`: the CA bundle (PEM)
    /// the server's certificate must chain to (default: the system's). The
    /// certificate's host name is checked too.
    #[arg(long, env = "SLUICE_DB_CA")]
    db_ca: Option<PathBuf>,
    /// gRPC address for xDS (ECDS) and the AccessLogService.
    #[arg(long, default_value = "127.0.0.1:18000")]
    grpc: SocketAddr,
    /// Admin HTTP API address.
    #[arg(long, default_value = "127.0.0.1:18001")]
    admin: SocketAddr,
    /// Read-only admin token.
    #[arg(long, env = "SLUICE_ADMIN_READ_TOKEN", hide_env_values = true)]
    read_token: Option<String>,
    /// Path of the filter .wasm as Envoy sees it (a file on Envoy's host).
    #[arg(long, required_unless_present = "wasm_file")]
    wasm: Option<String>,
    /// Envoy fetches the module from this URL instead (checked against its
    /// SHA-256), through `--wasm-cluster`. With `--wasm-file`, the control
    /// plane serves it itself at `/wasm/sluice.wasm` on the admin address.
    #[arg(long, requires = "wasm_file")]
    wasm_url: Option<String>,
    /// Envoy cluster that reaches `--wasm-url`.
    #[arg(long, default_value = "sluice_control_plane_http")]
    wasm_cluster: String,
    /// The module file: hashed for `--wasm-url` and served at
    /// /wasm/sluice.wasm; alone, pushed inline in the ECDS resource.
    #[arg(long)]
    wasm_file: Option<PathBuf>,
    /// ECDS resource name (the `config_discovery` name in Envoy's bootstrap).
    #[arg(long, default_value = "sluice")]
    resource_name: String,
    /// Env vars exposed to the VM (provider keys), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "")]
    env_keys: Vec<String>,
    /// Env vars of the control plane itself holding provider keys, served to
    /// Envoy as SDS generic secrets of the same name for the
    /// `credential_injector` on each provider's cluster (one Secret for the
    /// keys rather than every proxy's env). Envoy redacts them in
    /// `/config_dump`; they never enter the VM or the filter's config.
    #[arg(long, alias = "push-env", value_delimiter = ',', default_value = "")]
    provider_secrets: Vec<String>,
    /// Token every gRPC call (ECDS, SDS, access logs) must carry as
    /// `authorization: Bearer <token>` (Envoy: the grpc_service's
    /// `initial_metadata`). Required.
    #[arg(long, env = "SLUICE_GRPC_TOKEN", hide_env_values = true)]
    grpc_token: Option<String>,
    /// The name of the cluster by which Envoy reaches this control plane
    /// (its bootstrap's): pushed clusters get provider keys over SDS from it.
    #[arg(long, default_value = "sluice_control_plane")]
    xds_cluster: String,
    /// A plugin configuration (JSON) to seed an empty database with.
    #[arg(long)]
    seed: Option<PathBuf>,
    /// Directory for captured replay baselines (sanitized JSON Lines);
    /// without it, capture records are counted and dropped.
    #[arg(long)]
    capture_dir: Option<PathBuf>,
    /// Env var holding the salt of the PII hashes in captured records
    /// (random per start when unset: hashes then differ across restarts).
    #[arg(long, default_value = "SLUICE_CAPTURE_SALT")]
    capture_salt_env: String,
    /// Redis for global rate limits (`redis://host:port/`): serves Envoy's
    /// rate limit service API on the gRPC address, counting every Envoy's
    /// requests and tokens per key in one window (docs/fleet.md). Without
    /// it, limits are per Envoy.
    #[arg(long, env = "SLUICE_REDIS_URL", hide_env_values = true)]
    redis: Option<String>,
    /// Longest wait for Redis per rate-limit call; keep it under the
    /// Envoy filter's own timeout (which fails open).
    #[arg(long, default_value_t = 40)]
    redis_timeout_ms: u64,
}

/// Runs the control plane until interrupted. `rw_token`: the admin API's
/// read-write token.
pub fn run(a: ServeArgs, rw_token: String) -> Result<(), String> {
    if rw_token.is_empty() {
        return Err("serve needs an admin token: --token or SLUICE_ADMIN_TOKEN".into());
    }
    let grpc_token: Arc<str> = match a.grpc_token.as_deref() {
        Some(t) if t.len() >= 16 => Arc::from(t),
        _ => {
            return Err(
                "serve needs a gRPC token of 16+ characters (--grpc-token or \
                        SLUICE_GRPC_TOKEN): every Envoy sends it with its xDS and \
                        access-log calls"
                    .into(),
            )
        }
    };
    let provider_secrets: std::collections::BTreeMap<String, String> = a
        .provider_secrets
        .iter()
        .filter(|k| !k.is_empty())
        .filter_map(|k| Some((k.clone(), std::env::var(k).ok().filter(|v| !v.is_empty())?)))
        .collect();
    let st =
        store::Store::open_url(&a.db, a.db_ca.as_deref()).map_err(|e| format!("store: {e}"))?;
    let st_engine = st.engine();
    if let Some(p) = &a.seed {
        store::seed(&st, p)?;
    }
    {
        // Which providers' keys Envoy injects (config_build reads it).
        let names: Vec<&String> = provider_secrets.keys().collect();
        store::put_setting(&st.lock(), "provider_secrets", Some(&names))?;
    }
    {
        let c = st.lock();
        if store::list_prices(&c)
            .map_err(|e| e.to_string())?
            .is_empty()
        {
            for p in pricing::builtin() {
                store::upsert_price(&c, &p).map_err(|e| e.to_string())?;
            }
        }
    }
    let (version, config_json) = {
        let c = st.lock();
        c.transaction(config_build::publish)?
    };
    let (snap_tx, _) = watch::channel(Arc::new(app::Snapshot {
        version,
        config_json,
    }));
    let wasm_bytes = match &a.wasm_file {
        Some(p) => Some(axum::body::Bytes::from(
            std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => None,
    };
    let code = match (&a.wasm_url, &wasm_bytes, a.wasm.clone()) {
        (Some(url), Some(bytes), _) => app::WasmCode::Remote {
            url: url.clone(),
            cluster: a.wasm_cluster.clone(),
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes.as_ref())),
        },
        (None, Some(bytes), None) => app::WasmCode::Inline {
            bytes: bytes.clone(),
            sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes.as_ref())),
        },
        (_, _, Some(path)) => app::WasmCode::Local(path),
        _ => {
            return Err(
                "--wasm PATH, --wasm-file PATH or --wasm-url URL --wasm-file PATH is required"
                    .into(),
            )
        }
    };
    let (ingest_tx, ingest_rx) = mpsc::channel(4096);
    let capture_counters = Arc::new(capture::Counters::default());
    let mut capture_task = None;
    let capture_tx = match &a.capture_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let salt = match std::env::var(&a.capture_salt_env) {
                Ok(s) if !s.is_empty() => s.into_bytes(),
                _ => {
                    let mut b = [0u8; 32];
                    getrandom::fill(&mut b).map_err(|e| e.to_string())?;
                    b.to_vec()
                }
            };
            // Provider keys the control plane knows are redacted verbatim
            // wherever they appear, on top of the secret detector.
            let exact = a
                .env_keys
                .iter()
                .chain(&a.provider_secrets)
                .filter_map(|k| std::env::var(k).ok())
                .collect();
            let sanitizer = sluice_replay::sanitize::Sanitizer::new(&salt, exact)?;
            let (tx, rx) = mpsc::channel(1024);
            capture_task = Some((dir.clone(), sanitizer, rx));
            Some(tx)
        }
        None => None,
    };
    let app = Arc::new(app::App {
        store: st,
        snapshot: snap_tx,
        nodes: Mutex::new(Default::default()),
        wasm: app::WasmSpec {
            resource_name: a.resource_name,
            code,
            vm_id: "sluice".into(),
            env_keys: a
                .env_keys
                .into_iter()
                .filter(|k| !k.is_empty() && !provider_secrets.contains_key(k))
                .collect(),
        },
        ingest: ingest_tx,
        pairs: Mutex::new(Default::default()),
        capture: capture_tx,
        capture_dir: a.capture_dir.clone(),
        capture_counters: capture_counters.clone(),
        wasm_bytes,
        ledger_write_failures: Default::default(),
        resource_cache: Default::default(),
        sds_source: crate::clusters::SdsSource {
            cluster: a.xds_cluster.clone(),
            token: Some(grpc_token.to_string()),
        },
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        tokio::spawn(ingest::run(app.clone(), ingest_rx));
        tokio::spawn(ingest::housekeeping(app.clone()));
        if st_engine == store::Engine::Postgres {
            tokio::spawn(app.clone().follow_store());
        }
        if let Some((dir, sanitizer, rx)) = capture_task {
            tokio::spawn(capture::run(dir, sanitizer, capture_counters, rx));
        }
        let admin_state = Arc::new(admin::AdminState {
            app: app.clone(),
            rw_token,
            ro_token: a.read_token,
        });
        // The admin API runs on a runtime of its own: its handlers use
        // sqlite synchronously, and a slow report must not take a worker
        // that xDS and the access-log streams need.
        let listener = std::net::TcpListener::bind(a.admin)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(|e| format!("admin {}: {e}", a.admin))?;
        let admin_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("sluice-admin")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        std::thread::spawn(move || {
            admin_rt.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        let _ = axum::serve(l, admin::router(admin_state)).await;
                    }
                    Err(e) => eprintln!("sluice: admin listener: {e}"),
                }
            })
        });
        eprintln!(
            "sluice: serving config version {version}; xDS + access logs on {}, admin on {}",
            a.grpc, a.admin
        );
        use tonic::service::interceptor::InterceptedService;
        let auth = sds::require_token(grpc_token);
        let rate_limits = match &a.redis {
            Some(url) => {
                let timeout = std::time::Duration::from_millis(a.redis_timeout_ms);
                let counters = ratelimit::RedisCounters::connect(url, timeout).await?;
                eprintln!("sluice: global rate limits on Redis");
                Some(InterceptedService::new(
                    RateLimitServiceServer::new(ratelimit::Service::new(
                        counters,
                        app.snapshot.subscribe(),
                    )),
                    auth.clone(),
                ))
            }
            None => None,
        };
        let grpc = tonic::transport::Server::builder()
            .add_service(InterceptedService::new(
                ExtensionConfigDiscoveryServiceServer::new(xds::Ecds { app: app.clone() }),
                auth.clone(),
            ))
            .add_service(InterceptedService::new(
                ClusterDiscoveryServiceServer::new(xds::Cds { app: app.clone() }),
                auth.clone(),
            ))
            .add_service(InterceptedService::new(
                SecretDiscoveryServiceServer::new(sds::Sds {
                    secrets: Arc::new(provider_secrets),
                }),
                auth.clone(),
            ))
            .add_service(InterceptedService::new(
                // Envoy batches records per flush; one large message (a
                // capture record near its cap) must not be refused at
                // tonic's 4 MiB default with its neighbours' usage records.
                AccessLogServiceServer::new(als::Als { app: app.clone() })
                    .max_decoding_message_size(MAX_ACCESS_LOG_MESSAGE),
                auth,
            ))
            .add_optional_service(rate_limits)
            .serve_with_shutdown(a.grpc, async {
                let _ = tokio::signal::ctrl_c().await;
            });
        grpc.await.map_err(|e| format!("gRPC {}: {e}", a.grpc))
    })
}
