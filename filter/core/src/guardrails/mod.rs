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
    salt: String,
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
        let salt = g
            .hash_salt_env
            .as_deref()
            .and_then(env)
            .unwrap_or_else(|| "sluice-default-salt".to_string());
        Ok(Policy { rules, salt })
    }

    pub fn active(&self, dir: GuardDirection, model: &str, key: &str) -> bool {
        self.rules.iter().any(|r| r.applies(dir, model, key))
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
        let mut found: Vec<(std::ops::Range<usize>, &Rule)> = Vec::new();
        let mut ranges = Vec::new();
        for r in self.rules.iter().filter(|r| r.applies(dir, model, key)) {
            ranges.clear();
            r.detector.find(text, &mut ranges);
            for range in ranges.drain(..) {
                if r.action == GuardAction::Block {
                    hits.push(Hit {
                        rule: r.name.clone(),
                        action: r.action,
                    });
                    return Err(Blocked {
                        rule: r.name.clone(),
                    });
                }
                found.push((range, r));
            }
        }
        if found.is_empty() {
            return Ok(false);
        }
        // Earlier rules win where matches overlap.
        found.sort_by_key(|(r, _)| r.start);
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (range, rule) in found {
            if range.start < at {
                continue;
            }
            out.push_str(&text[at..range.start]);
            match rule.action {
                GuardAction::Hash => {
                    let mut h = Sha256::new();
                    h.update(self.salt.as_bytes());
                    h.update(text[range.clone()].as_bytes());
                    let digest = h.finalize();
                    out.push('[');
                    out.push_str(rule.detector.label);
                    out.push(':');
                    for b in &digest[..6] {
                        out.push_str(&format!("{b:02x}"));
                    }
                    out.push(']');
                }
                _ => {
                    out.push('[');
                    out.push_str(rule.detector.label);
                    out.push(']');
                }
            }
            hits.push(Hit {
                rule: rule.name.clone(),
                action: rule.action,
            });
            at = range.end;
        }
        out.push_str(&text[at..]);
        *text = out;
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
        let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
            return Ok(None); // not JSON: the dialect decoder reports it
        };
        let mut changed = false;
        self.walk(dir, model, key, &mut v, hits, &mut changed)?;
        Ok(if changed {
            serde_json::to_vec(&v).ok()
        } else {
            None
        })
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
}
