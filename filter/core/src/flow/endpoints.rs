//! Provider endpoints passed through as they are (`endpoints` in the
//! configuration: moderations, images, audio, files, batches): the key
//! authenticates, the body's `model` — a JSON member or a multipart form
//! field — is checked against the key's models when the endpoint says so,
//! the provider's credential replaces the client's, and usage is recorded
//! when the provider reports it in a JSON answer. Nothing is translated.

use std::borrow::Cow;

use serde::Deserialize;
use sluice_config::PassthroughEndpoint;
use sluice_records::TokenUsage;

use super::{Flow, Forward, HeadersStep, Route};
use crate::api::RequestHead;
use crate::auth::CLIENT_KEY_HEADERS;
use crate::budget::SharedStore;
use crate::error::GatewayError;
use crate::gateway::{Gateway, KeyEntry, ProviderEntry};

/// The client's key headers and the encoding the meter cannot read; the
/// body and its framing are left as they are.
const STREAM_REMOVE: &[&str] = &[
    CLIENT_KEY_HEADERS[0],
    CLIENT_KEY_HEADERS[1],
    CLIENT_KEY_HEADERS[2],
    "accept-encoding",
];

/// What the body phase of a passthrough endpoint needs.
#[derive(Debug)]
pub(super) struct EndpointCtx {
    pub upstream_path: String,
    pub provider: usize,
    pub max_body: u64,
    pub multipart_boundary: Option<String>,
}

impl Flow {
    /// A configured endpoint's request, at its headers: forwarded at once
    /// when there is no body to check, else the body is read (bounded).
    pub(super) fn endpoint_headers<'g>(
        &mut self,
        gw: &'g Gateway,
        shared: &dyn SharedStore,
        head: &RequestHead<'_>,
        endpoint: &PassthroughEndpoint,
        provider_index: usize,
    ) -> Result<HeadersStep<'g>, GatewayError> {
        let (provider, key) = self.endpoint_parties(gw, provider_index)?;
        self.record.operation = Some(Cow::Owned(format!("passthrough {}", endpoint.path)));
        self.record.provider = Some(provider.name.clone());
        let rest = head.path.strip_prefix("/v1").unwrap_or(head.path);
        let upstream_path = format!("{}{}", provider.base_path, rest);
        // A plain route: never translated, whatever the provider's kind.
        self.route = Some(Route {
            api: self.api,
            backend: provider.backend,
            translate: false,
        });
        self.endpoint_mode = true;
        if endpoint.check_model && !head.end_of_stream {
            let max_body = endpoint
                .max_body_bytes
                .unwrap_or(gw.limits.max_request_body_bytes);
            let declared = head
                .content_length
                .and_then(|v| v.trim().parse::<u64>().ok());
            if declared.is_some_and(|n| n > max_body) {
                return Err(GatewayError::payload_too_large(max_body));
            }
            self.endpoint = None;
            self.passthrough = Some(EndpointCtx {
                upstream_path,
                provider: provider_index,
                max_body,
                multipart_boundary: head.content_type.and_then(boundary),
            });
            return Ok(HeadersStep::ReadBody);
        }
        self.admit_endpoint(shared, key, None)?;
        let f = endpoint_forward(provider, upstream_path, None)?;
        self.phase = super::Phase::Upstream;
        Ok(HeadersStep::Forward(f))
    }

    /// The body of a configured endpoint's request: its model checked,
    /// then forwarded unchanged.
    pub(super) fn endpoint_body<'g>(
        &mut self,
        gw: &'g Gateway,
        shared: &dyn SharedStore,
        body: &[u8],
    ) -> Result<Forward<'g>, GatewayError> {
        let ctx = self
            .passthrough
            .take()
            .ok_or_else(|| GatewayError::invalid_request("no endpoint"))?;
        let (provider, key) = self.endpoint_parties(gw, ctx.provider)?;
        let model = match &ctx.multipart_boundary {
            Some(b) => multipart_field(body, b, "model"),
            None => crate::json_splice::top_level_member(body, b"model")
                .and_then(|raw| serde_json::from_slice::<String>(raw).ok()),
        };
        if let Some(m) = &model {
            if !key.may_use(m) {
                return Err(GatewayError::model_not_found(m));
            }
            // Bounded: a name the key's list holds, or a configured model.
            if key.models.is_some() || gw.is_model(m) {
                self.record.model = Some(m.clone());
            }
        }
        self.admit_endpoint(shared, key, model.as_deref())?;
        endpoint_forward(provider, ctx.upstream_path, Some(body.to_vec()))
    }

    /// The endpoint's provider and the request's key.
    fn endpoint_parties<'g>(
        &self,
        gw: &'g Gateway,
        provider: usize,
    ) -> Result<(&'g ProviderEntry, &'g KeyEntry), GatewayError> {
        let provider = gw.provider(provider).ok_or_else(|| {
            GatewayError::unavailable("The endpoint's provider is not configured.")
        })?;
        let key = self
            .admission
            .key(gw)
            .ok_or_else(|| GatewayError::invalid_api_key("Incorrect API key provided."))?;
        Ok((provider, key))
    }

    /// Rate limits as for any request; a budget key is admitted while its
    /// budget lasts (what these endpoints cost is known only once the
    /// ledger prices the reported usage).
    fn admit_endpoint(
        &mut self,
        shared: &dyn SharedStore,
        key: &KeyEntry,
        model: Option<&str>,
    ) -> Result<(), GatewayError> {
        let free = sluice_config::TokenPrice {
            input: 0.0,
            output: 0.0,
            cached_input: None,
            cache_write_input: None,
        };
        self.admission.admit(
            shared,
            key,
            Some(free),
            model.unwrap_or("passthrough"),
            0,
            0,
            false,
            self.start_ms / 1000,
        )
    }
}

/// The request for the provider: its path, authority, cluster and
/// credential as for generation; with the body read, that body (unchanged);
/// without, no body edits at all (it streams through with its framing).
fn endpoint_forward<'g>(
    provider: &'g ProviderEntry,
    upstream_path: String,
    body: Option<Vec<u8>>,
) -> Result<Forward<'g>, GatewayError> {
    let read = body.is_some();
    let mut f = super::upstream::forward_at(
        upstream_path,
        provider.backend,
        false,
        provider,
        false,
        body.unwrap_or_default(),
    )?;
    if !read {
        f.set.retain(|(k, _)| *k != "content-length");
        f.remove = STREAM_REMOVE;
    }
    Ok(f)
}

/// `multipart/form-data; boundary=…` → the boundary.
fn boundary(content_type: &str) -> Option<String> {
    let (kind, params) = content_type.split_once(';')?;
    if !kind.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.eq_ignore_ascii_case("boundary")
            .then(|| v.trim_matches('"').to_string())
            .filter(|b| !b.is_empty() && b.len() <= 200)
    })
}

/// The value of a small text field of a multipart body (`None` if absent
/// or longer than 256 bytes).
fn multipart_field(body: &[u8], boundary: &str, name: &str) -> Option<String> {
    let delim = format!("--{boundary}");
    let want = format!("name=\"{name}\"");
    let mut rest = body;
    while let Some(at) = memchr::memmem::find(rest, delim.as_bytes()) {
        rest = rest.get(at.saturating_add(delim.len())..)?;
        let head_end = memchr::memmem::find(rest, b"\r\n\r\n")?;
        let head = rest.get(..head_end)?;
        let value_start = head_end.saturating_add(4);
        let is_field = memchr::memmem::find(head, want.as_bytes()).is_some()
            && memchr::memmem::find(head, b"filename=").is_none();
        if is_field {
            let value = rest.get(value_start..)?;
            let end = memchr::memmem::find(value, delim.as_bytes())?;
            let v = value.get(..end)?;
            let v = v.strip_suffix(b"\r\n").unwrap_or(v);
            return (v.len() <= 256)
                .then(|| std::str::from_utf8(v).ok().map(str::to_string))
                .flatten();
        }
    }
    None
}

/// Usage as OpenAI's other endpoints report it: `prompt_tokens` /
/// `completion_tokens` (embeddings, moderations), or `input_tokens` /
/// `output_tokens` (images, audio).
#[derive(Deserialize)]
struct AnyUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
}

pub(super) fn reported_usage(body: &[u8]) -> Option<TokenUsage> {
    let raw = crate::json_splice::top_level_member(body, b"usage")?;
    let u: AnyUsage = serde_json::from_slice(raw).ok()?;
    let prompt = u.prompt_tokens.or(u.input_tokens);
    let completion = u.completion_tokens.or(u.output_tokens);
    (prompt.is_some() || completion.is_some()).then(|| TokenUsage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        ..TokenUsage::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_model_field() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\nContent-Type: audio/wav\r\n\r\nname=\"model\"\r\n\r\nRIFF\r\n--XyZ\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nwhisper-1\r\n--XyZ--\r\n";
        assert_eq!(
            multipart_field(body, "XyZ", "model").as_deref(),
            Some("whisper-1")
        );
        assert_eq!(multipart_field(body, "XyZ", "language"), None);
        assert_eq!(multipart_field(b"garbage", "XyZ", "model"), None);
        assert_eq!(
            boundary("multipart/form-data; boundary=\"XyZ\"").as_deref(),
            Some("XyZ")
        );
        assert_eq!(boundary("application/json"), None);
    }

    #[test]
    fn usage_in_either_naming() {
        let u = reported_usage(
            br#"{"data":[],"usage":{"input_tokens":5,"output_tokens":7,"total_tokens":12}}"#,
        )
        .unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (5, 7));
        let u = reported_usage(br#"{"usage":{"prompt_tokens":3,"total_tokens":3}}"#).unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 0));
        assert_eq!(reported_usage(br#"{"results":[]}"#), None);
    }
}
