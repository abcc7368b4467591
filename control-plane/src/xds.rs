//! ECDS: serves the Sluice wasm filter config as a `TypedExtensionConfig`,
//! state-of-the-world and delta, pushing every new version to every stream.
//! ACKs and NACKs are recorded per node (`sluice status`).

use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{
    async_data_source, data_source, http_uri, AsyncDataSource, BackoffStrategy, DataSource,
    HttpUri, RemoteDataSource, RetryPolicy, TypedExtensionConfig,
};
use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
use envoy_types::pb::envoy::extensions::wasm::v3::{
    plugin_config, EnvironmentVariables, FailurePolicy, PluginConfig, VmConfig,
};
use envoy_types::pb::envoy::service::cluster::v3::cluster_discovery_service_server::ClusterDiscoveryService;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryService;
use envoy_types::pb::google::protobuf::{Any, BoolValue, StringValue};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::app::{App, Snapshot, WasmCode, WasmSpec};

pub const TYPED_EXTENSION_CONFIG: &str =
    "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig";

/// The variable names the VM may read: the served set (`--env-keys`) and
/// every provider's `api_key_env` (a provider added at run time reads a
/// variable Envoy already has). Sorted: the gateway filter and the attempt
/// filters must get the same VM configuration to share one VM.
pub fn env_keys(spec: &WasmSpec, cfg: &sluice_config::PluginConfig) -> Vec<String> {
    let mut keys: Vec<String> = spec.env_keys.clone();
    keys.extend(cfg.providers.iter().filter_map(|p| p.api_key_env.clone()));
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// The ECDS resource for a config snapshot.
pub fn resource(spec: &WasmSpec, snap: &Snapshot) -> Any {
    let cfg: sluice_config::PluginConfig =
        serde_json::from_str(&snap.config_json).unwrap_or_else(|_| empty_config());
    let vm = vm_config(spec, &env_keys(spec, &cfg));
    build_resource(spec, snap, vm)
}

fn empty_config() -> sluice_config::PluginConfig {
    sluice_config::PluginConfig {
        version: String::new(),
        keys: Vec::new(),
        providers: Vec::new(),
        models: Vec::new(),
        limits: Default::default(),
        guardrails: None,
        metrics: None,
        capture: None,
        shadow: None,
        hosts: Vec::new(),
        endpoints: Vec::new(),
    }
}

/// The VM every Sluice filter of an Envoy shares (gateway and attempts).
pub fn vm_config(spec: &WasmSpec, env_keys: &[String]) -> VmConfig {
    VmConfig {
        vm_id: spec.vm_id.clone(),
        runtime: "envoy.wasm.runtime.v8".into(),
        code: Some(AsyncDataSource {
            specifier: Some(match &spec.code {
                WasmCode::Local(path) => async_data_source::Specifier::Local(DataSource {
                    specifier: Some(data_source::Specifier::Filename(path.clone())),
                    ..Default::default()
                }),
                WasmCode::Inline { bytes, .. } => async_data_source::Specifier::Local(DataSource {
                    specifier: Some(data_source::Specifier::InlineBytes(bytes.to_vec())),
                    ..Default::default()
                }),
                WasmCode::Remote {
                    url,
                    cluster,
                    sha256,
                } => async_data_source::Specifier::Remote(RemoteDataSource {
                    http_uri: Some(HttpUri {
                        uri: url.clone(),
                        timeout: Some(envoy_types::pb::google::protobuf::Duration {
                            seconds: 60,
                            nanos: 0,
                        }),
                        http_upstream_type: Some(http_uri::HttpUpstreamType::Cluster(
                            cluster.clone(),
                        )),
                    }),
                    sha256: sha256.clone(),
                    // Without retries one failed fetch (a control-plane
                    // restart resetting a pooled connection) leaves the
                    // filter unloaded and answering 503.
                    retry_policy: Some(RetryPolicy {
                        retry_back_off: Some(BackoffStrategy {
                            base_interval: Some(envoy_types::pb::google::protobuf::Duration {
                                seconds: 0,
                                nanos: 500_000_000,
                            }),
                            max_interval: Some(envoy_types::pb::google::protobuf::Duration {
                                seconds: 10,
                                nanos: 0,
                            }),
                        }),
                        num_retries: Some(envoy_types::pb::google::protobuf::UInt32Value {
                            value: 10,
                        }),
                        ..Default::default()
                    }),
                }),
            }),
        }),
        // Only variable *names* (Envoy's own environment): values set here
        // (`key_values`) would print in `/config_dump`. Keys the control
        // plane holds go over SDS instead (sds.rs).
        environment_variables: Some(EnvironmentVariables {
            host_env_keys: env_keys.to_vec(),
            key_values: Default::default(),
        }),
        ..Default::default()
    }
}

fn build_resource(spec: &WasmSpec, snap: &Snapshot, vm: VmConfig) -> Any {
    let plugin = PluginConfig {
        name: "sluice".into(),
        root_id: "sluice".into(),
        configuration: Some(Any {
            type_url: "type.googleapis.com/google.protobuf.StringValue".into(),
            value: StringValue {
                value: snap.config_json.clone(),
            }
            .encode_to_vec(),
        }),
        failure_policy: FailurePolicy::FailReload as i32,
        allow_on_headers_stop_iteration: Some(BoolValue { value: true }),
        vm: Some(plugin_config::Vm::VmConfig(vm)),
        ..Default::default()
    };
    let wasm = Wasm {
        config: Some(plugin),
    };
    let tec = TypedExtensionConfig {
        name: spec.resource_name.clone(),
        typed_config: Some(Any {
            type_url: "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm".into(),
            value: wasm.encode_to_vec(),
        }),
    };
    Any {
        type_url: TYPED_EXTENSION_CONFIG.into(),
        value: tec.encode_to_vec(),
    }
}

pub struct Ecds {
    pub app: Arc<App>,
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

fn node_id(n: &Option<envoy_types::pb::envoy::config::core::v3::Node>) -> Option<String> {
    n.as_ref().map(|n| n.id.clone()).filter(|s| !s.is_empty())
}

/// What the stream driver needs from a discovery request, SotW or delta.
trait XdsRequest: Send + 'static {
    fn node_id(&self) -> Option<String>;
    /// Set on ACKs and NACKs; empty on a (re)subscription.
    fn response_nonce(&self) -> &str;
    fn nack_message(&self) -> Option<String>;
    /// The version a reconnecting Envoy already holds (delta only).
    fn held_version(&self, _resource: &str) -> Option<String> {
        None
    }
}

impl XdsRequest for DiscoveryRequest {
    fn node_id(&self) -> Option<String> {
        node_id(&self.node)
    }
    fn response_nonce(&self) -> &str {
        &self.response_nonce
    }
    fn nack_message(&self) -> Option<String> {
        self.error_detail.as_ref().map(|e| e.message.clone())
    }
}

impl XdsRequest for DeltaDiscoveryRequest {
    fn node_id(&self) -> Option<String> {
        node_id(&self.node)
    }
    fn response_nonce(&self) -> &str {
        &self.response_nonce
    }
    fn nack_message(&self) -> Option<String> {
        self.error_detail.as_ref().map(|e| e.message.clone())
    }
    fn held_version(&self, resource: &str) -> Option<String> {
        self.initial_resource_versions.get(resource).cloned()
    }
}

/// Drives one xDS stream: answers subscriptions with the current snapshot,
/// pushes every new version, and records ACKs/NACKs for the node.
fn serve_stream<Req: XdsRequest, Resp: Send + 'static>(
    app: Arc<App>,
    mut inbound: Streaming<Req>,
    respond: fn(&App, &Snapshot, u64) -> Resp,
) -> ReceiverStream<Result<Resp, Status>> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut snaps = app.snapshot.subscribe();
        let mut node = String::from("unknown");
        let mut nonce = 0u64;
        let mut sent: Option<i64> = None;
        // (nonce, version) of the last responses, for their ACKs and NACKs.
        let mut in_flight: std::collections::VecDeque<(u64, i64)> =
            std::collections::VecDeque::with_capacity(8);
        let mut subscribed = false;
        loop {
            let snap = tokio::select! {
                msg = inbound.next() => {
                    let Some(Ok(r)) = msg else { break };
                    if let Some(n) = r.node_id() {
                        if node == "unknown" {
                            node = n;
                            app.node_update(&node, |s| s.streams += 1);
                        }
                    }
                    if !r.response_nonce().is_empty() {
                        // The version this answer is about: the one sent
                        // with its nonce (an ACK may arrive after the next
                        // version went out).
                        let sent_version = in_flight
                            .iter()
                            .find(|(n, _)| n.to_string() == r.response_nonce())
                            .map(|(_, v)| v.to_string());
                        match r.nack_message() {
                            Some(e) => app.node_update(&node, |s| {
                                s.nacked_version = sent_version;
                                s.nack_error = Some(e);
                            }),
                            None => app.node_update(&node, |s| s.acked_version = sent_version),
                        }
                        continue;
                    }
                    subscribed = true;
                    let snap = snaps.borrow_and_update().clone();
                    // A reconnecting delta client that already holds the
                    // current version needs nothing.
                    let v = snap.version.to_string();
                    let wire = app.wasm.wire_version(snap.version);
                    if sent.is_none() && r.held_version(&app.wasm.resource_name) == Some(wire) {
                        sent = Some(snap.version);
                        app.node_update(&node, |s| s.acked_version = Some(v));
                        continue;
                    }
                    snap
                }
                changed = snaps.changed(), if subscribed => {
                    if changed.is_err() { break }
                    let snap = snaps.borrow_and_update().clone();
                    if sent == Some(snap.version) { continue }
                    snap
                }
            };
            nonce += 1;
            sent = Some(snap.version);
            if in_flight.len() >= 8 {
                in_flight.pop_front();
            }
            in_flight.push_back((nonce, snap.version));
            if tx.send(Ok(respond(&app, &snap, nonce))).await.is_err() {
                break;
            }
        }
        app.node_update(&node, |s| s.streams = s.streams.saturating_sub(1));
    });
    ReceiverStream::new(rx)
}

#[tonic::async_trait]
impl ExtensionConfigDiscoveryService for Ecds {
    type StreamExtensionConfigsStream = BoxStream<DiscoveryResponse>;
    type DeltaExtensionConfigsStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_extension_configs(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamExtensionConfigsStream>, Status> {
        let s = serve_stream(self.app.clone(), req.into_inner(), sotw);
        Ok(Response::new(Box::pin(s)))
    }

    async fn delta_extension_configs(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaExtensionConfigsStream>, Status> {
        let s = serve_stream(self.app.clone(), req.into_inner(), delta);
        Ok(Response::new(Box::pin(s)))
    }

    async fn fetch_extension_configs(
        &self,
        _req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let snap = self.app.snapshot.borrow().clone();
        Ok(Response::new(sotw(&self.app, &snap, 0)))
    }
}

/// CDS: the clusters of providers by URL and of resilient models
/// (clusters.rs), state of the world; a push of a new config version
/// carries them all (Envoy leaves unchanged clusters alone).
pub struct Cds {
    pub app: Arc<App>,
}

#[tonic::async_trait]
impl ClusterDiscoveryService for Cds {
    type StreamClustersStream = BoxStream<DiscoveryResponse>;
    type DeltaClustersStream = BoxStream<DeltaDiscoveryResponse>;

    async fn stream_clusters(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamClustersStream>, Status> {
        let s = serve_stream(self.app.clone(), req.into_inner(), cds_sotw);
        Ok(Response::new(Box::pin(s)))
    }

    async fn delta_clusters(
        &self,
        _req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaClustersStream>, Status> {
        Err(Status::unimplemented(
            "sluice serves CDS state of the world (api_type: GRPC)",
        ))
    }

    async fn fetch_clusters(
        &self,
        _req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        let snap = self.app.snapshot.borrow().clone();
        Ok(Response::new(cds_sotw(&self.app, &snap, 0)))
    }
}

fn cds_sotw(app: &App, snap: &Snapshot, nonce: u64) -> DiscoveryResponse {
    let cfg: sluice_config::PluginConfig =
        serde_json::from_str(&snap.config_json).unwrap_or_else(|_| empty_config());
    DiscoveryResponse {
        version_info: app.wasm.wire_version(snap.version),
        resources: crate::clusters::resources(&cfg, &app.wasm, &app.sds_source),
        type_url: crate::clusters::CLUSTER_TYPE.into(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

/// The resource for `snap`, encoded once per version: with the module
/// inline it is megabytes, and every connected Envoy's stream sends it.
fn cached_resource(app: &App, snap: &Snapshot) -> Any {
    let mut cache = app.resource_cache.lock().unwrap_or_else(|p| p.into_inner());
    match &*cache {
        Some((v, any)) if *v == snap.version => any.clone(),
        _ => {
            let any = resource(&app.wasm, snap);
            *cache = Some((snap.version, any.clone()));
            any
        }
    }
}

fn sotw(app: &App, snap: &Snapshot, nonce: u64) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: app.wasm.wire_version(snap.version),
        resources: vec![cached_resource(app, snap)],
        type_url: TYPED_EXTENSION_CONFIG.into(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

fn delta(app: &App, snap: &Snapshot, nonce: u64) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        system_version_info: app.wasm.wire_version(snap.version),
        resources: vec![Resource {
            name: app.wasm.resource_name.clone(),
            version: app.wasm.wire_version(snap.version),
            resource: Some(cached_resource(app, snap)),
            ..Default::default()
        }],
        type_url: TYPED_EXTENSION_CONFIG.into(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_client::ExtensionConfigDiscoveryServiceClient;
    use envoy_types::pb::envoy::service::extension::v3::extension_config_discovery_service_server::ExtensionConfigDiscoveryServiceServer;
    use envoy_types::pb::google::rpc;

    use crate::app::test_app;
    use crate::store;

    /// The plugin configuration inside an ECDS resource, and its VM's
    /// environment values.
    fn unpack(any: &Any) -> (serde_json::Value, usize, bool) {
        let tec = TypedExtensionConfig::decode(any.value.as_slice()).unwrap();
        let wasm = Wasm::decode(tec.typed_config.unwrap().value.as_slice()).unwrap();
        let plugin = wasm.config.unwrap();
        let cfg = StringValue::decode(plugin.configuration.unwrap().value.as_slice()).unwrap();
        let Some(plugin_config::Vm::VmConfig(vm)) = plugin.vm else {
            panic!("no vm")
        };
        let env_values = vm.environment_variables.map_or(0, |e| e.key_values.len());
        (
            serde_json::from_str(&cfg.value).unwrap(),
            env_values,
            plugin
                .allow_on_headers_stop_iteration
                .is_some_and(|b| b.value),
        )
    }

    #[test]
    fn the_resource_names_secrets_and_never_carries_them() {
        let dir = tempfile::tempdir().unwrap();
        let (app, _rx) = test_app(dir.path());
        {
            let c = app.store.lock();
            let p: sluice_config::Provider = serde_json::from_value(serde_json::json!({
                "name": "oa", "kind": "openai", "cluster": "c", "host": "h",
                "api_key_env": "OPENAI_API_KEY"
            }))
            .unwrap();
            store::put_provider(&c, &p).unwrap();
            store::put_setting(&c, "provider_secrets", Some(&vec!["OPENAI_API_KEY"])).unwrap();
        }
        let v = app.republish().unwrap();
        let snap = app.snapshot.borrow().clone();
        let r = sotw(&app, &snap, 9);
        assert_eq!(
            (r.version_info.clone(), r.nonce.as_str()),
            (app.wasm.wire_version(v), "9")
        );
        let (cfg, env_values, hold_headers) = unpack(&r.resources[0]);
        assert_eq!(cfg["version"], v.to_string());
        assert_eq!(cfg["providers"][0]["api_key_secret"], "OPENAI_API_KEY");
        assert_eq!(cfg["providers"][0].get("api_key_env"), None);
        assert_eq!(env_values, 0, "no values in the VM's environment");
        assert!(hold_headers, "allow_on_headers_stop_iteration");
        // The delta form carries the same resource under its name.
        let d = delta(&app, &snap, 10);
        assert_eq!(d.resources[0].name, "sluice");
        assert_eq!(d.resources[0].resource.as_ref(), Some(&r.resources[0]));
    }

    #[tokio::test]
    async fn a_stream_is_pushed_each_version_and_acks_and_nacks_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (app, _rx) = test_app(dir.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tonic::transport::Server::builder()
            .add_service(ExtensionConfigDiscoveryServiceServer::new(Ecds {
                app: app.clone(),
            }))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        let mut client = ExtensionConfigDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(8);
        let node = Some(Node {
            id: "envoy-1".into(),
            ..Default::default()
        });
        tx.send(DiscoveryRequest {
            node: node.clone(),
            type_url: TYPED_EXTENSION_CONFIG.into(),
            resource_names: vec!["sluice".into()],
            ..Default::default()
        })
        .await
        .unwrap();
        let mut inbound = client
            .stream_extension_configs(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let timeout = std::time::Duration::from_secs(10);
        let first = tokio::time::timeout(timeout, inbound.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v1 = app.snapshot.borrow().version;
        assert_eq!(first.version_info, app.wasm.wire_version(v1));
        tx.send(DiscoveryRequest {
            node: node.clone(),
            response_nonce: first.nonce.clone(),
            version_info: first.version_info.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        // A change is pushed to the open stream without being asked.
        store::put_setting(
            &app.store.lock(),
            "hosts",
            Some(&vec!["llm.example.com".to_string()]),
        )
        .unwrap();
        let v2 = app.republish().unwrap();
        assert!(v2 > v1);
        let second = tokio::time::timeout(timeout, inbound.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(second.version_info, app.wasm.wire_version(v2));
        let (cfg, _, _) = unpack(&second.resources[0]);
        assert_eq!(cfg["hosts"][0], "llm.example.com");
        tx.send(DiscoveryRequest {
            node,
            response_nonce: second.nonce.clone(),
            error_detail: Some(rpc::Status {
                code: 3,
                message: "rejected for the test".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        let status = || app.nodes.lock().unwrap().get("envoy-1").cloned();
        for _ in 0..200 {
            if status().is_some_and(|s| s.nack_error.is_some()) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let s = status().unwrap();
        assert_eq!(
            (
                s.streams,
                s.acked_version.as_deref(),
                s.nacked_version.as_deref(),
                s.nack_error.as_deref()
            ),
            (
                1,
                Some(v1.to_string().as_str()),
                Some(v2.to_string().as_str()),
                Some("rejected for the test")
            )
        );
    }
}
