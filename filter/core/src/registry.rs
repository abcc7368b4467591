//! The registries: every client API and every backend the filter knows,
//! and the routing of a request's method and path to an endpoint. Above the
//! dialect folders (it lists their implementations) and below the flow —
//! the only module that names them all. Adding a client API or a backend is
//! one line here.

use crate::api::{ClientApi, Endpoint, RequestHead};
use crate::backend::Backend;
use crate::error::GatewayError;

/// Every client API; the first is the default for requests that match none.
/// Registration is one line here.
pub static APIS: &[&dyn ClientApi] = &[
    &crate::openai::api::ChatCompletions,
    &crate::anthropic::api::Messages,
    &crate::gemini::api::GenerateContent,
    &crate::openai::responses::api::Responses,
];

/// An API by name (`openai`, `anthropic`, `gemini`).
pub fn api(name: &str) -> Option<&'static dyn ClientApi> {
    APIS.iter().copied().find(|a| a.name() == name)
}

/// The API of requests that look like none in particular (the first).
pub fn default_api() -> &'static dyn ClientApi {
    match APIS.first() {
        Some(a) => *a,
        None => &crate::openai::api::ChatCompletions,
    }
}

/// The API a request looks like (for errors before an endpoint matched).
pub fn guess(path: &str, head: &RequestHead<'_>) -> &'static dyn ClientApi {
    match APIS.iter().skip(1).find(|a| a.claims(path, head)) {
        Some(a) => *a,
        None => default_api(),
    }
}

/// What a request asks of the gateway, from its method and path.
#[derive(Debug)]
pub enum Recognized<'p> {
    Generate(Endpoint),
    /// `GET /v1/models` (or `/v1beta/models`).
    ListModels,
    /// `GET /v1/models/{name}`.
    GetModel(&'p str),
    Refused(GatewayError),
}

/// Routes a request by method and path (`path` without query or fragment).
pub fn recognize<'p>(method: &str, path: &'p str, full_path: &str) -> Recognized<'p> {
    for api in APIS.iter().copied() {
        if let Some(found) = api.endpoint(method, path, full_path) {
            return match found {
                Ok(m) => Recognized::Generate(Endpoint {
                    api,
                    op: m.op,
                    model: m.model,
                    stream: m.stream,
                }),
                Err(e) => Recognized::Refused(e),
            };
        }
    }
    match (method, path) {
        ("GET", "/v1/models" | "/v1beta/models") => Recognized::ListModels,
        ("GET", p) if p.starts_with("/v1/models/") || p.starts_with("/v1beta/models/") => {
            Recognized::GetModel(p.rsplit('/').next().unwrap_or_default())
        }
        (m, p) if p == "/v1/models" || APIS.iter().any(|a| a.paths().contains(&p)) => {
            Recognized::Refused(GatewayError::method_not_allowed(m, p))
        }
        (m, p) => Recognized::Refused(GatewayError::not_found(m, p)),
    }
}

/// Every backend, by configuration `kind`. Registration is one line here.
pub static BACKENDS: &[&dyn Backend] = &[
    &crate::openai::backend::OpenAi,
    &crate::anthropic::backend::Anthropic,
    &crate::gemini::backend::Gemini,
    &crate::openai::responses::backend::OpenAiResponses,
];

/// The backend of a configured `kind`.
pub fn backend(kind: &str) -> Option<&'static dyn Backend> {
    BACKENDS.iter().copied().find(|b| b.kind() == kind)
}
