//! The request headers the gateway reads (every client API's).

/// The request headers the flow looks at.
#[derive(Debug, Default, Clone, Copy)]
pub struct RequestHead<'a> {
    /// `:authority` (matched against the configured `hosts`).
    pub authority: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub x_api_key: Option<&'a str>,
    pub x_goog_api_key: Option<&'a str>,
    pub anthropic_version: Option<&'a str>,
    pub content_length: Option<&'a str>,
    pub content_type: Option<&'a str>,
    pub request_id: Option<&'a str>,
    /// The request has no body (headers carried end of stream).
    pub end_of_stream: bool,
}

impl<'a> RequestHead<'a> {
    /// The fields the flow reads, from a parsed header map
    /// (`header_map::parse`; names lower-case, as Envoy keeps them).
    pub fn from_headers(headers: &[(&'a str, &'a str)], end_of_stream: bool) -> Self {
        let get = |name: &str| crate::header_map::get(headers, name);
        RequestHead {
            authority: get(":authority"),
            method: get(":method").unwrap_or_default(),
            path: get(":path").unwrap_or_default(),
            authorization: get("authorization"),
            x_api_key: get("x-api-key"),
            x_goog_api_key: get("x-goog-api-key"),
            anthropic_version: get("anthropic-version"),
            content_length: get("content-length"),
            content_type: get("content-type"),
            request_id: get("x-request-id"),
            end_of_stream,
        }
    }
}
