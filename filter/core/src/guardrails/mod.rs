//! Guardrails: content rules applied to what the model sees (requests) and
//! what the client receives (responses), in every dialect.
//!
//! Rules run on every string of the JSON body except those that are not
//! prose (ids, roles, model names, base64 image data, …; see `SKIP_KEYS`):
//! messages, system prompts, tool-call arguments and tool results alike, in
//! OpenAI, Anthropic and Gemini shapes. `block` refuses the request naming
//! the rule (never echoing the matched text); `mask` and `hash` rewrite the
//! match.

pub mod detectors;

use serde_json::Value;
use sha2::{Digest, Sha256};
use sluice_config::{GuardAction, GuardDirection, Guardrails};

/// JSON keys whose string values are not text for the model.
const SKIP_KEYS: &[&str] = &[
    "model",
    "role",
    "type",
    "id",
    "tool_call_id",
    "tool_use_id",
    "name",
    "media_type",
    "mime_type",
    "mimeType",
    "data",
    "url",
    "signature",
    "thoughtSignature",
    "object",
    "finish_reason",
    "stop_reason",
    "finishReason",
    "responseId",
    "modelVersion",
    "system_fingerprint",
    "fileUri",
    "file_uri",
    "detail",
];

struct Rule {
    name: String,
    detector: detectors::Compiled,
    action: GuardAction,
    on: GuardDirection,
    models: Vec<String>,
    keys: Vec<String>,
}

impl Rule {
    fn applies(&self, dir: GuardDirection, model: &str, key: &str) -> bool {
        (self.on == GuardDirection::Both || self.on == dir)
            && (self.keys.is_empty() || self.keys.iter().any(|k| k == key))
            && (self.models.is_empty()
                || self.models.iter().any(|m| match m.strip_suffix('*') {
                    Some(prefix) => model.starts_with(prefix),
                    None => m == model,
                }))
    }
}

pub struct Policy {
    rules: Vec<Rule>,
    /// All rules' patterns in one automaton: one pass over a text says
    /// which rules can match it, and only those are run for their spans
    /// (the common case, nothing found, costs one scan instead of one per
    /// rule). `None` if the combined automaton would be too large.
    prefilter: Option<regex::RegexSet>,
    /// No pattern is anchored (`^`, `$`, `\A`, `\z`): a match inside any
    /// string of a body is then a match inside the whole (unescaped) body,
    /// so one scan of the body can clear it without parsing it.
    whole_body_scan: bool,
    salt: String,
    allow_models: Vec<String>,
    deny_models: Vec<String>,
    pub max_input_tokens: Option<u64>,
    max_tokens: Option<u64>,
    validate_parameters: bool,
}

fn model_matches(list: &[String], model: &str) -> bool {
    list.iter().any(|m| match m.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => m == model,
    })
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// A rule with action `block` matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub rule: String,
}

/// A rule matched (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule: String,
    pub action: GuardAction,
}

impl Policy {
    /// Compiles the rules once per configuration (never per request).
    pub fn new(g: &Guardrails, env: impl Fn(&str) -> Option<String>) -> Result<Policy, String> {
        if g.max_input_tokens.is_some() && !crate::tokens::EXACT {
            // An estimate would let prompts past the cap or refuse ones
            // under it: refuse the configuration instead (Envoy NACKs it).
            return Err(
                "max_input_tokens needs exact token counts: this is the lite \
                        module, built without the tokenizer; deploy the full module"
                    .into(),
            );
        }
        let mut rules = Vec::with_capacity(g.rules.len());
        for r in &g.rules {
            rules.push(Rule {
                name: r.name.clone(),
                detector: detectors::compile(&r.detector)
                    .map_err(|e| format!("guardrails rule '{}': {e}", r.name))?,
                action: r.action,
                on: r.on,
                models: r.models.clone(),
                keys: r.keys.clone(),
            });
        }
        let prefilter = regex::RegexSetBuilder::new(rules.iter().map(|r| r.detector.pattern()))
            .size_limit(8 << 20)
            .build()
            .ok();
        let whole_body_scan = rules.iter().all(|r| {
            let p = r.detector.pattern();
            !p.contains(['^', '$']) && !p.contains("\\A") && !p.contains("\\z")
        });
        let salt = g
            .hash_salt_env
            .as_deref()
            .and_then(env)
            .unwrap_or_else(|| "sluice-default-salt".to_string());
        Ok(Policy {
            rules,
            prefilter,
            whole_body_scan,
            salt,
            allow_models: g.allow_models.clone(),
            deny_models: g.deny_models.clone(),
            max_input_tokens: g.max_input_tokens,
            max_tokens: g.max_tokens,
            validate_parameters: g.validate_parameters,
        })
    }

    /// Model allow/deny lists.
    pub fn check_model(&self, model: &str) -> Result<(), String> {
        if model_matches(&self.deny_models, model)
            || (!self.allow_models.is_empty() && !model_matches(&self.allow_models, model))
        {
            return Err(format!(
                "The model `{}` is not allowed by the gateway's policy.",
                crate::error::truncate(model, 128)
            ));
        }
        Ok(())
    }

    /// Whether checks need the decoded request.
    pub fn needs_request(&self) -> bool {
        self.max_input_tokens.is_some() || self.max_tokens.is_some() || self.validate_parameters
    }

    /// Caps and parameter ranges; `input_tokens` when a cap is set.
    pub fn check_request(
        &self,
        r: &crate::canonical::Request,
        input_tokens: Option<u64>,
    ) -> Result<(), String> {
        if self.validate_parameters {
            if let Some(t) = r.temperature.filter(|t| !(0.0..=2.0).contains(t)) {
                return Err(format!("temperature must be between 0 and 2 (got {t})."));
            }
            if let Some(p) = r.top_p.filter(|p| !(0.0..=1.0).contains(p)) {
                return Err(format!("top_p must be between 0 and 1 (got {p})."));
            }
            if r.max_tokens == Some(0) {
                return Err("max_tokens must be at least 1.".into());
            }
            if r.n == Some(0) {
                return Err("n must be at least 1.".into());
            }
        }
        if let (Some(cap), Some(m)) = (self.max_tokens, r.max_tokens) {
            if m > cap {
                return Err(format!(
                    "max_tokens is {m}; the gateway allows at most {cap}."
                ));
            }
        }
        if let (Some(cap), Some(n)) = (self.max_input_tokens, input_tokens) {
            if n > cap {
                return Err(format!(
                    "The prompt is {n} tokens; the gateway allows at most {cap}."
                ));
            }
        }
        Ok(())
    }

    pub fn active(&self, dir: GuardDirection, model: &str, key: &str) -> bool {
        self.rules.iter().any(|r| r.applies(dir, model, key))
    }

    /// Matches of the applicable rules, ordered and non-overlapping
    /// (earlier rules win where matches overlap).
    fn find(
        &self,
        dir: GuardDirection,
        model: &str,
        key: &str,
        text: &str,
    ) -> Vec<(std::ops::Range<usize>, &Rule)> {
        let mut found: Vec<(std::ops::Range<usize>, &Rule)> = Vec::new();
        let candidates = self.prefilter.as_ref().map(|set| set.matches(text));
        if candidates.as_ref().is_some_and(|c| !c.matched_any()) {
            return found;
        }
        let mut ranges = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            if candidates.as_ref().is_some_and(|c| !c.matched(i)) || !r.applies(dir, model, key) {
                continue;
            }
            ranges.clear();
            r.detector.find(text, &mut ranges);
            found.extend(ranges.drain(..).map(|range| (range, r)));
        }
        found.sort_by_key(|(r, _)| r.start);
        retain_non_overlapping(&mut found);
        found
    }

    /// `text` with `matches` replaced; `Err` if one is a `block` rule.
    fn rewrite(
        &self,
        text: &str,
        matches: &[(std::ops::Range<usize>, &Rule)],
        hits: &mut Vec<Hit>,
    ) -> Result<String, Blocked> {
        if let Some((_, r)) = matches.iter().find(|(_, r)| r.action == GuardAction::Block) {
            hits.push(Hit {
                rule: r.name.clone(),
                action: r.action,
            });
            return Err(Blocked {
                rule: r.name.clone(),
            });
        }
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (range, rule) in matches {
            // Match ranges come from the regex engine on this very text:
            // char boundaries, in order, never overlapping.
            out.push_str(text.get(at..range.start).unwrap_or_default());
            out.push('[');
            out.push_str(rule.detector.label);
            if rule.action == GuardAction::Hash {
                let mut h = Sha256::new();
                h.update(self.salt.as_bytes());
                h.update(text.get(range.clone()).unwrap_or_default().as_bytes());
                out.push(':');
                for b in h.finalize().iter().take(6) {
                    out.push_str(&format!("{b:02x}"));
                }
            }
            out.push(']');
            hits.push(Hit {
                rule: rule.name.clone(),
                action: rule.action,
            });
            at = range.end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        Ok(out)
    }

    /// Applies the rules to one string. `Ok(true)` when it was rewritten.
    pub fn apply_text(
        &self,
        dir: GuardDirection,
        model: &str,
        key: &str,
        text: &mut String,
        hits: &mut Vec<Hit>,
    ) -> Result<bool, Blocked> {
        let matches = self.find(dir, model, key, text);
        if matches.is_empty() {
            return Ok(false);
        }
        *text = self.rewrite(text, &matches, hits)?;
        Ok(true)
    }

    /// Applies the rules to every text string of a JSON body. `Ok(Some)`:
    /// the rewritten body; `Ok(None)`: nothing changed.
    pub fn apply_json(
        &self,
        dir: GuardDirection,
        model: &str,
        key: &str,
        body: &[u8],
        hits: &mut Vec<Hit>,
    ) -> Result<Option<Vec<u8>>, Blocked> {
        if self.clears_whole(body) {
            return Ok(None);
        }
        let mut v = match serde_json::from_slice::<Value>(body) {
            Ok(v) => v,
            // Not readable as a tree (nested past the parser's depth limit,
            // or not JSON at all): fail closed. The rules run over the whole
            // text with its escapes decoded; a match anywhere refuses the
            // body, since without the structure it can be neither masked
            // nor shown to sit outside a checked string.
            Err(_) => return self.refuse_unreadable(dir, model, key, body, hits),
        };
        let mut changed = false;
        self.walk(dir, model, key, &mut v, hits, &mut changed)?;
        Ok(if changed {
            serde_json::to_vec(&v).ok()
        } else {
            None
        })
    }

    /// A body the walk cannot read: refused (by the first matching rule,
    /// whatever its action) when any rule matches its decoded text;
    /// `Ok(None)` otherwise (the dialect decoder reports what is wrong).
    fn refuse_unreadable(
        &self,
        dir: GuardDirection,
        model: &str,
        key: &str,
        body: &[u8],
        hits: &mut Vec<Hit>,
    ) -> Result<Option<Vec<u8>>, Blocked> {
        let text = String::from_utf8_lossy(body);
        let text = unescape_json(&text);
        match self.find(dir, model, key, &text).first() {
            None => Ok(None),
            Some((_, r)) => {
                hits.push(Hit {
                    rule: r.name.clone(),
                    action: GuardAction::Block,
                });
                Err(Blocked {
                    rule: r.name.clone(),
                })
            }
        }
    }

    /// True when no rule can match any string of this JSON body: one scan
    /// of the body with JSON escapes decoded (every string's text is then a
    /// substring of it), instead of a parse and a scan per string. A match
    /// anywhere (even outside strings) just means the full path runs.
    fn clears_whole(&self, body: &[u8]) -> bool {
        let (Some(set), true) = (&self.prefilter, self.whole_body_scan) else {
            return false;
        };
        let Ok(text) = std::str::from_utf8(body) else {
            return false;
        };
        !set.is_match(&unescape_json(text))
    }

    fn walk(
        &self,
        dir: GuardDirection,
        model: &str,
        key: &str,
        v: &mut Value,
        hits: &mut Vec<Hit>,
        changed: &mut bool,
    ) -> Result<(), Blocked> {
        match v {
            Value::String(s) => *changed |= self.apply_text(dir, model, key, s, hits)?,
            Value::Array(a) => {
                for x in a {
                    self.walk(dir, model, key, x, hits, changed)?;
                }
            }
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if !SKIP_KEYS.contains(&k.as_str()) {
                        self.walk(dir, model, key, x, hits, changed)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Keeps the first of overlapping matches, given matches sorted by start
/// (ties in the caller's order of preference).
pub fn retain_non_overlapping<T>(found: &mut Vec<(std::ops::Range<usize>, T)>) {
    let mut at = 0;
    found.retain(|(r, _)| {
        let keep = r.start >= at;
        if keep {
            at = r.end;
        }
        keep
    });
}

/// `text` with JSON string escapes decoded (`\n`, `\"`, `\u00e9`, surrogate
/// pairs); borrowed when there are none. Invalid escapes are kept as is.
fn unescape_json(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.contains('\\') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut chars = text.char_indices().peekable();
    let hex4 = |s: &str| s.get(..4).and_then(|h| u32::from_str_radix(h, 16).ok());
    while let Some((i, c)) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let Some(&(_, e)) = chars.peek() else {
            out.push(c);
            break;
        };
        let decoded = match e {
            'n' => Some('\n'),
            't' => Some('\t'),
            'r' => Some('\r'),
            'b' => Some('\u{8}'),
            'f' => Some('\u{c}'),
            '"' | '\\' | '/' => Some(e),
            'u' => {
                let rest = text.get(i.saturating_add(2)..).unwrap_or_default();
                match hex4(rest) {
                    Some(hi @ 0xD800..=0xDBFF) => {
                        let lo = rest
                            .get(4..6)
                            .filter(|s| *s == "\\u")
                            .and_then(|_| hex4(rest.get(6..)?));
                        match lo {
                            Some(lo @ 0xDC00..=0xDFFF) => {
                                // u, 4 hex digits, \, u, 4 hex digits
                                for _ in 0..11 {
                                    chars.next();
                                }
                                // hi and lo are in their ranges (matched above).
                                out.extend(char::from_u32(
                                    0x10000u32
                                        .saturating_add(hi.saturating_sub(0xD800) << 10)
                                        .saturating_add(lo.saturating_sub(0xDC00)),
                                ));
                                continue;
                            }
                            _ => None,
                        }
                    }
                    Some(cp) => {
                        for _ in 0..4 {
                            chars.next();
                        }
                        char::from_u32(cp)
                    }
                    None => None,
                }
            }
            _ => None,
        };
        match decoded {
            Some(d) => {
                chars.next();
                out.push(d);
            }
            None => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Characters of streamed text held back so that a match split across
/// deltas is still caught whole: matches up to this length are guaranteed.
pub const STREAM_HOLD_BACK: usize = 256;

/// Response guardrails on a stream of canonical events: text deltas are
/// scanned with a bounded held-back tail; everything else passes, flushing
/// the tail first so order is kept.
#[derive(Debug, Default)]
pub struct StreamGuard {
    pending: String,
}

impl StreamGuard {
    /// Filters `events` in place. On a `block`, the stream is replaced by an
    /// error event and `Done`.
    pub fn filter(
        &mut self,
        policy: &Policy,
        model: &str,
        key: &str,
        events: &mut Vec<crate::canonical::StreamEvent>,
        hits: &mut Vec<Hit>,
    ) {
        use crate::canonical::StreamEvent as E;
        let input = std::mem::take(events);
        let mut out = Vec::with_capacity(input.len());
        for ev in input {
            match ev {
                E::Text(t) => {
                    self.pending.push_str(&t);
                    match self.release(policy, model, key, false, hits) {
                        Ok(Some(text)) => out.push(E::Text(text)),
                        Ok(None) => {}
                        Err(b) => return Self::blocked(events, out, &b),
                    }
                }
                // Bookkeeping events carry no text to order against: no flush
                // (Gemini sends usage with every chunk).
                other @ (E::Usage(_) | E::Start { .. } | E::ThinkingSignature(_)) => {
                    out.push(other)
                }
                other => {
                    match self.release(policy, model, key, true, hits) {
                        Ok(Some(text)) => out.push(E::Text(text)),
                        Ok(None) => {}
                        Err(b) => return Self::blocked(events, out, &b),
                    }
                    out.push(other);
                }
            }
        }
        *events = out;
    }

    fn blocked(
        events: &mut Vec<crate::canonical::StreamEvent>,
        mut out: Vec<crate::canonical::StreamEvent>,
        b: &Blocked,
    ) {
        use crate::canonical::{ErrorClass, ProviderError, StreamEvent as E};
        out.push(E::Error(ProviderError {
            status: 400,
            kind: ErrorClass::InvalidRequest,
            message: format!("Blocked by the gateway's guardrail '{}'.", b.rule),
        }));
        out.push(E::Done);
        *events = out;
    }

    /// Returns the text that may be sent, masked: all of it when `flush`,
    /// else all but the last `STREAM_HOLD_BACK` characters — and never part
    /// of a match that may still grow, which stays held, unmasked, until more
    /// text (or the end) decides it.
    fn release(
        &mut self,
        policy: &Policy,
        model: &str,
        key: &str,
        flush: bool,
        hits: &mut Vec<Hit>,
    ) -> Result<Option<String>, Blocked> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let matches = policy.find(GuardDirection::Response, model, key, &self.pending);
        let mut cut = if flush {
            self.pending.len()
        } else {
            let chars = self.pending.chars().count();
            if chars <= STREAM_HOLD_BACK {
                return Ok(None);
            }
            self.pending
                .char_indices()
                .nth(chars.saturating_sub(STREAM_HOLD_BACK))
                .map_or(self.pending.len(), |(i, _)| i)
        };
        if !flush {
            if let Some((r, _)) = matches.iter().find(|(r, _)| r.start < cut && r.end > cut) {
                cut = r.start;
            }
        }
        let committed: Vec<_> = matches.into_iter().filter(|(r, _)| r.end <= cut).collect();
        let cut = if self.pending.is_char_boundary(cut) {
            cut
        } else {
            self.pending.len()
        };
        let out = policy.rewrite(
            self.pending.get(..cut).unwrap_or_default(),
            &committed,
            hits,
        )?;
        self.pending.drain(..cut);
        Ok((!out.is_empty()).then_some(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(rules: Value) -> Policy {
        let g: Guardrails = serde_json::from_value(json!({"rules": rules})).unwrap();
        Policy::new(&g, |_| None).unwrap()
    }

    const REQ: GuardDirection = GuardDirection::Request;

    #[test]
    fn masks_in_every_dialects_text_fields_and_tools() {
        let p = policy(json!([{"name": "pii", "detector": "email", "action": "mask"}]));
        for body in [
            json!({"model": "m", "messages": [{"role": "user", "content": "mail bob@ex.com"},
                   {"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
                    "function": {"name": "send", "arguments": "{\"to\":\"bob@ex.com\"}"}}]},
                   {"role": "tool", "tool_call_id": "c", "content": "sent to bob@ex.com"}]}),
            json!({"model": "m", "system": "admin is bob@ex.com", "messages": [{"role": "user",
                   "content": [{"type": "tool_result", "tool_use_id": "t", "content": "bob@ex.com"}]}]}),
            json!({"contents": [{"role": "user", "parts": [{"text": "bob@ex.com"},
                   {"functionCall": {"name": "f", "args": {"to": "bob@ex.com"}}}]}]}),
        ] {
            let mut hits = Vec::new();
            let out = p
                .apply_json(REQ, "m", "k", body.to_string().as_bytes(), &mut hits)
                .unwrap()
                .unwrap();
            let s = String::from_utf8(out).unwrap();
            assert!(!s.contains("bob@ex.com"), "{s}");
            assert!(s.contains("[EMAIL]"));
            assert!(!hits.is_empty());
        }
    }

    #[test]
    fn block_names_the_rule_and_never_the_text() {
        let p =
            policy(json!([{"name": "no-cards", "detector": "payment_card", "action": "block"}]));
        let mut hits = Vec::new();
        let body = json!({"messages": [{"role": "user", "content": "4111 1111 1111 1111"}]});
        let e = p
            .apply_json(REQ, "m", "k", body.to_string().as_bytes(), &mut hits)
            .unwrap_err();
        assert_eq!(e.rule, "no-cards");
    }

    #[test]
    fn a_body_too_deep_to_walk_fails_closed() {
        // Past serde_json's recursion limit (128) the tree cannot be walked:
        // a card anywhere in the text refuses the body, whatever the action.
        for action in ["block", "mask"] {
            let p =
                policy(json!([{"name": "cards", "detector": "payment_card", "action": action}]));
            let deep = format!(
                r#"{{"model":"m","messages":[],"tools":[{{"type":"function","function":{{"name":"f","parameters":{}"4111 1111 1111 1111"{}}}}}]}}"#,
                "[".repeat(200),
                "]".repeat(200)
            );
            let mut hits = Vec::new();
            let e = p
                .apply_json(REQ, "m", "k", deep.as_bytes(), &mut hits)
                .unwrap_err();
            assert_eq!(e.rule, "cards");
            assert_eq!(hits.len(), 1);
            // The same depth with nothing to find is left to the decoder.
            let clean = deep.replace("4111 1111 1111 1111", "nothing");
            assert_eq!(
                p.apply_json(REQ, "m", "k", clean.as_bytes(), &mut hits),
                Ok(None)
            );
        }
    }

    #[test]
    fn hash_is_stable_and_salted() {
        let p = policy(json!([{"name": "h", "detector": "us_ssn", "action": "hash"}]));
        let mut a = "ssn 123-45-6789".to_string();
        let mut b = "again 123-45-6789".to_string();
        p.apply_text(REQ, "m", "k", &mut a, &mut vec![]).unwrap();
        p.apply_text(REQ, "m", "k", &mut b, &mut vec![]).unwrap();
        let tag = |s: &str| s[s.find('[').unwrap()..].to_string();
        assert_eq!(tag(&a), tag(&b));
        assert!(a.starts_with("ssn [SSN:") && a.len() == "ssn [SSN:".len() + 13);
    }

    #[test]
    fn scoping_by_model_key_and_direction() {
        let p = policy(json!([{"name": "r", "detector": "email", "action": "mask",
                               "models": ["gpt-*"], "keys": ["k1"], "on": "both"}]));
        assert!(p.active(REQ, "gpt-4o", "k1"));
        assert!(p.active(GuardDirection::Response, "gpt-4o", "k1"));
        assert!(!p.active(REQ, "claude", "k1"));
        assert!(!p.active(REQ, "gpt-4o", "k2"));
    }

    fn stream(p: &Policy, deltas: &[&str]) -> (String, bool) {
        use crate::canonical::StreamEvent as E;
        let mut g = StreamGuard::default();
        let (mut text, mut blocked) = (String::new(), false);
        let mut feed = |evs: Vec<E>| {
            let mut evs = evs;
            g.filter(p, "m", "k", &mut evs, &mut vec![]);
            for e in evs {
                match e {
                    E::Text(t) => text.push_str(&t),
                    E::Error(_) => blocked = true,
                    _ => {}
                }
            }
        };
        for d in deltas {
            feed(vec![E::Text(d.to_string())]);
        }
        feed(vec![E::Done]);
        (text, blocked)
    }

    #[test]
    fn stream_masking_does_not_depend_on_how_text_was_chunked() {
        let p = policy(
            json!([{"name": "e", "detector": "email", "action": "mask", "on": "response"},
                              {"name": "c", "detector": "payment_card", "action": "block", "on": "response"}]),
        );
        let whole = "Write to jane.doe@example.com or call; ".repeat(12) + "done";
        let (expect, _) = stream(&p, &[&whole]);
        assert!(!expect.contains("jane.doe") && expect.contains("[EMAIL]"));
        for size in [1, 2, 3, 7, 13, 64, 255] {
            let chunks: Vec<String> = whole
                .as_bytes()
                .chunks(size)
                .map(|c| String::from_utf8(c.to_vec()).unwrap())
                .collect();
            let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
            assert_eq!(stream(&p, &refs).0, expect, "chunk size {size}");
        }
        // A card split across deltas is still caught and ends the stream.
        let (text, blocked) = stream(&p, &["pay with 4111 11", "11 1111 1111 now"]);
        assert!(blocked && !text.contains("4111"));
    }

    #[test]
    fn ids_and_image_data_are_not_scanned() {
        let p = policy(json!([{"name": "r", "detector": {"regex": "secret"}, "action": "block"}]));
        let body = json!({"model": "secret", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,secret"}}]}]});
        assert!(p
            .apply_json(REQ, "m", "k", body.to_string().as_bytes(), &mut vec![])
            .unwrap()
            .is_none());
    }

    #[test]
    fn token_caps_need_the_tokenizer() {
        let g: Guardrails =
            serde_json::from_value(serde_json::json!({"max_input_tokens": 10})).unwrap();
        let r = Policy::new(&g, |_| None);
        assert_eq!(r.is_ok(), crate::tokens::EXACT, "{:?}", r.err());
    }

    #[test]
    fn unescaping_for_the_whole_body_scan() {
        assert_eq!(unescape_json(r#"a\"b\\c\n"#), "a\"b\\c\n");
        assert_eq!(unescape_json(r"bob\u0040ex.com"), "bob@ex.com");
        assert_eq!(unescape_json(r"\ud83d\ude00!"), "\u{1F600}!");
        assert_eq!(
            unescape_json(r"bad \uZZZZ \ud83d x \"),
            r"bad \uZZZZ \ud83d x \"
        );
        assert!(matches!(
            unescape_json("plain"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn escapes_cannot_smuggle_a_match_past_the_fast_path() {
        let p = policy(json!([{"name": "pii", "detector": "email", "action": "mask"}]));
        assert!(p.whole_body_scan);
        let body =
            br#"{"model":"m","messages":[{"role":"user","content":"mail bob\u0040ex.com"}]}"#;
        let mut hits = Vec::new();
        let out = p
            .apply_json(REQ, "m", "k", body, &mut hits)
            .unwrap()
            .unwrap();
        assert!(String::from_utf8(out).unwrap().contains("[EMAIL]"));
        // Nothing to find: cleared by one scan, body untouched.
        let clean = br#"{"model":"m","messages":[{"role":"user","content":"hello\nthere"}]}"#;
        assert!(p.clears_whole(clean));
        assert_eq!(p.apply_json(REQ, "m", "k", clean, &mut hits).unwrap(), None);
    }

    #[test]
    fn anchored_custom_patterns_scan_string_by_string() {
        let p =
            policy(json!([{"name": "lead", "detector": {"regex": "^secret"}, "action": "block"}]));
        assert!(!p.whole_body_scan);
        let body = br#"{"model":"m","messages":[{"role":"user","content":"secret plans"}]}"#;
        assert!(p.apply_json(REQ, "m", "k", body, &mut Vec::new()).is_err());
    }
}
