//! Shared state of the running control plane.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use crate::store::Store;
use sluice_records::UsageRecord as UsageIn;

/// The configuration currently served to every Envoy.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub version: i64,
    pub config_json: String,
}

/// How Envoy loads the module (the ECDS resource carries the whole wasm
/// filter config; only `configuration` changes between versions, so the VM
/// is not rebuilt on a push).
#[derive(Debug, Clone)]
pub struct WasmSpec {
    pub resource_name: String,
    pub code: WasmCode,
    pub vm_id: String,
    pub env_keys: Vec<String>,
}

impl WasmSpec {
    /// The version Envoy sees: the config version and the module, so that a
    /// new module with an unchanged config (an upgrade) is still a new
    /// version — a reconnecting delta client holding the old one is updated.
    pub fn wire_version(&self, config_version: i64) -> String {
        use sha2::Digest;
        let module = match &self.code {
            WasmCode::Local(path) => sha2::Sha256::digest(path.as_bytes()),
            WasmCode::Remote { sha256, .. } | WasmCode::Inline { sha256, .. } => {
                sha2::Sha256::digest(sha256.as_bytes())
            }
        };
        format!("{config_version}.{}", hex::encode(&module[..4]))
    }
}

/// Where Envoy gets the module.
#[derive(Debug, Clone)]
pub enum WasmCode {
    /// A file on Envoy's host (bundled stacks, a mounted volume).
    Local(String),
    /// The module's bytes in the ECDS resource itself: in-band, so a new
    /// module reaches every connected Envoy like any config change
    /// (Kubernetes: nothing on the proxies' disks).
    Inline {
        bytes: axum::body::Bytes,
        sha256: String,
    },
    /// Fetched by Envoy over HTTP through `cluster` and checked against
    /// `sha256`. Envoy 1.40 completes such a fetch at startup only: a
    /// module change pushed to a running Envoy leaves the filter unloaded
    /// (503) until the proxy restarts — use `Inline` for upgrades.
    Remote {
        url: String,
        cluster: String,
        sha256: String,
    },
}

pub use crate::api::NodeStatus;

pub struct App {
    pub store: Store,
    pub snapshot: watch::Sender<Arc<Snapshot>>,
    pub nodes: Mutex<HashMap<String, NodeStatus>>,
    pub wasm: WasmSpec,
    pub ingest: mpsc::Sender<(String, UsageIn)>,
    /// Online shadow pairs (request id → first side seen).
    pub pairs: Mutex<crate::shadow::Pairs>,
    /// Capture records to the baseline writer (`None`: no capture dir).
    pub capture: Option<mpsc::Sender<Vec<u8>>>,
    pub capture_dir: Option<std::path::PathBuf>,
    pub capture_counters: Arc<crate::capture::Counters>,
    /// The module bytes served at `/wasm/sluice.wasm` (`--wasm-file`).
    pub wasm_bytes: Option<axum::body::Bytes>,
    /// Ledger batch writes that failed and were retried (`sluice status`).
    pub ledger_write_failures: std::sync::atomic::AtomicU64,
    /// The ECDS resource of the current version, encoded once (xds.rs).
    pub resource_cache: Mutex<Option<(i64, envoy_types::pb::google::protobuf::Any)>>,
    /// How pushed clusters reach this control plane's SDS (clusters.rs).
    pub sds_source: crate::clusters::SdsSource,
}

impl App {
    /// Rebuilds the config from the store and pushes it if it changed.
    pub fn republish(&self) -> Result<i64, String> {
        let (version, config_json) = {
            let c = self.store.lock();
            c.transaction(crate::config_build::publish)?
        };
        self.snapshot.send_if_modified(|cur| {
            if cur.version == version {
                return false;
            }
            *cur = Arc::new(Snapshot {
                version,
                config_json,
            });
            true
        });
        Ok(version)
    }

    /// Replicas on one Postgres store: a version another replica published
    /// (an admin change made there, a key it blocked) is picked up here
    /// within a second and pushed to the Envoys connected to this one. The
    /// content decides the version (`publish` finds the same SHA-256), so
    /// both replicas serve the same version number.
    pub async fn follow_store(self: Arc<Self>) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let app = self.clone();
            let res = tokio::task::spawn_blocking(move || {
                let last = crate::store::last_config_version(&app.store.read());
                let current = app.snapshot.borrow().version;
                match last {
                    Some((v, _)) if v != current => app.republish().map(Some),
                    _ => Ok(None),
                }
            })
            .await;
            match res {
                Ok(Err(e)) => eprintln!("sluice: following the store: {e}"),
                Err(e) => eprintln!("sluice: following the store: {e}"),
                Ok(Ok(_)) => {}
            }
        }
    }

    pub fn node_update(&self, node: &str, f: impl FnOnce(&mut NodeStatus)) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let e = nodes.entry(node.to_string()).or_insert_with(|| NodeStatus {
            node: node.to_string(),
            ..Default::default()
        });
        e.last_seen = crate::store::now_s();
        f(e);
    }
}

/// A control plane on a temporary sqlite, for the Rust tests of every room
/// (no network): the store published once, nothing connected.
#[cfg(test)]
pub fn test_app(dir: &std::path::Path) -> (Arc<App>, mpsc::Receiver<(String, UsageIn)>) {
    test_app_on(crate::store::testing::engine_store(dir))
}

/// The same on a given store (each engine: `store::testing::stores`).
#[cfg(test)]
pub fn test_app_on(store: Store) -> (Arc<App>, mpsc::Receiver<(String, UsageIn)>) {
    let (version, config_json) = crate::config_build::publish(&store.lock()).expect("publish");
    let (snapshot, _) = watch::channel(Arc::new(Snapshot {
        version,
        config_json,
    }));
    let (tx, rx) = mpsc::channel(16);
    let app = App {
        store,
        snapshot,
        nodes: Default::default(),
        wasm: WasmSpec {
            resource_name: "sluice".into(),
            code: WasmCode::Local("x.wasm".into()),
            vm_id: "sluice".into(),
            env_keys: vec![],
        },
        ingest: tx,
        pairs: Default::default(),
        capture: None,
        capture_dir: None,
        capture_counters: Default::default(),
        wasm_bytes: None,
        ledger_write_failures: Default::default(),
        resource_cache: Default::default(),
        sds_source: crate::clusters::SdsSource {
            cluster: "sluice_control_plane".into(),
            token: None,
        },
    };
    (Arc::new(app), rx)
}
