//! Irreversible sanitization of replay records that keeps their structure:
//! PII found by the guardrail detectors (email, phone, SSN, payment card,
//! IBAN, IP address) becomes `[LABEL sha256:<16 hex>]` — a salted hash, so
//! the same value maps to the same token everywhere in a record and across
//! a baseline (the client request, the translated request, the provider's
//! answer and the client's answer stay consistent and the record still
//! replays) while the value cannot be recovered without the salt; secrets
//! (API keys, tokens, private keys, credentials in headers or query
//! strings, and any configured secret value) become `__redacted__`.
//!
//! Streamed text is sanitized across events: a value split over several
//! deltas (`"jo"`, `"hn@exam"`, `"ple.com"`) is found in the concatenation
//! of its channel and replaced where it starts, the other pieces losing
//! their part, so the number and order of events are kept.

use std::ops::Range;

use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_core::guardrails::detectors::{compile_class, Class, Compiled};

use crate::record::{HttpResponse, Record, SseEvent};
use crate::ruleset::{Ruleset, Seg};

pub const SANITIZER_VERSION: &str = "sanitize_v1";
pub const REDACTED: &str = "__redacted__";

/// Request headers that are never kept.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "x-goog-api-key",
    "api-key",
    "cookie",
    "set-cookie",
];

/// The strings of one delta channel: (event index, path in its data).
type Pieces = Vec<(usize, Vec<Seg>)>;

pub struct Sanitizer {
    pii: Vec<Compiled>,
    secrets: Vec<Compiled>,
    salt: Vec<u8>,
    exact: Vec<String>,
    rules: Ruleset,
}

impl Sanitizer {
    /// `salt` keys the PII hashes (keep it secret, or random per baseline);
    /// `exact` are secret values redacted wherever they appear.
    pub fn new(salt: &[u8], exact: Vec<String>) -> Result<Sanitizer, String> {
        // The guardrails' detector registry: every built-in detector.
        Ok(Sanitizer {
            pii: compile_class(Class::Pii)?,
            secrets: compile_class(Class::Secret)?,
            salt: salt.to_vec(),
            exact: exact.into_iter().filter(|s| s.len() >= 8).collect(),
            rules: Ruleset::builtin(),
        })
    }

    /// Matches in `text` with their replacements, ordered, non-overlapping.
    fn matches(&self, text: &str) -> Vec<(Range<usize>, String)> {
        let mut found: Vec<(Range<usize>, String)> = Vec::new();
        for s in &self.exact {
            for (i, _) in text.match_indices(s.as_str()) {
                found.push((i..i + s.len(), REDACTED.to_string()));
            }
        }
        let mut ranges = Vec::new();
        for d in &self.secrets {
            d.find(text, &mut ranges);
            found.extend(ranges.drain(..).map(|r| (r, REDACTED.to_string())));
        }
        for d in &self.pii {
            d.find(text, &mut ranges);
            for r in ranges.drain(..) {
                let mut h = Sha256::new();
                h.update(&self.salt);
                h.update(text[r.clone()].as_bytes());
                let token = format!("[{} sha256:{}]", d.label, hex::encode(&h.finalize()[..8]));
                found.push((r, token));
            }
        }
        // Earliest first, longest first; drop overlaps.
        found.sort_by(|a, b| a.0.start.cmp(&b.0.start).then(b.0.end.cmp(&a.0.end)));
        sluice_core::guardrails::retain_non_overlapping(&mut found);
        found
    }

    /// The sanitized text, if anything was found.
    pub fn text(&self, text: &str) -> Option<String> {
        let m = self.matches(text);
        if m.is_empty() {
            return None;
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (r, rep) in m {
            out.push_str(&text[at..r.start]);
            out.push_str(&rep);
            at = r.end;
        }
        out.push_str(&text[at..]);
        Some(out)
    }

    /// Every string of a JSON value (object keys are structure, not data).
    pub fn value(&self, v: &mut Value) {
        match v {
            Value::String(s) => {
                if let Some(t) = self.text(s) {
                    *s = t;
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.value(x)),
            Value::Object(m) => m.values_mut().for_each(|x| self.value(x)),
            _ => {}
        }
    }

    /// A stream: delta channels across events first, then every string.
    pub fn events(&self, events: &mut [SseEvent]) {
        // channel → pieces (event index, path of the string)
        let mut channels: Vec<(String, Pieces)> = Vec::new();
        for (i, ev) in events.iter().enumerate() {
            let mut found = Vec::new();
            delta_paths(&ev.data, &mut Vec::new(), &self.rules, &mut found);
            let block = ev.data.get("index").and_then(Value::as_u64);
            for path in found {
                let key = format!("{:?}/{block:?}/{}", ev.event, channel_key(&ev.data, &path));
                match channels.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, pieces)) => pieces.push((i, path)),
                    None => channels.push((key, vec![(i, path)])),
                }
            }
        }
        for (_, pieces) in channels {
            let texts: Vec<String> = pieces
                .iter()
                .map(|(i, p)| {
                    get(&events[*i].data, p)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                })
                .collect();
            let whole = texts.concat();
            let m = self.matches(&whole);
            if m.is_empty() {
                continue;
            }
            let mut start = 0;
            for ((i, p), t) in pieces.iter().zip(&texts) {
                let span = start..start + t.len();
                let new = rewrite_piece(&whole, &span, &m);
                if let Some(Value::String(s)) = get_mut(&mut events[*i].data, p) {
                    *s = new;
                }
                start = span.end;
            }
        }
        for ev in events.iter_mut() {
            self.value(&mut ev.data);
        }
    }

    fn response(&self, r: &mut HttpResponse) {
        self.value(&mut r.body);
        if let Some(ev) = &mut r.events {
            self.events(ev);
        }
        for (k, v) in r.headers.iter_mut() {
            if SECRET_HEADERS.contains(&k.as_str()) {
                *v = REDACTED.into();
            } else if let Some(t) = self.text(v) {
                *v = t;
            }
        }
    }

    /// Sanitizes a whole record in place.
    pub fn record(&self, r: &mut Record) {
        let req = &mut r.client_request;
        req.headers
            .retain(|k, _| !SECRET_HEADERS.contains(&k.to_ascii_lowercase().as_str()));
        for v in req.headers.values_mut() {
            if let Some(t) = self.text(v) {
                *v = t;
            }
        }
        req.path = redact_query(&req.path);
        if let Some(t) = self.text(&req.path) {
            req.path = t;
        }
        self.value(&mut req.body);
        if let Some(u) = &mut r.upstream {
            u.path = redact_query(&u.path);
            self.value(&mut u.request);
            self.response(&mut u.response);
        }
        self.response(&mut r.client_response);
        r.versions.sanitizer = SANITIZER_VERSION.into();
    }
}

fn redact_query(path: &str) -> String {
    let Some((p, q)) = path.split_once('?') else {
        return path.to_string();
    };
    let q: Vec<String> = q
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if matches!(k, "key" | "api_key" | "token" | "access_token") => {
                format!("{k}={REDACTED}")
            }
            _ => kv.to_string(),
        })
        .collect();
    format!("{p}?{}", q.join("&"))
}

/// The piece `span` of `whole` after replacing `matches`: a match is
/// replaced in the piece where it starts; later pieces lose their part.
fn rewrite_piece(whole: &str, span: &Range<usize>, matches: &[(Range<usize>, String)]) -> String {
    let mut out = String::new();
    let mut at = span.start;
    for (r, rep) in matches {
        if r.end <= span.start || r.start >= span.end {
            continue;
        }
        if r.start >= at {
            out.push_str(&whole[at..r.start]);
        }
        if r.start >= span.start {
            out.push_str(rep);
        }
        at = r.end.min(span.end).max(at);
    }
    if at < span.end {
        out.push_str(&whole[at..span.end]);
    }
    out
}

fn delta_paths(v: &Value, path: &mut Vec<Seg>, rules: &Ruleset, out: &mut Vec<Vec<Seg>>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                path.push(Seg::Key(k.clone()));
                if x.is_string() && rules.delta_field(path) {
                    out.push(path.clone());
                } else {
                    delta_paths(x, path, rules, out);
                }
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(Seg::Idx(i));
                delta_paths(x, path, rules, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The path with array positions replaced by elements' `index` fields.
fn channel_key(root: &Value, path: &[Seg]) -> String {
    let mut v = root;
    let mut key = String::new();
    for s in path {
        match s {
            Seg::Key(k) => {
                key.push('.');
                key.push_str(k);
                v = v.get(k).unwrap_or(&Value::Null);
            }
            Seg::Idx(i) => {
                v = v.get(*i).unwrap_or(&Value::Null);
                let idx = v.get("index").and_then(Value::as_u64).unwrap_or(*i as u64);
                key.push_str(&format!("[{idx}]"));
            }
        }
    }
    key
}

fn get<'a>(v: &'a Value, path: &[Seg]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, s| match s {
        Seg::Key(k) => v.get(k),
        Seg::Idx(i) => v.get(*i),
    })
}

fn get_mut<'a>(v: &'a mut Value, path: &[Seg]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, s| match s {
        Seg::Key(k) => v.get_mut(k),
        Seg::Idx(i) => v.get_mut(*i),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{split_events, HttpRequest, Meta, Upstream, Versions};
    use serde_json::json;

    fn s() -> Sanitizer {
        Sanitizer::new(b"test-salt", vec!["prov-secret-123456".into()]).unwrap()
    }

    fn record() -> Record {
        let stream = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Mail jo\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hn@exam\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ple.com now\"}}]}\n\n",
            "data: [DONE]\n\n"
        );
        let mut headers = std::collections::BTreeMap::new();
        headers.insert(
            "authorization".to_string(),
            "Bearer sk-sluice-abcdefghijklmnopqrstuv".to_string(),
        );
        headers.insert("content-type".to_string(), "application/json".to_string());
        Record {
            format: crate::record::FORMAT.into(),
            id: "r".into(),
            request_id: "r".into(),
            key_id: Some("k".into()),
            route: "/v1/chat/completions".into(),
            ts_ms: 0,
            client_request: HttpRequest {
                method: "POST".into(),
                path: "/v1beta/models/x:generateContent?key=AIzaSyA-secret&alt=sse".into(),
                headers,
                body: json!({"messages": [{"role": "user", "content":
                    "I am john@example.com, card 4111 1111 1111 1111, key sk-proj-abcdefghijklmnopqrstuvwxyz, prov-secret-123456"}]}),
            },
            upstream: Some(Upstream {
                provider: "p".into(),
                kind: "openai".into(),
                path: "/v1/chat/completions".into(),
                request: json!({"messages": [{"role": "user", "content": "I am john@example.com"}]}),
                response: HttpResponse {
                    status: 200,
                    headers: Default::default(),
                    body: Value::Null,
                    events: Some(split_events(stream)),
                },
            }),
            client_response: HttpResponse {
                status: 200,
                headers: Default::default(),
                body: Value::Null,
                events: Some(split_events(stream)),
            },
            meta: Meta::default(),
            versions: Versions::default(),
        }
    }

    #[test]
    fn no_secret_or_pii_survives_and_structure_is_kept() {
        let mut r = record();
        s().record(&mut r);
        let text = serde_json::to_string(&r).unwrap();
        for leak in [
            "john",
            "example.com",
            "4111",
            "sk-proj",
            "sk-sluice",
            "AIzaSyA",
            "prov-secret",
            "hn@exam",
        ] {
            assert!(!text.contains(leak), "{leak} survived: {text}");
        }
        assert!(!r.client_request.headers.contains_key("authorization"));
        assert!(r.client_request.path.contains("key=__redacted__&alt=sse"));
        // The same email maps to the same token in request and stream.
        let token = {
            let body = r.client_request.body.to_string();
            let at = body.find("[EMAIL sha256:").unwrap();
            body[at..at + 31].to_string()
        };
        assert!(r
            .upstream
            .as_ref()
            .unwrap()
            .request
            .to_string()
            .contains(&token));
        let events = r.client_response.events.as_ref().unwrap();
        assert_eq!(events.len(), 4, "event count kept");
        let joined: String = events
            .iter()
            .filter_map(|e| {
                e.data
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
            })
            .collect();
        assert_eq!(joined, format!("Mail {token} now"));
    }

    #[test]
    fn rewrite_piece_spans() {
        let whole = "ab[XY]cd";
        let m = vec![(2..6, "<M>".to_string())];
        assert_eq!(rewrite_piece(whole, &(0..3), &m), "ab<M>");
        assert_eq!(rewrite_piece(whole, &(3..5), &m), "");
        assert_eq!(rewrite_piece(whole, &(5..8), &m), "cd");
    }
}
