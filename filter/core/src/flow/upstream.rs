//! The request the provider gets: its body (passed through or encoded by the
//! backend), its path, host, cluster and credential, and which of the
//! client's headers must not go with it.

use std::borrow::Cow;

use super::Forward;
use crate::auth::CLIENT_KEY_HEADERS;
use crate::backend::Backend;
use crate::error::GatewayError;
use crate::gateway::{Credential, ProviderEntry};

/// Header the route uses (`cluster_header`) to pick the upstream cluster.
pub const CLUSTER_HEADER: &str = "x-sluice-cluster";

/// Digest of an upstream request for the online shadow comparison: the
/// provider, path and JSON body in canonical form (sorted keys, no
/// formatting), so equal requests from two builds compare equal.
pub(super) fn forward_digest(provider: &str, path: &str, body: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(provider.as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    match serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| serde_json::to_vec(&v).ok())
    {
        Some(canon) => h.update(&canon),
        None => h.update(body),
    }
    hex16(&h.finalize())
}

fn hex16(d: &[u8]) -> String {
    use std::fmt::Write;
    d.iter()
        .take(16)
        .fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Headers removed from every forwarded request: the caller's credentials
/// (never sent upstream), the length (recomputed), and `accept-encoding`
/// (the filter must read the provider's bytes; Envoy's compressor can
/// re-encode towards the client). The router's retry and timeout headers
/// and the plan id, which only the gateway sets, go too
/// (`Forward::strip_client_routing`).
/// (`content-length` is not listed: `Forward::set` always replaces it, and
/// each header edit is a host crossing.)
pub(super) const UPSTREAM_REMOVE: &[&str] = &[
    CLIENT_KEY_HEADERS[0],
    CLIENT_KEY_HEADERS[1],
    CLIENT_KEY_HEADERS[2],
    "transfer-encoding",
    "accept-encoding",
];

/// Also removed when an Anthropic client's request goes to another kind.
const UPSTREAM_REMOVE_TRANSLATED: &[&str] = &[
    CLIENT_KEY_HEADERS[0],
    CLIENT_KEY_HEADERS[1],
    CLIENT_KEY_HEADERS[2],
    "transfer-encoding",
    "accept-encoding",
    "anthropic-version",
    "anthropic-beta",
];

/// The headers and body for the provider. `client_version_missing`: the
/// client sent no version header of its own (passthrough then gets the
/// backend's).
pub(crate) fn forward<'g>(
    backend: &'static dyn Backend,
    translating: bool,
    provider: &'g ProviderEntry,
    upstream_model: &str,
    stream: bool,
    client_version_missing: bool,
    body: Vec<u8>,
) -> Result<Forward<'g>, GatewayError> {
    let upstream_path = backend.upstream_path(&provider.base_path, upstream_model, stream);
    forward_at(
        upstream_path,
        backend,
        translating,
        provider,
        client_version_missing,
        body,
    )
}

/// As `forward`, to a path of the caller's choosing (token counting and
/// embeddings endpoints).
pub(crate) fn forward_at<'g>(
    upstream_path: String,
    backend: &'static dyn Backend,
    translating: bool,
    provider: &'g ProviderEntry,
    client_version_missing: bool,
    body: Vec<u8>,
) -> Result<Forward<'g>, GatewayError> {
    let mut set = Vec::with_capacity(6);
    set.push((":path", Cow::Owned(upstream_path)));
    set.push((":authority", Cow::Borrowed(provider.host.as_str())));
    set.push((CLUSTER_HEADER, Cow::Borrowed(provider.cluster.as_str())));
    match &provider.credential {
        Credential::None => {}
        Credential::Header { name, value } => {
            set.push((name.as_str(), Cow::Borrowed(value.as_str())));
        }
        Credential::Missing { env } => {
            return Err(GatewayError::unavailable(format!(
                "The provider '{}' has no credential: set {} in Envoy's environment.",
                provider.name, env
            )));
        }
    }
    if let Some((name, value)) = backend.version_header() {
        if translating || client_version_missing {
            set.push((name, Cow::Borrowed(value)));
        }
    }
    set.push(("content-length", Cow::Owned(body.len().to_string())));
    Ok(Forward {
        remove_more: Vec::new(),
        strip_client_routing: true,
        remove: if translating {
            UPSTREAM_REMOVE_TRANSLATED
        } else {
            UPSTREAM_REMOVE
        },
        set,
        body,
    })
}
