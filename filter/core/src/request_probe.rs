//! The request probe: what the gateway reads from a JSON request body without
//! decoding it (`model`, `stream`, the usage option, token caps, `n`), and
//! the rewrite of a body that passes through to a backend of its own wire
//! (only `model`, and OpenAI's usage option, change). Serves every client
//! API whose model is in the body (OpenAI Chat Completions, Anthropic
//! Messages); Gemini carries the model in the URL.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::GatewayError;
use crate::json_splice::{apply, span_of, Edit};

/// The top-level fields the gateway needs; everything else is skipped
/// without being materialised. serde rejects duplicate fields here, which
/// closes the "two `model` keys, gateway reads one, provider the other" hole.
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    stream_options: Option<&'a RawValue>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    /// The Responses API's cap.
    #[serde(default)]
    max_output_tokens: Option<u64>,
    #[serde(default)]
    n: Option<u64>,
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

/// A parsed request: where its fields are, and what the client asked for.
pub struct RequestProbe<'a> {
    body: &'a [u8],
    model_span: std::ops::Range<usize>,
    pub model: Cow<'a, str>,
    pub stream: bool,
    stream_options: Option<&'a RawValue>,
    /// The client asked for the final usage chunk itself.
    pub client_wants_usage: bool,
    /// `max_completion_tokens`, `max_tokens` or `max_output_tokens`
    /// (budget estimates).
    pub max_tokens: Option<u64>,
    /// Choices asked for (`n`): each one is billed its own completion.
    pub n: Option<u64>,
}

impl<'a> RequestProbe<'a> {
    pub fn parse(body: &'a [u8]) -> Result<Self, GatewayError> {
        let first = body.iter().find(|b| !b.is_ascii_whitespace());
        if first != Some(&b'{') {
            return Err(GatewayError::invalid_request(
                "The request body must be a JSON object.",
            ));
        }
        // JSON is UTF-8 (RFC 8259), and the probe skips what it does not
        // read without validating it: without this a body with invalid bytes
        // in a skipped member would be forwarded as is (found by fuzzing).
        // Parsing the checked `str` then skips serde_json's own per-string
        // validation, which pays for most of this pass.
        let Ok(text) = std::str::from_utf8(body) else {
            return Err(GatewayError::invalid_request(
                "The request body is not valid UTF-8.",
            ));
        };
        let probe: Probe<'a> = serde_json::from_str(text).map_err(|e| {
            GatewayError::invalid_request(format!(
                "We could not parse the JSON body of your request: {e}"
            ))
        })?;
        let raw_model = probe.model.ok_or_else(|| {
            GatewayError::invalid_request("you must provide a model parameter").with_param("model")
        })?;
        let model: Cow<'a, str> = serde_json::from_str(raw_model.get()).map_err(|_| {
            GatewayError::invalid_request("'model' must be a string").with_param("model")
        })?;
        let mut client_wants_usage = false;
        if let Some(so) = probe.stream_options {
            if so.get() != "null" {
                let parsed: StreamOptions = serde_json::from_str(so.get()).map_err(|_| {
                    GatewayError::invalid_request("'stream_options' must be an object")
                        .with_param("stream_options")
                })?;
                client_wants_usage = parsed.include_usage == Some(true);
            }
        }
        Ok(RequestProbe {
            body,
            model_span: span_of(body, raw_model),
            model,
            stream: probe.stream == Some(true),
            stream_options: probe.stream_options,
            client_wants_usage,
            max_tokens: probe
                .max_completion_tokens
                .or(probe.max_tokens)
                .or(probe.max_output_tokens),
            n: probe.n,
        })
    }

    /// The body to send upstream: `model` replaced, and (OpenAI providers)
    /// for streams `stream_options.include_usage` forced on so usage is always
    /// metered (the extra chunk is stripped again if the client did not ask).
    /// Anthropic bodies share the probe but need no usage option.
    pub fn rewrite(&self, upstream_model: &str) -> Vec<u8> {
        self.rewrite_with(upstream_model, true)
    }

    pub fn rewrite_with(&self, upstream_model: &str, force_stream_usage: bool) -> Vec<u8> {
        let mut edits = Vec::with_capacity(2);
        let quoted = serde_json::to_vec(upstream_model).unwrap_or_default();
        edits.push(Edit::Replace {
            range: self.model_span.clone(),
            with: quoted,
        });
        if force_stream_usage && self.stream && !self.client_wants_usage {
            match self.stream_options {
                None => edits.push(Edit::InsertFirst {
                    member: br#""stream_options":{"include_usage":true}"#.to_vec(),
                }),
                Some(raw) => {
                    let mut so: StreamOptions = serde_json::from_str(raw.get()).unwrap_or_default();
                    so.include_usage = Some(true);
                    let mut map = so.rest;
                    map.insert("include_usage".into(), serde_json::Value::Bool(true));
                    edits.push(Edit::Replace {
                        range: span_of(self.body, raw),
                        with: serde_json::to_vec(&map).unwrap_or_default(),
                    });
                }
            }
        }
        apply(self.body, edits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[u8]) -> &str {
        std::str::from_utf8(v).unwrap()
    }

    #[test]
    fn non_stream_only_model_changes() {
        let body = br#"{"model":"mock-gpt","messages":[{"role":"user","content":"\u00e9 hi"}],"temperature":0.70}"#;
        let r = RequestProbe::parse(body).unwrap();
        assert_eq!(r.model, "mock-gpt");
        assert!(!r.stream);
        assert_eq!(
            s(&r.rewrite("gpt-4o")),
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"\u00e9 hi"}],"temperature":0.70}"#
        );
    }

    #[test]
    fn stream_gets_include_usage_and_remembers_client_did_not_ask() {
        let r = RequestProbe::parse(br#"{"model":"m","stream":true}"#).unwrap();
        assert!(r.stream && !r.client_wants_usage);
        let out: serde_json::Value = serde_json::from_slice(&r.rewrite("u")).unwrap();
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["model"], "u");
    }

    #[test]
    fn existing_stream_options_are_merged() {
        let r = RequestProbe::parse(
            br#"{"model":"m","stream":true,"stream_options":{"include_obfuscation":false}}"#,
        )
        .unwrap();
        let out: serde_json::Value = serde_json::from_slice(&r.rewrite("u")).unwrap();
        assert_eq!(out["stream_options"]["include_usage"], true);
        assert_eq!(out["stream_options"]["include_obfuscation"], false);

        let r = RequestProbe::parse(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
        )
        .unwrap();
        assert!(r.client_wants_usage);
        assert_eq!(
            s(&r.rewrite("u")),
            r#"{"model":"u","stream":true,"stream_options":{"include_usage":true}}"#
        );
    }

    #[test]
    fn escaped_model_names_decode() {
        let r = RequestProbe::parse(br#"{"model":"mock\u002dgpt"}"#).unwrap();
        assert_eq!(r.model, "mock-gpt");
    }

    #[test]
    fn bad_bodies_are_invalid_requests() {
        for body in [
            &b""[..],
            b"[]",
            b"{",
            b"{\"model\":1}",
            b"{\"messages\":[]}",
            b"{\"model\":\"a\",\"model\":\"b\"}",
            b"{\"model\":\"a\",\"stream\":\"yes\"}",
            b"{\"model\":\"a\",\"stream_options\":3}",
            b"\xff\xfe",
            // Invalid UTF-8 in a member the probe does not read (the fuzz
            // target's finding).
            b"{\"model\": \"gpt\", \"messages\": [{\"r\xa3le\": \"user\"}]}",
        ] {
            let e = RequestProbe::parse(body).err().expect("must fail");
            assert_eq!(e.status, 400, "{:?}", String::from_utf8_lossy(body));
        }
    }
}
