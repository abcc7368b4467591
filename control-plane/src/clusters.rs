//! The Envoy clusters the control plane pushes over CDS (docs/routing.md):
//!
//! - a provider by URL (`base_url`) gets `sluice_provider_<name>`: its host
//!   and port (DNS), TLS with SNI and the system CA bundle for https, and —
//!   when its key is served over SDS — Envoy's `credential_injector`;
//! - a resilient model gets `sluice_model_<name>`: one endpoint per target,
//!   at the target's priority (ranked 0, 1, … in order) and weight, with
//!   metadata naming it (`sluice.provider`, `sluice.model`); outlier
//!   detection from its `cooldown`; and the upstream filters that make each
//!   attempt the target's — the Sluice attempt filter (same VM as the
//!   gateway filter), one `credential_injector` per provider whose key comes
//!   over SDS (each applied only when the attempt goes to its provider),
//!   then the codec.

use std::collections::{BTreeSet, HashMap};

use envoy_types::pb::envoy::config::cluster::v3::{cluster, Cluster, OutlierDetection};
use envoy_types::pb::envoy::config::core::v3::{
    address, api_config_source, config_source, data_source, grpc_service, socket_address, Address,
    ApiConfigSource, ApiVersion, ConfigSource, DataSource, GrpcService, HeaderValue,
    Http1ProtocolOptions, Metadata, SocketAddress, TransportSocket, TypedExtensionConfig,
};
use envoy_types::pb::envoy::config::endpoint::v3::{
    lb_endpoint, ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    http_filter, HttpFilter,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    common_tls_context, CertificateValidationContext, CommonTlsContext, SdsSecretConfig,
    UpstreamTlsContext,
};
use envoy_types::pb::envoy::extensions::upstreams::http::v3::{
    http_protocol_options, HttpProtocolOptions,
};
use envoy_types::pb::envoy::extensions::wasm::v3::{plugin_config, PluginConfig as WasmPlugin};
use envoy_types::pb::google::protobuf::{
    value, Any, BoolValue, Duration, Struct, UInt32Value, Value,
};
use prost::Message;
use sluice_config::{PluginConfig, Provider, ProviderAuth};

use crate::app::WasmSpec;

pub const CLUSTER_TYPE: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
/// The bundle `https` providers are verified against (Debian, Ubuntu,
/// Alpine; the container image has it).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// Request header the attempt filter sets to the provider's name so that
/// only that provider's credential injector runs; removed before the
/// provider sees the request.
use sluice_core::resilience::CREDENTIAL_HEADER;

/// How pushed clusters reach the control plane's SDS (provider keys).
#[derive(Debug, Clone)]
pub struct SdsSource {
    /// The bootstrap's cluster for the control plane.
    pub cluster: String,
    /// The token every gRPC call carries.
    pub token: Option<String>,
}

fn any<M: Message>(type_url: &str, m: &M) -> Any {
    Any {
        type_url: format!("type.googleapis.com/{type_url}"),
        value: m.encode_to_vec(),
    }
}

fn duration_ms(ms: u64) -> Duration {
    Duration {
        seconds: i64::try_from(ms / 1000).unwrap_or(i64::MAX),
        nanos: i32::try_from((ms % 1000) * 1_000_000).unwrap_or(0),
    }
}

fn string_struct(fields: &[(&str, &str)]) -> Struct {
    Struct {
        fields: fields
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value {
                        kind: Some(value::Kind::StringValue(v.to_string())),
                    },
                )
            })
            .collect(),
    }
}

fn address(host: &str, port: u16) -> Address {
    Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: host.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(u32::from(port))),
            ..Default::default()
        })),
    }
}

fn tls(sni: &str) -> TransportSocket {
    let ctx = UpstreamTlsContext {
        sni: sni.to_string(),
        common_tls_context: Some(CommonTlsContext {
            validation_context_type: Some(
                common_tls_context::ValidationContextType::ValidationContext(
                    CertificateValidationContext {
                        trusted_ca: Some(DataSource {
                            specifier: Some(data_source::Specifier::Filename(
                                SYSTEM_CA_BUNDLE.into(),
                            )),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                ),
            ),
            ..Default::default()
        }),
        ..Default::default()
    };
    TransportSocket {
        name: "envoy.transport_sockets.tls".into(),
        config_type: Some(
            envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType::TypedConfig(
                any(
                    "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                    &ctx,
                ),
            ),
        ),
    }
}

fn grpc_to_control_plane(sds: &SdsSource) -> GrpcService {
    GrpcService {
        target_specifier: Some(grpc_service::TargetSpecifier::EnvoyGrpc(
            grpc_service::EnvoyGrpc {
                cluster_name: sds.cluster.clone(),
                ..Default::default()
            },
        )),
        initial_metadata: sds
            .token
            .iter()
            .map(|t| HeaderValue {
                key: "authorization".into(),
                value: format!("Bearer {t}"),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

const INJECTOR: &str = "envoy.filters.http.credential_injector";

/// `credential_injector` adding the provider's key from the control plane's
/// SDS secret `secret` (redacted in `/config_dump`; never in the VM).
fn credential_injector(p: &Provider, secret: &str, sds: &SdsSource) -> Any {
    use envoy_types::pb::envoy::extensions::filters::http::credential_injector::v3::CredentialInjector;
    use envoy_types::pb::envoy::extensions::http::injected_credentials::generic::v3::Generic;
    let (header, prefix) = match &p.auth {
        ProviderAuth::Header { name } => (name.to_ascii_lowercase(), String::new()),
        _ => ("authorization".to_string(), "Bearer ".to_string()),
    };
    let generic = Generic {
        credential: Some(SdsSecretConfig {
            name: secret.to_string(),
            sds_config: Some(ConfigSource {
                config_source_specifier: Some(
                    config_source::ConfigSourceSpecifier::ApiConfigSource(ApiConfigSource {
                        api_type: api_config_source::ApiType::Grpc as i32,
                        transport_api_version: ApiVersion::V3 as i32,
                        grpc_services: vec![grpc_to_control_plane(sds)],
                        ..Default::default()
                    }),
                ),
                resource_api_version: ApiVersion::V3 as i32,
                ..Default::default()
            }),
        }),
        header,
        header_value_prefix: prefix,
    };
    let injector = CredentialInjector {
        overwrite: true,
        credential: Some(TypedExtensionConfig {
            name: "envoy.http.injected_credentials.generic".into(),
            typed_config: Some(any(
                "envoy.extensions.http.injected_credentials.generic.v3.Generic",
                &generic,
            )),
        }),
        ..Default::default()
    };
    any(
        "envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
        &injector,
    )
}

fn filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.to_string(),
        config_type: Some(http_filter::ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// The filter `name` (config `inner`), applied only to requests whose
/// `CREDENTIAL_HEADER` is `provider` (an `ExtensionWithMatcher` skipping it
/// otherwise).
fn only_for(provider: &str, name: &str, inner: Any) -> HttpFilter {
    use envoy_types::pb::envoy::extensions::common::matching::v3::ExtensionWithMatcher;
    use envoy_types::pb::envoy::extensions::filters::common::matcher::action::v3::SkipFilter;
    use envoy_types::pb::envoy::r#type::matcher::v3::HttpRequestHeaderMatchInput;
    use envoy_types::pb::xds::core::v3::TypedExtensionConfig as XdsTypedConfig;
    use envoy_types::pb::xds::r#type::matcher::v3::matcher::matcher_list::predicate::{
        single_predicate, MatchType, SinglePredicate,
    };
    use envoy_types::pb::xds::r#type::matcher::v3::matcher::matcher_list::{
        FieldMatcher, Predicate,
    };
    use envoy_types::pb::xds::r#type::matcher::v3::matcher::{
        on_match, MatcherList, MatcherType, OnMatch,
    };
    use envoy_types::pb::xds::r#type::matcher::v3::{string_matcher, Matcher, StringMatcher};
    let is_provider = Predicate {
        match_type: Some(MatchType::SinglePredicate(SinglePredicate {
            input: Some(XdsTypedConfig {
                name: "header".into(),
                typed_config: Some(any(
                    "envoy.type.matcher.v3.HttpRequestHeaderMatchInput",
                    &HttpRequestHeaderMatchInput {
                        header_name: CREDENTIAL_HEADER.into(),
                    },
                )),
            }),
            matcher: Some(single_predicate::Matcher::ValueMatch(StringMatcher {
                match_pattern: Some(string_matcher::MatchPattern::Exact(provider.to_string())),
                ..Default::default()
            })),
        })),
    };
    let skip = OnMatch {
        on_match: Some(on_match::OnMatch::Action(XdsTypedConfig {
            name: "skip".into(),
            typed_config: Some(any(
                "envoy.extensions.filters.common.matcher.action.v3.SkipFilter",
                &SkipFilter {},
            )),
        })),
        ..Default::default()
    };
    let matcher = Matcher {
        matcher_type: Some(MatcherType::MatcherList(MatcherList {
            matchers: vec![FieldMatcher {
                predicate: Some(Predicate {
                    match_type: Some(MatchType::NotMatcher(Box::new(is_provider))),
                }),
                on_match: Some(skip),
            }],
        })),
        ..Default::default()
    };
    let wrapped = ExtensionWithMatcher {
        xds_matcher: Some(matcher),
        extension_config: Some(TypedExtensionConfig {
            name: name.to_string(),
            typed_config: Some(inner),
        }),
        ..Default::default()
    };
    filter(
        &format!("{name}-{provider}"),
        any(
            "envoy.extensions.common.matching.v3.ExtensionWithMatcher",
            &wrapped,
        ),
    )
}

/// Removes `CREDENTIAL_HEADER` before the provider sees the request.
fn drop_credential_header() -> HttpFilter {
    use envoy_types::pb::envoy::config::common::mutation_rules::v3::{
        header_mutation, HeaderMutation as Rule,
    };
    use envoy_types::pb::envoy::extensions::filters::http::header_mutation::v3::{
        HeaderMutation, Mutations,
    };
    let m = HeaderMutation {
        mutations: Some(Mutations {
            request_mutations: vec![Rule {
                action: Some(header_mutation::Action::Remove(CREDENTIAL_HEADER.into())),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    filter(
        "envoy.filters.http.header_mutation",
        any(
            "envoy.extensions.filters.http.header_mutation.v3.HeaderMutation",
            &m,
        ),
    )
}

fn codec() -> HttpFilter {
    use envoy_types::pb::envoy::extensions::filters::http::upstream_codec::v3::UpstreamCodec;
    filter(
        "envoy.filters.http.upstream_codec",
        any(
            "envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec",
            &UpstreamCodec {},
        ),
    )
}

/// The attempt filter: the module and VM of the gateway filter (same
/// `vm_id`, code and environment, so the same VM), root id `sluice_attempt`.
fn attempt_filter(spec: &WasmSpec, env_keys: &[String]) -> HttpFilter {
    use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;
    let plugin = WasmPlugin {
        name: "sluice_attempt".into(),
        root_id: sluice_core::resilience::ATTEMPT_ROOT_ID.into(),
        failure_policy: envoy_types::pb::envoy::extensions::wasm::v3::FailurePolicy::FailReload
            as i32,
        allow_on_headers_stop_iteration: Some(BoolValue { value: true }),
        vm: Some(plugin_config::Vm::VmConfig(crate::xds::vm_config(
            spec, env_keys,
        ))),
        ..Default::default()
    };
    filter(
        "envoy.filters.http.wasm",
        any(
            "envoy.extensions.filters.http.wasm.v3.Wasm",
            &Wasm {
                config: Some(plugin),
            },
        ),
    )
}

fn protocol_options(filters: Vec<HttpFilter>) -> HashMap<String, Any> {
    let opts = HttpProtocolOptions {
        upstream_protocol_options: Some(
            http_protocol_options::UpstreamProtocolOptions::ExplicitHttpConfig(
                http_protocol_options::ExplicitHttpConfig {
                    protocol_config: Some(
                        http_protocol_options::explicit_http_config::ProtocolConfig::HttpProtocolOptions(
                            Http1ProtocolOptions::default(),
                        ),
                    ),
                },
            ),
        ),
        http_filters: filters,
        ..Default::default()
    };
    HashMap::from([(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions".to_string(),
        any(
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            &opts,
        ),
    )])
}

/// Room for a whole request body (the listener's limit is the same).
const BUFFER_LIMIT: u32 = 32 * 1024 * 1024;

fn base_cluster(name: &str, endpoints: Vec<LocalityLbEndpoints>) -> Cluster {
    Cluster {
        name: name.to_string(),
        cluster_discovery_type: Some(cluster::ClusterDiscoveryType::Type(
            cluster::DiscoveryType::StrictDns as i32,
        )),
        dns_lookup_family: cluster::DnsLookupFamily::V4Preferred as i32,
        connect_timeout: Some(duration_ms(5000)),
        per_connection_buffer_limit_bytes: Some(UInt32Value {
            value: BUFFER_LIMIT,
        }),
        // An unresolvable provider must not hold up the others.
        wait_for_warm_on_init: Some(BoolValue { value: false }),
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: name.to_string(),
            endpoints,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The SDS secret a provider's key comes from, if Envoy injects it.
fn injected_secret(p: &Provider) -> Option<&str> {
    match p.auth {
        ProviderAuth::None => None,
        _ => p.api_key_secret.as_deref(),
    }
}

/// A provider by URL's own cluster.
fn provider_cluster(p: &Provider, sds: &SdsSource) -> Option<Cluster> {
    let url = p.url()?;
    let mut c = base_cluster(
        &p.cluster_name(),
        vec![LocalityLbEndpoints {
            lb_endpoints: vec![LbEndpoint {
                host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                    address: Some(address(&url.host, url.port)),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
    );
    if url.tls {
        c.transport_socket = Some(tls(&url.host));
    }
    let mut filters = Vec::new();
    if let Some(secret) = injected_secret(p) {
        filters.push(filter(INJECTOR, credential_injector(p, secret, sds)));
    }
    filters.push(codec());
    c.typed_extension_protocol_options = protocol_options(filters);
    Some(c)
}

/// A resilient model's cluster. None if a target's provider has no URL
/// (the configuration's validation refuses that).
fn model_cluster(
    m: &sluice_config::Model,
    cfg: &PluginConfig,
    spec: &WasmSpec,
    env_keys: &[String],
    sds: &SdsSource,
) -> Option<Cluster> {
    // Priorities ranked 0, 1, … (Envoy wants them without gaps).
    let ranks: Vec<u32> = m
        .targets
        .iter()
        .map(|t| t.priority)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut by_priority: Vec<LocalityLbEndpoints> = Vec::new();
    let mut tls_hosts: Vec<(String, String)> = Vec::new();
    let mut injectors = Vec::new();
    for t in &m.targets {
        let p = cfg.providers.iter().find(|p| p.name == t.provider)?;
        let url = p.url()?;
        let rank = u32::try_from(ranks.iter().position(|r| *r == t.priority)?).ok()?;
        let mut fields = vec![("provider", p.name.as_str()), ("model", t.model.as_str())];
        let socket_key = format!("tls-{}", p.name);
        let mut metadata = Metadata::default();
        if url.tls {
            if !tls_hosts.iter().any(|(k, _)| *k == socket_key) {
                tls_hosts.push((socket_key.clone(), url.host.clone()));
            }
            metadata.filter_metadata.insert(
                "envoy.transport_socket_match".into(),
                string_struct(&[("socket", socket_key.as_str())]),
            );
        }
        fields.sort_unstable();
        metadata.filter_metadata.insert(
            sluice_core::resilience::METADATA_NAMESPACE.into(),
            string_struct(&fields),
        );
        if let Some(secret) = injected_secret(p) {
            if !injectors
                .iter()
                .any(|(n, _): &(String, HttpFilter)| *n == p.name)
            {
                injectors.push((
                    p.name.clone(),
                    only_for(&p.name, INJECTOR, credential_injector(p, secret, sds)),
                ));
            }
        }
        let endpoint = LbEndpoint {
            host_identifier: Some(lb_endpoint::HostIdentifier::Endpoint(Endpoint {
                address: Some(address(&url.host, url.port)),
                ..Default::default()
            })),
            metadata: Some(metadata),
            load_balancing_weight: Some(UInt32Value {
                value: t.weight.max(1),
            }),
            ..Default::default()
        };
        match by_priority.iter_mut().find(|l| l.priority == rank) {
            Some(l) => l.lb_endpoints.push(endpoint),
            None => by_priority.push(LocalityLbEndpoints {
                priority: rank,
                lb_endpoints: vec![endpoint],
                ..Default::default()
            }),
        }
    }
    by_priority.sort_by_key(|l| l.priority);
    let mut c = base_cluster(&m.cluster_name(), by_priority);
    c.transport_socket_matches = tls_hosts
        .into_iter()
        .map(|(key, host)| cluster::TransportSocketMatch {
            name: key.clone(),
            r#match: Some(string_struct(&[("socket", key.as_str())])),
            transport_socket: Some(tls(&host)),
        })
        .collect();
    if let Some(cd) = m.cooldown {
        let seconds = cd.seconds;
        c.outlier_detection = Some(OutlierDetection {
            consecutive_5xx: Some(UInt32Value {
                value: cd.consecutive_failures,
            }),
            enforcing_consecutive_5xx: Some(UInt32Value { value: 100 }),
            // Only the consecutive-failure rule: no success-rate ejection,
            // no gateway-failure rule of its own.
            enforcing_success_rate: Some(UInt32Value { value: 0 }),
            enforcing_consecutive_gateway_failure: Some(UInt32Value { value: 0 }),
            base_ejection_time: Some(duration_ms(seconds.saturating_mul(1000))),
            max_ejection_time: Some(duration_ms(seconds.saturating_mul(10_000))),
            // How often an ejected target is looked at again.
            interval: Some(duration_ms(1000)),
            max_ejection_percent: Some(UInt32Value { value: 100 }),
            ..Default::default()
        });
    }
    let mut filters = vec![attempt_filter(spec, env_keys)];
    filters.extend(injectors.into_iter().map(|(_, f)| f));
    filters.push(drop_credential_header());
    filters.push(codec());
    c.typed_extension_protocol_options = protocol_options(filters);
    Some(c)
}

/// Every cluster the configuration needs, by name (sorted).
pub fn clusters(cfg: &PluginConfig, spec: &WasmSpec, sds: &SdsSource) -> Vec<Cluster> {
    let env_keys = crate::xds::env_keys(spec, cfg);
    let mut out: Vec<Cluster> = cfg
        .providers
        .iter()
        .filter_map(|p| provider_cluster(p, sds))
        .collect();
    out.extend(
        cfg.models
            .iter()
            .filter(|m| m.resilient())
            .filter_map(|m| model_cluster(m, cfg, spec, &env_keys, sds)),
    );
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The clusters as CDS resources.
pub fn resources(cfg: &PluginConfig, spec: &WasmSpec, sds: &SdsSource) -> Vec<Any> {
    clusters(cfg, spec, sds)
        .iter()
        .map(|c| Any {
            type_url: CLUSTER_TYPE.into(),
            value: c.encode_to_vec(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::WasmCode;
    use envoy_types::pb::envoy::extensions::filters::http::wasm::v3::Wasm;

    fn spec() -> WasmSpec {
        WasmSpec {
            resource_name: "sluice".into(),
            code: WasmCode::Local("/x/sluice.wasm".into()),
            vm_id: "sluice".into(),
            env_keys: vec!["B_KEY".into()],
        }
    }

    fn sds() -> SdsSource {
        SdsSource {
            cluster: "cp".into(),
            token: Some("t".into()),
        }
    }

    fn config() -> PluginConfig {
        serde_json::from_value(serde_json::json!({
            "providers": [
                {"name": "oa", "kind": "openai", "base_url": "https://api.openai.example/v1",
                 "api_key_env": "OA_KEY"},
                {"name": "an", "kind": "anthropic", "base_url": "http://10.0.0.5:8000",
                 "auth": {"type": "header", "name": "x-api-key"}, "api_key_secret": "AN_KEY"},
                {"name": "static", "kind": "openai", "cluster": "mock", "host": "h",
                 "auth": {"type": "none"}}
            ],
            "models": [
                {"name": "fb", "targets": [
                    {"provider": "oa", "model": "gpt", "weight": 3},
                    {"provider": "oa", "model": "gpt-mini", "weight": 1},
                    {"provider": "an", "model": "claude", "priority": 5}],
                 "cooldown": {"consecutive_failures": 4, "seconds": 20}},
                {"name": "plain", "targets": [{"provider": "static", "model": "m"}]}
            ]
        }))
        .unwrap()
    }

    fn field(s: &Struct, k: &str) -> String {
        match s.fields.get(k).and_then(|v| v.kind.clone()) {
            Some(value::Kind::StringValue(v)) => v,
            other => panic!("{k}: {other:?}"),
        }
    }

    fn upstream_filters(c: &Cluster) -> Vec<HttpFilter> {
        let any = &c.typed_extension_protocol_options
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        HttpProtocolOptions::decode(any.value.as_slice())
            .unwrap()
            .http_filters
    }

    #[test]
    fn providers_by_url_and_resilient_models_get_clusters() {
        let cs = clusters(&config(), &spec(), &sds());
        let names: Vec<&str> = cs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sluice_model_fb",
                "sluice_provider_an",
                "sluice_provider_oa"
            ]
        );
        let oa = &cs[2];
        assert_eq!(
            oa.transport_socket.as_ref().unwrap().name,
            "envoy.transport_sockets.tls"
        );
        let an = &cs[1];
        assert!(an.transport_socket.is_none(), "http: no TLS");
        let f: Vec<String> = upstream_filters(an).into_iter().map(|f| f.name).collect();
        assert_eq!(
            f,
            [
                "envoy.filters.http.credential_injector",
                "envoy.filters.http.upstream_codec"
            ]
        );
    }

    #[test]
    fn a_model_cluster_has_its_targets_by_priority_with_metadata_and_its_circuit() {
        let cs = clusters(&config(), &spec(), &sds());
        let m = &cs[0];
        let eps = &m.load_assignment.as_ref().unwrap().endpoints;
        // Priorities 0 and 5 ranked 0 and 1.
        assert_eq!(eps.iter().map(|l| l.priority).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(eps[0].lb_endpoints.len(), 2);
        let first = &eps[0].lb_endpoints[0];
        assert_eq!(first.load_balancing_weight.as_ref().unwrap().value, 3);
        let md = &first.metadata.as_ref().unwrap().filter_metadata;
        assert_eq!(field(&md["sluice"], "provider"), "oa");
        assert_eq!(field(&md["sluice"], "model"), "gpt");
        // TLS for the https provider's endpoints only, with its SNI.
        assert_eq!(
            field(&md["envoy.transport_socket_match"], "socket"),
            "tls-oa"
        );
        let claude_md = &eps[1].lb_endpoints[0]
            .metadata
            .as_ref()
            .unwrap()
            .filter_metadata;
        assert!(!claude_md.contains_key("envoy.transport_socket_match"));
        assert_eq!(m.transport_socket_matches.len(), 1);
        let od = m.outlier_detection.as_ref().unwrap();
        assert_eq!(od.consecutive_5xx.as_ref().unwrap().value, 4);
        assert_eq!(od.base_ejection_time.as_ref().unwrap().seconds, 20);
        let f: Vec<String> = upstream_filters(m).into_iter().map(|f| f.name).collect();
        assert_eq!(
            f,
            [
                "envoy.filters.http.wasm",
                "envoy.filters.http.credential_injector-an",
                "envoy.filters.http.header_mutation",
                "envoy.filters.http.upstream_codec"
            ]
        );
    }

    /// The attempt filter and the gateway filter (ECDS) must share one VM:
    /// the plans are in its memory. Envoy shares a VM between filters whose
    /// VM configuration is the same.
    #[test]
    fn the_attempt_filter_runs_in_the_gateway_filters_vm() {
        let cfg = config();
        let snap = crate::app::Snapshot {
            version: 3,
            config_json: serde_json::to_string(&cfg).unwrap(),
        };
        let ecds = crate::xds::resource(&spec(), &snap);
        let tec = TypedExtensionConfig::decode(ecds.value.as_slice()).unwrap();
        let gateway = Wasm::decode(tec.typed_config.unwrap().value.as_slice())
            .unwrap()
            .config
            .unwrap();
        let cs = clusters(&cfg, &spec(), &sds());
        let http_filter::ConfigType::TypedConfig(any) =
            upstream_filters(&cs[0])[0].config_type.clone().unwrap()
        else {
            panic!()
        };
        let attempt = Wasm::decode(any.value.as_slice()).unwrap().config.unwrap();
        assert_eq!(attempt.vm, gateway.vm);
        assert_eq!(attempt.root_id, sluice_core::resilience::ATTEMPT_ROOT_ID);
        let Some(plugin_config::Vm::VmConfig(vm)) = &attempt.vm else {
            panic!()
        };
        // Provider key variables (names only) join the served ones.
        assert_eq!(
            vm.environment_variables.as_ref().unwrap().host_env_keys,
            ["B_KEY", "OA_KEY"]
        );
    }
}
