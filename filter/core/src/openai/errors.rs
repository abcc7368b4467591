//! Gateway errors in OpenAI's error shape:
//! `{"error":{"message","type","param","code"}}`.

use serde::Serialize;

use crate::error::{ErrorKind, GatewayError};

#[derive(Serialize)]
struct Envelope<'a> {
    error: Body<'a>,
}

#[derive(Serialize)]
struct Body<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<&'static str>,
    code: &'static str,
}

/// OpenAI's `type` for each kind (what its own API returns).
fn openai_type(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::InvalidApiKey
        | ErrorKind::ModelNotFound
        | ErrorKind::NotFound
        | ErrorKind::MethodNotAllowed
        | ErrorKind::PayloadTooLarge
        | ErrorKind::GuardrailBlocked => "invalid_request_error",
        ErrorKind::PermissionDenied => "permission_error",
        ErrorKind::RateLimited => "rate_limit_error",
        ErrorKind::QuotaExceeded => "insufficient_quota",
        ErrorKind::Unavailable | ErrorKind::Internal => "server_error",
    }
}

pub fn render(err: &GatewayError) -> Vec<u8> {
    let env = Envelope {
        error: Body {
            message: &err.message,
            kind: openai_type(err.kind),
            param: err.param,
            code: err.kind.code(),
        },
    };
    serde_json::to_vec(&env).unwrap_or_else(|_| b"{\"error\":{}}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_matches_openai() {
        let v: serde_json::Value =
            serde_json::from_slice(&render(&GatewayError::model_not_found("x\"y"))).unwrap();
        assert_eq!(v["error"]["code"], "model_not_found");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "model");
        assert!(v["error"]["message"].as_str().unwrap().contains("x\"y"));
    }
}
