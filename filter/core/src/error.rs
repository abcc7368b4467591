//! Errors the gateway itself answers with. They are dialect-neutral here and
//! rendered in the caller's API at the edge (`ClientApi::render_error`), so a
//! client always gets an error body its SDK understands. Below the dialects:
//! imports only `canonical`.

/// What went wrong, independent of any dialect's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    InvalidApiKey,
    PermissionDenied,
    ModelNotFound,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    RateLimited,
    /// The key's budget is spent.
    QuotaExceeded,
    /// A guardrail rule with action `block` matched.
    GuardrailBlocked,
    /// The gateway cannot reach or use the provider (e.g. missing credential).
    Unavailable,
    Internal,
}

impl ErrorKind {
    /// Short machine code, also reported in usage records.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::InvalidApiKey => "invalid_api_key",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::ModelNotFound => "model_not_found",
            ErrorKind::NotFound => "not_found",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::PayloadTooLarge => "payload_too_large",
            ErrorKind::RateLimited => "rate_limit_exceeded",
            ErrorKind::QuotaExceeded => "insufficient_quota",
            ErrorKind::GuardrailBlocked => "guardrail_blocked",
            ErrorKind::Unavailable => "provider_unavailable",
            ErrorKind::Internal => "internal_error",
        }
    }
}

impl ErrorKind {
    /// The provider-error vocabulary, for rendering in other dialects.
    pub fn class(self) -> crate::canonical::ErrorClass {
        use crate::canonical::ErrorClass as C;
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::MethodNotAllowed
            | ErrorKind::GuardrailBlocked => C::InvalidRequest,
            ErrorKind::InvalidApiKey => C::Authentication,
            ErrorKind::PermissionDenied => C::PermissionDenied,
            ErrorKind::ModelNotFound | ErrorKind::NotFound => C::NotFound,
            ErrorKind::PayloadTooLarge => C::RequestTooLarge,
            ErrorKind::RateLimited | ErrorKind::QuotaExceeded => C::RateLimited,
            ErrorKind::Unavailable => C::Overloaded,
            ErrorKind::Internal => C::Server,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayError {
    pub status: u16,
    pub kind: ErrorKind,
    pub message: String,
    pub param: Option<&'static str>,
}

impl GatewayError {
    pub fn new(status: u16, kind: ErrorKind, message: impl Into<String>) -> Self {
        GatewayError {
            status,
            kind,
            message: message.into(),
            param: None,
        }
    }

    /// Envoy's global rate limiting refused the request on the key's budget
    /// (the rate limit service says so; the filter rewrites the refusal):
    /// one wording wherever it is written.
    pub fn over_budget_across_gateways() -> Self {
        GatewayError::new(
            429,
            ErrorKind::QuotaExceeded,
            "This request would exceed the budget of this API key (across all gateways).",
        )
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(400, ErrorKind::InvalidRequest, message)
    }

    pub fn invalid_api_key(message: impl Into<String>) -> Self {
        Self::new(401, ErrorKind::InvalidApiKey, message)
    }

    pub fn model_not_found(model: &str) -> Self {
        // Same wording for "unknown" and "not allowed for this key": a key
        // must not be able to discover models it may not use.
        Self::new(
            404,
            ErrorKind::ModelNotFound,
            format!(
                "The model `{}` does not exist or you do not have access to it.",
                truncate(model, 256)
            ),
        )
        .with_param("model")
    }

    pub fn not_found(method: &str, path: &str) -> Self {
        Self::new(
            404,
            ErrorKind::NotFound,
            format!(
                "Unknown request URL: {} {}.",
                truncate(method, 16),
                truncate(path, 256)
            ),
        )
    }

    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self::new(
            405,
            ErrorKind::MethodNotAllowed,
            format!(
                "Method {} is not allowed on {}.",
                truncate(method, 16),
                truncate(path, 256)
            ),
        )
    }

    pub fn payload_too_large(limit: u64) -> Self {
        Self::new(
            413,
            ErrorKind::PayloadTooLarge,
            format!("The request body exceeds the gateway's limit of {limit} bytes."),
        )
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, ErrorKind::Unavailable, message)
    }
}

/// Caps request-derived text echoed in errors (on a char boundary).
pub fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    s.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
