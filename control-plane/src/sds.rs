//! SDS: provider keys as generic secrets for Envoy's `credential_injector`
//! (an upstream filter of each provider's cluster). Envoy redacts generic
//! secrets in `/config_dump`, and the key never enters the wasm VM or the
//! filter's pushed configuration — where `vm_config.environment_variables.
//! key_values` would print it in full.
//!
//! The secrets are fixed for the life of the process (read from its
//! environment at start), so the stream answers each subscription with what
//! it asks for and needs no pushes.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use envoy_types::pb::envoy::config::core::v3::{data_source, DataSource};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, GenericSecret, Secret,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryService;
use envoy_types::pb::google::protobuf::Any;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

pub const SECRET_TYPE: &str =
    "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Provider keys by secret name (the environment variable's name).
pub struct Sds {
    pub secrets: Arc<BTreeMap<String, String>>,
}

fn encode(name: &str, value: &str) -> Any {
    let s = Secret {
        name: name.to_string(),
        r#type: Some(secret::Type::GenericSecret(GenericSecret {
            secret: Some(DataSource {
                specifier: Some(data_source::Specifier::InlineString(value.to_string())),
                ..Default::default()
            }),
            ..Default::default()
        })),
    };
    Any {
        type_url: SECRET_TYPE.into(),
        value: s.encode_to_vec(),
    }
}

/// The answer to a request for `names` (all secrets when none are named).
/// A name the control plane does not hold is left out: Envoy keeps waiting
/// for it, and the requests its injector guards are refused upstream-side.
pub fn respond(
    secrets: &BTreeMap<String, String>,
    names: &[String],
    nonce: u64,
) -> DiscoveryResponse {
    let resources = secrets
        .iter()
        .filter(|(k, _)| names.is_empty() || names.iter().any(|n| n == *k))
        .map(|(k, v)| encode(k, v))
        .collect();
    DiscoveryResponse {
        version_info: "1".into(),
        resources,
        type_url: SECRET_TYPE.into(),
        nonce: nonce.to_string(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl SecretDiscoveryService for Sds {
    type DeltaSecretsStream = BoxStream<DeltaDiscoveryResponse>;
    type StreamSecretsStream = BoxStream<DiscoveryResponse>;

    async fn delta_secrets(
        &self,
        _req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaSecretsStream>, Status> {
        Err(Status::unimplemented(
            "SDS is served state-of-the-world (api_type: GRPC)",
        ))
    }

    async fn stream_secrets(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamSecretsStream>, Status> {
        let mut inbound = req.into_inner();
        let secrets = self.secrets.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut nonce = 0u64;
            let mut names: Option<Vec<String>> = None;
            while let Some(Ok(r)) = inbound.next().await {
                // An ACK or NACK of what was sent, with the same names:
                // nothing new to say (the secrets never change).
                if !r.response_nonce.is_empty() && names.as_ref() == Some(&r.resource_names) {
                    continue;
                }
                nonce += 1;
                let resp = respond(&secrets, &r.resource_names, nonce);
                names = Some(r.resource_names);
                if tx.send(Ok(resp)).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn fetch_secrets(
        &self,
        req: Request<DiscoveryRequest>,
    ) -> Result<Response<DiscoveryResponse>, Status> {
        Ok(Response::new(respond(
            &self.secrets,
            &req.into_inner().resource_names,
            0,
        )))
    }
}

/// Every gRPC call (ECDS, SDS, access logs) must carry the control plane's
/// token as `authorization: Bearer <token>` — Envoy sends it with the
/// `grpc_service`'s `initial_metadata`. Compared in constant time.
pub fn require_token(
    token: Arc<str>,
) -> impl Fn(Request<()>) -> Result<Request<()>, Status> + Clone + Send + Sync + 'static {
    move |req: Request<()>| {
        let presented = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if crate::admin::ct_eq(presented, &token) {
            Ok(req)
        } else {
            Err(Status::unauthenticated(
                "this control plane requires its gRPC token (authorization: Bearer …)",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_the_secrets_asked_for() {
        let m: BTreeMap<_, _> = [
            ("A".to_string(), "a-1".to_string()),
            ("B".into(), "b-2".into()),
        ]
        .into_iter()
        .collect();
        let r = respond(&m, &["B".into(), "C".into()], 3);
        assert_eq!(r.resources.len(), 1);
        let s = Secret::decode(r.resources[0].value.as_slice()).unwrap();
        assert_eq!(s.name, "B");
        let Some(secret::Type::GenericSecret(g)) = s.r#type else {
            panic!("not generic")
        };
        assert_eq!(
            g.secret.unwrap().specifier,
            Some(data_source::Specifier::InlineString("b-2".into()))
        );
        assert_eq!(respond(&m, &[], 1).resources.len(), 2);
    }

    #[test]
    fn the_token_is_required_on_every_call() {
        let check = require_token(Arc::from("tok-1"));
        let with = |v: Option<&str>| {
            let mut r = Request::new(());
            if let Some(v) = v {
                r.metadata_mut().insert("authorization", v.parse().unwrap());
            }
            check(r).map(|_| ()).map_err(|s| s.code())
        };
        assert_eq!(with(Some("Bearer tok-1")), Ok(()));
        for bad in [
            None,
            Some("Bearer tok-2"),
            Some("tok-1"),
            Some("Bearer "),
            Some("Bearer tok-12"),
        ] {
            assert_eq!(with(bad), Err(tonic::Code::Unauthenticated), "{bad:?}");
        }
    }
}
