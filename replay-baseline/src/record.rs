//! The replay record (`sluice-replay/1`, one JSON object per line of a
//! baseline file; docs/replay.md documents every field), and its conversion
//! from the filter's capture record.
//!
//! Bodies are kept as JSON values when they parse (so the sanitizer can walk
//! their strings and the diff can compare them structurally) and as strings
//! otherwise; event streams are kept event by event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Format tag of every record; bump on incompatible changes.
pub const FORMAT: &str = "sluice-replay/1";
/// Version of the SSE framing rules used to split and re-emit events.
pub const SSE_PROTOCOL_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub format: String,
    /// Stable record id (the request id it was captured under).
    pub id: String,
    pub request_id: String,
    /// Virtual key id (never the key).
    pub key_id: Option<String>,
    /// Client endpoint path without query (`/v1/chat/completions`, …).
    pub route: String,
    pub ts_ms: u64,
    pub client_request: HttpRequest,
    /// What the filter sent to the provider and got back; `None` when the
    /// gateway answered itself (auth, guardrail block, validation).
    pub upstream: Option<Upstream>,
    pub client_response: HttpResponse,
    pub meta: Meta,
    pub versions: Versions,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpRequest {
    pub method: String,
    /// Path and query (`key=` values redacted).
    pub path: String,
    /// Only headers that shape the answer; never credentials.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub body: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HttpResponse {
    pub status: u16,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Non-stream body (JSON value, or a string when it is not JSON).
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub body: Value,
    /// Stream: the server-sent events in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<SseEvent>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SseEvent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The `data:` payload: JSON when it parses (`[DONE]` stays a string).
    pub data: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upstream {
    /// Provider name in the gateway's configuration, and its kind.
    pub provider: String,
    pub kind: String,
    pub path: String,
    /// The translated (or passed-through) request body the provider got.
    pub request: Value,
    /// The provider's raw answer.
    pub response: HttpResponse,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Meta {
    pub provider: Option<String>,
    pub public_model: Option<String>,
    pub upstream_model: Option<String>,
    pub client_dialect: String,
    pub stream: bool,
    pub tools: bool,
    pub stratum: String,
    /// Free labels (`thinking`, `error`, `recording:<name>`, …).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Versions {
    pub filter: String,
    pub config: String,
    pub ruleset: String,
    pub sse_protocol: u32,
    /// Sanitizer version that processed the record (empty: raw).
    #[serde(default)]
    pub sanitizer: String,
}

/// A body as JSON when it parses, else the text.
pub fn body_value(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

fn is_sse(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|c| c.trim_start().starts_with("text/event-stream"))
}

/// Splits an SSE body into events (comments and `id:`/`retry:` dropped).
pub fn split_events(text: &str) -> Vec<SseEvent> {
    let mut out = Vec::new();
    let mut parser = sluice_core::framing::sse::SseParser::new(usize::MAX / 2);
    let _ = parser.feed(text.as_bytes(), true, |ev| {
        let Some(data) = ev.data.as_deref() else {
            return;
        };
        let data = String::from_utf8_lossy(data);
        out.push(SseEvent {
            event: ev.event.map(|e| String::from_utf8_lossy(e).into_owned()),
            data: serde_json::from_str(&data).unwrap_or_else(|_| Value::String(data.into_owned())),
        });
    });
    out
}

/// Re-emits events as an SSE body, one event per frame.
pub fn write_events(events: &[SseEvent]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let data = match &e.data {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            match &e.event {
                Some(name) => format!("event: {name}\ndata: {data}\n\n"),
                None => format!("data: {data}\n\n"),
            }
        })
        .collect()
}

fn response(status: u16, content_type: Option<&str>, body: &str) -> HttpResponse {
    let mut headers = BTreeMap::new();
    if let Some(ct) = content_type {
        headers.insert("content-type".to_string(), ct.to_string());
    }
    if is_sse(content_type) && (200..300).contains(&status) {
        HttpResponse {
            status,
            headers,
            body: Value::Null,
            events: Some(split_events(body)),
        }
    } else {
        HttpResponse {
            status,
            headers,
            body: body_value(body),
            events: None,
        }
    }
}

impl HttpResponse {
    /// From what a gateway answered (status, content type, raw body).
    pub fn from_raw(status: u16, content_type: Option<&str>, body: &str) -> HttpResponse {
        response(status, content_type, body)
    }

    /// The body as the wire carries it (streams re-framed event by event).
    pub fn wire_frames(&self) -> Vec<String> {
        match &self.events {
            Some(events) => write_events(events),
            None => vec![match &self.body {
                Value::Null => String::new(),
                Value::String(s) => s.clone(),
                v => v.to_string(),
            }],
        }
    }
}

impl Record {
    /// Converts the filter's capture record (raw, unsanitized).
    pub fn from_capture(bytes: &[u8], ruleset: &str) -> Result<Record, String> {
        let c = sluice_records::CaptureRecord::from_json(bytes)
            .map_err(|e| format!("bad capture record: {e}"))?;
        let route = c.path.split('?').next().unwrap_or_default().to_string();
        let mut headers = BTreeMap::new();
        headers.insert("content-type".into(), "application/json".into());
        if let Some(v) = c.anthropic_version {
            headers.insert("anthropic-version".into(), v);
        }
        let upstream = c.upstream.map(|u| Upstream {
            response: response(u.status, u.content_type.as_deref(), &u.response_body),
            provider: u.provider,
            kind: u.kind,
            path: u.path,
            request: body_value(&u.request_body),
        });
        let mut client_response = response(c.status, c.content_type.as_deref(), &c.response_body);
        if let Some(w) = c.warnings {
            client_response
                .headers
                .insert("x-sluice-warnings".into(), w);
        }
        let mut tags = Vec::new();
        if c.status >= 400 {
            tags.push("error".to_string());
        }
        Ok(Record {
            format: FORMAT.into(),
            id: c.request_id.clone(),
            request_id: c.request_id,
            key_id: c.key_id,
            route,
            ts_ms: c.ts_ms,
            client_request: HttpRequest {
                method: c.method,
                path: c.path,
                headers,
                body: body_value(&c.request_body),
            },
            client_response,
            meta: Meta {
                provider: upstream.as_ref().map(|u| u.provider.clone()),
                public_model: c.model,
                upstream_model: c.upstream_model,
                client_dialect: c.client_dialect,
                stream: c.stream,
                tools: c.tools,
                stratum: c.stratum,
                tags,
            },
            upstream,
            versions: Versions {
                filter: c.filter_version,
                config: c.config_version,
                ruleset: ruleset.to_string(),
                sse_protocol: SSE_PROTOCOL_VERSION,
                sanitizer: String::new(),
            },
        })
    }
}

/// Reads a baseline (JSON Lines); blank lines and `#` comments are skipped.
pub fn read_baseline(path: &std::path::Path) -> Result<Vec<Record>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let r: Record =
            serde_json::from_str(line).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))?;
        if r.format != FORMAT {
            return Err(format!(
                "{}:{}: format '{}' (this build reads {FORMAT})",
                path.display(),
                i + 1,
                r.format
            ));
        }
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_and_reframe() {
        let body = "event: message_start\ndata: {\"type\":\"message_start\"}\n\n: ping\n\ndata: {\"a\":1}\n\ndata: [DONE]\n\n";
        let ev = split_events(body);
        assert_eq!(ev.len(), 3);
        assert_eq!(ev[0].event.as_deref(), Some("message_start"));
        assert_eq!(ev[2].data, Value::String("[DONE]".into()));
        let again = write_events(&ev).concat();
        assert_eq!(split_events(&again), ev);
    }

    #[test]
    fn capture_converts_with_stream_events_and_upstream() {
        let cap = serde_json::json!({
            "v": 1, "request_id": "r1", "key_id": "k", "ts_ms": 5, "filter_version": "0.1.0",
            "config_version": "7", "method": "POST", "path": "/v1/chat/completions",
            "anthropic_version": null, "request_body": "{\"model\":\"m\",\"stream\":true}",
            "upstream": {"provider": "p", "kind": "anthropic", "path": "/v1/messages",
                          "request_body": "{\"model\":\"up\"}", "status": 200,
                          "content_type": "text/event-stream",
                          "response_body": "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"},
            "status": 200, "content_type": "text/event-stream",
            "response_body": "data: {\"x\":1}\n\ndata: [DONE]\n\n",
            "model": "m", "upstream_model": "up", "client_dialect": "openai", "stream": true,
            "tools": false, "stratum": "m|tools=false|stream=true"
        });
        let r = Record::from_capture(cap.to_string().as_bytes(), "diff_ruleset_v1").unwrap();
        assert_eq!(r.route, "/v1/chat/completions");
        assert_eq!(r.client_response.events.as_ref().unwrap().len(), 2);
        let up = r.upstream.as_ref().unwrap();
        assert_eq!(
            up.response.events.as_ref().unwrap()[0].event.as_deref(),
            Some("message_stop")
        );
        let line = serde_json::to_string(&r).unwrap();
        let back: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(back, r);
    }
}
