//! Canonicalization and diff of two answers under a ruleset.
//!
//! Non-stream bodies: normalized JSON (ignored fields dropped, JSON-in-string
//! fields parsed, unordered arrays sorted, numbers within tolerance).
//! Streams: a canonical event sequence — each event's payload with its delta
//! strings taken out, consecutive events of the same shape merged — plus
//! the content of every delta channel (text, thinking, tool arguments)
//! concatenated and compared token by token (tool arguments as JSON). So a
//! difference only in how deltas were split is not a diff, while a changed
//! word, argument, finish reason or usage figure is, with its path.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::record::{HttpResponse, SseEvent};
use crate::ruleset::{JsonPath, Module, Ruleset, Seg};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Only in the second answer (shadow).
    Added,
    /// Only in the first answer (primary / baseline).
    Removed,
    Mismatched,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    /// `status`, `headers`, `response`, `events`, `content`,
    /// `upstream_request`.
    pub side: &'static str,
    pub path: String,
    pub kind: DiffKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<Value>,
    pub module: Module,
}

impl Diff {
    pub fn counts(&self) -> bool {
        self.module != Module::Nondeterministic
    }
}

/// Shortened value for reports (whole records are in the baseline).
fn clip(v: &Value) -> Value {
    match v {
        Value::String(s) if s.len() > 160 => {
            let mut end = 160;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            Value::String(format!("{}…", &s[..end]))
        }
        Value::Object(_) | Value::Array(_) => {
            let t = v.to_string();
            if t.len() > 160 {
                clip(&Value::String(t))
            } else {
                v.clone()
            }
        }
        _ => v.clone(),
    }
}

/// Normalizes a value in place under the ruleset.
pub fn normalize(v: &mut Value, rules: &Ruleset) {
    fn go(v: &mut Value, path: &mut Vec<Seg>, rules: &Ruleset) {
        if let Value::String(s) = v {
            if let std::borrow::Cow::Owned(plain) = rules.redaction.replace_all(s, "[$1]") {
                *s = plain;
            }
            if rules.json_string(path) {
                if let Ok(parsed) = serde_json::from_str::<Value>(s) {
                    *v = parsed;
                }
            }
        }
        match v {
            Value::Object(m) => {
                let keys: Vec<String> = m.keys().cloned().collect();
                for k in keys {
                    path.push(Seg::Key(k.clone()));
                    if rules.ignored(path) {
                        m.remove(&k);
                    } else if let Some(x) = m.get_mut(&k) {
                        go(x, path, rules);
                    }
                    path.pop();
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter_mut().enumerate() {
                    path.push(Seg::Idx(i));
                    go(x, path, rules);
                    path.pop();
                }
                if rules.unordered(path) {
                    a.sort_by_cached_key(|x| x.to_string());
                }
            }
            _ => {}
        }
    }
    go(v, &mut Vec::new(), rules);
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number, tol: f64) -> bool {
    if a == b {
        return true;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= tol * x.abs().max(y.abs()).max(1.0),
        _ => false,
    }
}

/// Structural diff of two normalized values.
pub fn diff_values(
    side: &'static str,
    a: &Value,
    b: &Value,
    rules: &Ruleset,
    default: Module,
    out: &mut Vec<Diff>,
) {
    fn go(
        side: &'static str,
        a: &Value,
        b: &Value,
        path: &mut Vec<Seg>,
        rules: &Ruleset,
        default: Module,
        out: &mut Vec<Diff>,
    ) {
        let push =
            |out: &mut Vec<Diff>, kind, a: Option<&Value>, b: Option<&Value>, path: &[Seg]| {
                out.push(Diff {
                    side,
                    path: JsonPath(path.to_vec()).to_string(),
                    kind,
                    a: a.map(clip),
                    b: b.map(clip),
                    module: rules.attribute(side, path, default),
                })
            };
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    path.push(Seg::Key(k.clone()));
                    match (x.get(k), y.get(k)) {
                        (Some(p), Some(q)) => go(side, p, q, path, rules, default, out),
                        (Some(p), None) => push(out, DiffKind::Removed, Some(p), None, path),
                        (None, Some(q)) => push(out, DiffKind::Added, None, Some(q), path),
                        (None, None) => {}
                    }
                    path.pop();
                }
            }
            (Value::Array(x), Value::Array(y)) => {
                for i in 0..x.len().max(y.len()) {
                    path.push(Seg::Idx(i));
                    match (x.get(i), y.get(i)) {
                        (Some(p), Some(q)) => go(side, p, q, path, rules, default, out),
                        (Some(p), None) => push(out, DiffKind::Removed, Some(p), None, path),
                        (None, Some(q)) => push(out, DiffKind::Added, None, Some(q), path),
                        (None, None) => {}
                    }
                    path.pop();
                }
            }
            (Value::Number(x), Value::Number(y)) => {
                if !numbers_equal(x, y, rules.file.float_tolerance) {
                    push(out, DiffKind::Mismatched, Some(a), Some(b), path);
                }
            }
            _ => {
                if a != b {
                    push(out, DiffKind::Mismatched, Some(a), Some(b), path);
                }
            }
        }
    }
    go(side, a, b, &mut Vec::new(), rules, default, out);
}

/// One event of the canonical sequence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanonEvent {
    pub name: String,
    /// The payload without its delta strings, normalized.
    pub shape: Value,
    /// Source events merged into this one.
    pub merged: usize,
}

/// A stream in canonical form.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CanonStream {
    pub events: Vec<CanonEvent>,
    /// Delta channel → concatenated content.
    pub channels: BTreeMap<String, String>,
    /// Channels holding JSON (tool arguments).
    pub json_channels: Vec<String>,
}

/// The index an element is known by: its `index` field when it has one
/// (OpenAI tool-call deltas, Anthropic content blocks), else its position.
fn logical_index(v: &Value, pos: usize) -> usize {
    v.get("index")
        .and_then(Value::as_u64)
        .map_or(pos, |i| i as usize)
}

fn take_deltas(
    v: &mut Value,
    path: &mut Vec<Seg>,
    chan: &mut Vec<Seg>,
    rules: &Ruleset,
    found: &mut Vec<(JsonPath, String, bool)>,
) {
    match v {
        Value::Object(m) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                path.push(Seg::Key(k.clone()));
                chan.push(Seg::Key(k.clone()));
                let is_delta = rules.delta_field(path);
                match m.get_mut(&k) {
                    Some(Value::String(s)) if is_delta => {
                        found.push((
                            JsonPath(chan.clone()),
                            std::mem::take(s),
                            rules.json_delta(path),
                        ));
                        m.remove(&k);
                    }
                    Some(x) => take_deltas(x, path, chan, rules, found),
                    None => {}
                }
                chan.pop();
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                path.push(Seg::Idx(i));
                chan.push(Seg::Idx(logical_index(x, i)));
                take_deltas(x, path, chan, rules, found);
                chan.pop();
                path.pop();
            }
        }
        _ => {}
    }
}

/// Canonical form of an event stream.
pub fn canonicalize_stream(events: &[SseEvent], rules: &Ruleset) -> CanonStream {
    let mut out = CanonStream::default();
    let mut prev_had_delta = false;
    for ev in events {
        let mut data = ev.data.clone();
        let name = ev
            .event
            .clone()
            .or_else(|| data.get("type").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| "message".into());
        let mut found = Vec::new();
        let mut chan = Vec::new();
        // Anthropic events name their content block by a top-level index.
        if let Some(i) = data.get("index").and_then(Value::as_u64) {
            chan.push(Seg::Key(format!("block{i}")));
        }
        take_deltas(&mut data, &mut Vec::new(), &mut chan, rules, &mut found);
        normalize(&mut data, rules);
        let has_delta = !found.is_empty();
        for (path, text, json) in found {
            let key = format!("{name}:{path}");
            if json && !out.json_channels.contains(&key) {
                out.json_channels.push(key.clone());
            }
            out.channels.entry(key).or_default().push_str(&text);
        }
        if has_delta && prev_had_delta {
            if let Some(last) = out.events.last_mut() {
                if last.name == name && last.shape == data {
                    last.merged += 1;
                    continue;
                }
            }
        }
        prev_had_delta = has_delta;
        out.events.push(CanonEvent {
            name,
            shape: data,
            merged: 1,
        });
    }
    out
}

thread_local! {
    static BPE: Option<tiktoken_rs::CoreBPE> = tiktoken_rs::o200k_base().ok();
}

/// Token ids of a text (o200k); byte values if the tokenizer is missing.
pub fn tokens(text: &str) -> Vec<u32> {
    BPE.with(|b| match b {
        Some(b) => b.encode_ordinary(text),
        None => text.bytes().map(u32::from).collect(),
    })
}

/// Token-level digest of a canonical stream's content: sha256 over each
/// channel's name and token ids (hex, first 16 bytes).
pub fn content_digest(s: &CanonStream) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in &s.channels {
        h.update(k.as_bytes());
        h.update([0]);
        for t in tokens(v) {
            h.update(t.to_le_bytes());
        }
        h.update([0xff]);
    }
    hex::encode(&h.finalize()[..16])
}

fn compare_channel(
    key: &str,
    a: &str,
    b: &str,
    json: bool,
    rules: &Ruleset,
    default: Module,
    out: &mut Vec<Diff>,
) {
    if a == b {
        return;
    }
    let (a, b) = (
        rules.redaction.replace_all(a, "[$1]"),
        rules.redaction.replace_all(b, "[$1]"),
    );
    let (a, b) = (a.as_ref(), b.as_ref());
    if a == b {
        return;
    }
    let guard = rules.marker.is_match(a) != rules.marker.is_match(b);
    let module = if guard { Module::Guardrail } else { default };
    if json {
        if let (Ok(mut x), Ok(mut y)) = (
            serde_json::from_str::<Value>(a),
            serde_json::from_str::<Value>(b),
        ) {
            normalize(&mut x, rules);
            normalize(&mut y, rules);
            let mut inner = Vec::new();
            diff_values("content", &x, &y, rules, module, &mut inner);
            for mut d in inner {
                d.path = format!(
                    "{key}{}{}",
                    if d.path.is_empty() { "" } else { "." },
                    d.path
                );
                out.push(d);
            }
            return;
        }
    }
    let (ta, tb) = (tokens(a), tokens(b));
    let at = ta.iter().zip(&tb).take_while(|(x, y)| x == y).count();
    out.push(Diff {
        side: "content",
        path: format!("{key}@token{at}"),
        kind: DiffKind::Mismatched,
        a: Some(clip(&Value::String(a.to_string()))),
        b: Some(clip(&Value::String(b.to_string()))),
        module,
    });
}

/// Is this answer a guardrail refusal?
pub fn guardrail_refusal(r: &HttpResponse, rules: &Ruleset) -> bool {
    if r.status < 400 {
        return false;
    }
    let text = r.body.to_string();
    rules
        .file
        .guardrail_error_codes
        .iter()
        .any(|c| text.contains(c.as_str()))
}

/// All differences between two answers to the same request.
pub fn compare_responses(a: &HttpResponse, b: &HttpResponse, rules: &Ruleset) -> Vec<Diff> {
    let mut out = Vec::new();
    let guard = guardrail_refusal(a, rules) != guardrail_refusal(b, rules);
    if a.status != b.status {
        out.push(Diff {
            side: "status",
            path: "status".into(),
            kind: DiffKind::Mismatched,
            a: Some(a.status.into()),
            b: Some(b.status.into()),
            module: if guard {
                Module::Guardrail
            } else {
                Module::Translation
            },
        });
    }
    for h in &rules.file.compared_headers {
        let (x, y) = (a.headers.get(h), b.headers.get(h));
        if x != y {
            let path = vec![Seg::Key(h.clone())];
            out.push(Diff {
                side: "headers",
                path: h.clone(),
                kind: match (x, y) {
                    (Some(_), None) => DiffKind::Removed,
                    (None, Some(_)) => DiffKind::Added,
                    _ => DiffKind::Mismatched,
                },
                a: x.map(|s| Value::String(s.clone())),
                b: y.map(|s| Value::String(s.clone())),
                module: rules.attribute("headers", &path, Module::Translation),
            });
        }
    }
    match (&a.events, &b.events) {
        (Some(ea), Some(eb)) => {
            let (ca, cb) = (
                canonicalize_stream(ea, rules),
                canonicalize_stream(eb, rules),
            );
            for i in 0..ca.events.len().max(cb.events.len()) {
                match (ca.events.get(i), cb.events.get(i)) {
                    (Some(x), Some(y)) if x.name != y.name => out.push(Diff {
                        side: "events",
                        path: format!("events[{i}].event"),
                        kind: DiffKind::Mismatched,
                        a: Some(x.name.clone().into()),
                        b: Some(y.name.clone().into()),
                        module: Module::Streaming,
                    }),
                    (Some(x), Some(y)) => {
                        let mut inner = Vec::new();
                        diff_values(
                            "events",
                            &x.shape,
                            &y.shape,
                            rules,
                            Module::Streaming,
                            &mut inner,
                        );
                        for mut d in inner {
                            d.path = format!("events[{i}]({}).{}", x.name, d.path);
                            out.push(d);
                        }
                    }
                    (Some(x), None) => out.push(Diff {
                        side: "events",
                        path: format!("events[{i}]({})", x.name),
                        kind: DiffKind::Removed,
                        a: Some(clip(&x.shape)),
                        b: None,
                        module: Module::Streaming,
                    }),
                    (None, Some(y)) => out.push(Diff {
                        side: "events",
                        path: format!("events[{i}]({})", y.name),
                        kind: DiffKind::Added,
                        a: None,
                        b: Some(clip(&y.shape)),
                        module: Module::Streaming,
                    }),
                    (None, None) => {}
                }
            }
            let mut keys: Vec<&String> = ca.channels.keys().chain(cb.channels.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let json = ca.json_channels.contains(k) || cb.json_channels.contains(k);
                let x = ca.channels.get(k).map_or("", String::as_str);
                let y = cb.channels.get(k).map_or("", String::as_str);
                compare_channel(k, x, y, json, rules, Module::Streaming, &mut out);
            }
        }
        (None, None) => {
            let (mut x, mut y) = (a.body.clone(), b.body.clone());
            normalize(&mut x, rules);
            normalize(&mut y, rules);
            let mut inner = Vec::new();
            let default = if guard {
                Module::Guardrail
            } else {
                Module::Translation
            };
            diff_values("response", &x, &y, rules, default, &mut inner);
            for d in &mut inner {
                // A masked value on one side only is the guardrail's doing.
                let marked = |v: &Option<Value>| {
                    v.as_ref()
                        .and_then(Value::as_str)
                        .is_some_and(|s| rules.marker.is_match(s))
                };
                if d.counts() && marked(&d.a) != marked(&d.b) {
                    d.module = Module::Guardrail;
                }
            }
            out.extend(inner);
        }
        _ => out.push(Diff {
            side: "response",
            path: String::new(),
            kind: DiffKind::Mismatched,
            a: Some(if a.events.is_some() {
                "stream".into()
            } else {
                "body".into()
            }),
            b: Some(if b.events.is_some() {
                "stream".into()
            } else {
                "body".into()
            }),
            module: if guard {
                Module::Guardrail
            } else {
                Module::Streaming
            },
        }),
    }
    out
}

/// The request a gateway sent upstream (from the replaying mock's log).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct UpstreamSeen {
    pub path: String,
    pub body: Value,
}

/// Differences between what two gateways sent to the provider.
pub fn compare_upstream(
    a: Option<&UpstreamSeen>,
    b: Option<&UpstreamSeen>,
    rules: &Ruleset,
) -> Vec<Diff> {
    let mut out = Vec::new();
    match (a, b) {
        (Some(x), Some(y)) => {
            if x.path != y.path {
                out.push(Diff {
                    side: "upstream_request",
                    path: "path".into(),
                    kind: DiffKind::Mismatched,
                    a: Some(x.path.clone().into()),
                    b: Some(y.path.clone().into()),
                    module: rules.attribute(
                        "upstream_request",
                        &[Seg::Key("path".into())],
                        Module::Routing,
                    ),
                });
            }
            let (mut p, mut q) = (x.body.clone(), y.body.clone());
            normalize(&mut p, rules);
            normalize(&mut q, rules);
            diff_values(
                "upstream_request",
                &p,
                &q,
                rules,
                Module::Translation,
                &mut out,
            );
        }
        (Some(_), None) | (None, Some(_)) => out.push(Diff {
            side: "upstream_request",
            path: String::new(),
            kind: if a.is_some() {
                DiffKind::Removed
            } else {
                DiffKind::Added
            },
            a: None,
            b: None,
            module: Module::Routing,
        }),
        (None, None) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(name: Option<&str>, data: Value) -> SseEvent {
        SseEvent {
            event: name.map(str::to_string),
            data,
        }
    }

    fn openai_stream(pieces: &[&str], args: &[&str]) -> HttpResponse {
        let mut events = vec![ev(
            None,
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                   "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]}),
        )];
        for p in pieces {
            events.push(ev(
                None,
                json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": null}]}),
            ));
        }
        for a in args {
            events.push(ev(None, json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": a}}]}, "finish_reason": null}]})));
        }
        events.push(ev(
            None,
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 2, "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ));
        events.push(ev(None, json!("[DONE]")));
        HttpResponse {
            status: 200,
            headers: Default::default(),
            body: Value::Null,
            events: Some(events),
        }
    }

    #[test]
    fn same_content_chunked_differently_is_not_a_diff() {
        let r = Ruleset::builtin();
        let a = openai_stream(&["Hel", "lo, wor", "ld"], &["{\"city\":", " \"Paris\"}"]);
        let b = openai_stream(&["Hello", ", world"], &["{\"city\": \"Paris\"}"]);
        let d = compare_responses(&a, &b, &r);
        assert!(d.iter().all(|d| !d.counts()), "{d:#?}");
        let (ca, cb) = (
            canonicalize_stream(a.events.as_ref().unwrap(), &r),
            canonicalize_stream(b.events.as_ref().unwrap(), &r),
        );
        assert_eq!(content_digest(&ca), content_digest(&cb));
    }

    #[test]
    fn changed_tool_argument_is_a_diff_with_its_path() {
        let r = Ruleset::builtin();
        let a = openai_stream(&["Hi"], &["{\"city\": \"Paris\"}"]);
        let b = openai_stream(&["Hi"], &["{\"city\":", " \"Lyon\"}"]);
        let d: Vec<Diff> = compare_responses(&a, &b, &r)
            .into_iter()
            .filter(Diff::counts)
            .collect();
        assert_eq!(d.len(), 1, "{d:#?}");
        assert_eq!(
            d[0].path,
            "message:choices[0].delta.tool_calls[0].function.arguments.city"
        );
        assert_eq!(d[0].module, Module::Streaming);
        // A changed word: reported with the first differing token.
        let c = openai_stream(&["Hi there"], &["{\"city\": \"Paris\"}"]);
        let d: Vec<Diff> = compare_responses(&a, &c, &r)
            .into_iter()
            .filter(Diff::counts)
            .collect();
        assert!(d[0].path.ends_with("@token1"), "{d:#?}");
    }

    #[test]
    fn reordered_keys_and_formatting_are_not_diffs_but_values_are() {
        let r = Ruleset::builtin();
        let body = |v: Value| HttpResponse {
            status: 200,
            headers: Default::default(),
            body: v,
            events: None,
        };
        let a = body(
            json!({"id": "x1", "created": 1, "choices": [{"message": {"role": "assistant",
            "content": "hi", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{\"a\":1,\"b\":2}"}}]}}],
            "usage": {"prompt_tokens": 3}}),
        );
        let b = body(
            json!({"usage": {"prompt_tokens": 3}, "created": 2, "id": "x2", "choices": [{"message": {
            "tool_calls": [{"function": {"arguments": "{\"b\": 2, \"a\": 1}", "name": "f"}, "id": "u"}],
            "content": "hi", "role": "assistant"}}]}),
        );
        let d = compare_responses(&a, &b, &r);
        assert!(d.iter().all(|d| !d.counts()), "{d:#?}");
        assert!(d.iter().any(|d| d.module == Module::Nondeterministic));
        let c = body(
            json!({"id": "x1", "created": 1, "choices": [{"message": {"role": "assistant",
            "content": "hi", "tool_calls": [{"id": "t", "function": {"name": "f", "arguments": "{\"a\":1,\"b\":2}"}}]}}],
            "usage": {"prompt_tokens": 4}}),
        );
        let d: Vec<Diff> = compare_responses(&a, &c, &r)
            .into_iter()
            .filter(Diff::counts)
            .collect();
        assert_eq!(d.len(), 1);
        assert_eq!(
            (d[0].path.as_str(), d[0].module),
            ("usage.prompt_tokens", Module::Usage)
        );
    }

    #[test]
    fn anthropic_blocks_are_channels_by_index() {
        let r = Ruleset::builtin();
        let s = |parts: &[(u64, &str, &str)]| {
            let mut v = vec![ev(
                Some("message_start"),
                json!({"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}),
            )];
            for (i, kind, text) in parts {
                let delta = if *kind == "text" {
                    json!({"type": "text_delta", "text": text})
                } else {
                    json!({"type": "input_json_delta", "partial_json": text})
                };
                v.push(ev(
                    Some("content_block_delta"),
                    json!({"type": "content_block_delta", "index": i, "delta": delta}),
                ));
            }
            v
        };
        let a = s(&[
            (0, "text", "Hello"),
            (1, "json", "{\"q\":"),
            (1, "json", "1}"),
        ]);
        let b = s(&[
            (0, "text", "He"),
            (0, "text", "llo"),
            (1, "json", "{\"q\":1}"),
        ]);
        let ca = canonicalize_stream(&a, &r);
        let cb = canonicalize_stream(&b, &r);
        assert_eq!(ca.channels, cb.channels);
        assert_eq!(
            ca.channels["content_block_delta:block0.delta.text"],
            "Hello"
        );
        assert_eq!(ca.events.len(), cb.events.len());
    }

    #[test]
    fn guardrail_masks_are_attributed_to_guardrails() {
        let r = Ruleset::builtin();
        let body = |s: &str| HttpResponse {
            status: 200,
            headers: Default::default(),
            body: json!({"choices": [{"message": {"content": s}}]}),
            events: None,
        };
        let d = compare_responses(&body("mail a@b.co"), &body("mail [EMAIL]"), &r);
        assert_eq!(d[0].module, Module::Guardrail);
    }

    #[test]
    fn a_mask_and_a_sanitized_placeholder_of_one_kind_are_the_same_value() {
        // The recorded upstream request holds the gateway's mask; the
        // sanitized client request replayed today carries the sanitizer's
        // placeholder, which passes through unmasked.
        let r = Ruleset::builtin();
        let up = |s: &str| UpstreamSeen {
            path: "/v1/chat/completions".into(),
            body: json!({"messages": [{"role": "user", "content": s}],
                         "tools": [{"function": {"arguments": format!("{{\"to\":\"{s}\"}}")}}]}),
        };
        let same = compare_upstream(
            Some(&up("mail [EMAIL] now")),
            Some(&up("mail [EMAIL sha256:0123456789abcdef] now")),
            &r,
        );
        assert!(same.iter().all(|d| !d.counts()), "{same:?}");
        let hashed = compare_upstream(
            Some(&up("[SSN:a1b2c3d4e5f6]")),
            Some(&up("[SSN sha256:0123456789abcdef]")),
            &r,
        );
        assert!(hashed.iter().all(|d| !d.counts()), "{hashed:?}");
        // Another kind, or a value left in clear, is still a difference.
        let kind = compare_upstream(Some(&up("[EMAIL]")), Some(&up("[PHONE]")), &r);
        assert!(kind.iter().any(Diff::counts));
        let clear = compare_upstream(Some(&up("[EMAIL]")), Some(&up("a@b.co")), &r);
        assert!(clear.iter().any(Diff::counts));
    }
}
