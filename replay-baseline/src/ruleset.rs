//! The diff ruleset: which differences are noise, how values are compared,
//! how streams are canonicalized and where a difference is attributed. A
//! versioned data file (`rulesets/diff_ruleset_v1.json`) so a change in
//! what counts as a diff is reviewed like code and recorded in reports.
//!
//! Paths are dot-separated: a key, an array index, `*` (any one segment) or
//! `**` (any number of segments): `choices.*.delta.content`, `**.id`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One segment of a concrete JSON path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Key(String),
    Idx(usize),
}

/// A concrete JSON path, displayed as `choices[0].delta.content`.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JsonPath(pub Vec<Seg>);

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            match s {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Idx(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// A path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(Vec<String>);

impl Pattern {
    pub fn parse(s: &str) -> Pattern {
        Pattern(
            s.split('.')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    pub fn matches(&self, path: &[Seg]) -> bool {
        fn seg_eq(p: &str, s: &Seg) -> bool {
            match s {
                Seg::Key(k) => p == "*" || p == k,
                Seg::Idx(i) => p == "*" || p.parse::<usize>().ok() == Some(*i),
            }
        }
        fn go(p: &[String], s: &[Seg]) -> bool {
            match p.split_first() {
                None => s.is_empty(),
                Some((h, rest)) if h == "**" => (0..=s.len()).any(|k| go(rest, &s[k..])),
                Some((h, rest)) => s
                    .split_first()
                    .is_some_and(|(x, xs)| seg_eq(h, x) && go(rest, xs)),
            }
        }
        go(&self.0, path)
    }

    /// Matches `path` or any path below it.
    pub fn covers(&self, path: &[Seg]) -> bool {
        (0..=path.len()).any(|k| self.matches(&path[..k]))
    }
}

fn any(pats: &[Pattern], path: &[Seg]) -> bool {
    pats.iter().any(|p| p.matches(path))
}

/// The module a difference points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Module {
    /// Request/response translation between dialects, error mapping.
    Translation,
    /// Stream translation and SSE framing.
    Streaming,
    /// Token usage reporting.
    Usage,
    /// Guardrail blocks, masks and hashes.
    Guardrail,
    /// Model, provider and target selection.
    Routing,
    /// Fields that differ run to run (ids, timestamps): not counted.
    Nondeterministic,
}

impl Module {
    pub fn as_str(self) -> &'static str {
        match self {
            Module::Translation => "translation",
            Module::Streaming => "streaming",
            Module::Usage => "usage",
            Module::Guardrail => "guardrail",
            Module::Routing => "routing",
            Module::Nondeterministic => "nondeterministic",
        }
    }

    /// Where to look in the source tree.
    pub fn source_hint(self) -> &'static str {
        match self {
            Module::Translation => {
                "filter/core/src/{openai,anthropic,gemini}/ (request.rs, response.rs), translate/"
            }
            Module::Streaming => "filter/core/src/*/stream.rs, translate/stream.rs, framing/",
            Module::Usage => {
                "filter/core/src/*/backend.rs (body_usage, usage_meter), flow/mod.rs (billed), \
                 filter/records/src/usage.rs"
            }
            Module::Guardrail => "filter/core/src/guardrails/",
            Module::Routing => {
                "filter/core/src/flow/route.rs, flow/upstream.rs, routing.rs, gateway.rs"
            }
            Module::Nondeterministic => "-",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributionRule {
    /// Where the difference is: `response`, `upstream_request`, `events`,
    /// `content`, `status`, `headers` or `*`.
    #[serde(default = "star")]
    pub side: String,
    pub path: String,
    pub module: Module,
}

fn star() -> String {
    "*".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamRules {
    /// String fields that carry streamed deltas: concatenated per channel,
    /// so how text was split into events is not a difference.
    pub delta_fields: Vec<String>,
    /// Delta channels that hold JSON (tool arguments): compared as JSON.
    pub json_delta_fields: Vec<String>,
}

/// The ruleset as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesetFile {
    pub version: String,
    pub created_at: String,
    pub sse_protocol_version: u32,
    pub description: String,
    /// Removed before comparing (pure transport noise).
    pub ignore: Vec<String>,
    /// Differences here are reported as `nondeterministic`, not counted.
    pub nondeterministic: Vec<String>,
    /// Relative tolerance for numbers.
    pub float_tolerance: f64,
    /// Arrays compared as sets.
    pub unordered: Vec<String>,
    /// Strings holding JSON (tool arguments), compared parsed.
    pub json_strings: Vec<String>,
    /// Response headers compared (others ignored).
    pub compared_headers: Vec<String>,
    pub stream: StreamRules,
    /// First matching rule wins; otherwise the side's default module.
    pub attribution: Vec<AttributionRule>,
    /// Text the guardrails leave in a masked or hashed value.
    pub guardrail_marker: String,
    /// Error `type`/`code` values of guardrail refusals.
    pub guardrail_error_codes: Vec<String>,
    /// Redacted values that mean the same: a gateway mask (`[EMAIL]`), a
    /// gateway hash (`[EMAIL:ab12…]`) and the sanitizer's placeholder
    /// (`[EMAIL sha256:…]`) all stand for "a value of this kind, removed".
    /// A sanitized baseline no longer holds the original value, so a replay
    /// cannot tell them apart: each is compared as `[LABEL]` (group 1).
    #[serde(default = "default_redaction_token")]
    pub redaction_token: String,
}

fn default_redaction_token() -> String {
    r"\[(EMAIL|PHONE|SSN|CARD|IBAN|IP|SECRET|REDACTED)(?:(?: sha256)?:[0-9a-f]+)?\]".into()
}

/// A compiled ruleset.
#[derive(Debug, Clone)]
pub struct Ruleset {
    pub file: RulesetFile,
    pub ignore: Vec<Pattern>,
    pub nondeterministic: Vec<Pattern>,
    pub unordered: Vec<Pattern>,
    pub json_strings: Vec<Pattern>,
    pub delta_fields: Vec<Pattern>,
    pub json_delta_fields: Vec<Pattern>,
    pub attribution: Vec<(String, Pattern, Module)>,
    pub marker: regex::Regex,
    pub redaction: regex::Regex,
}

/// The built-in ruleset (the file in `rulesets/`, compiled in).
pub const DEFAULT_RULESET: &str = include_str!("../rulesets/diff_ruleset_v1.json");

impl Ruleset {
    pub fn parse(text: &str) -> Result<Ruleset, String> {
        let file: RulesetFile =
            serde_json::from_str(text).map_err(|e| format!("bad ruleset: {e}"))?;
        let pats = |v: &[String]| v.iter().map(|s| Pattern::parse(s)).collect::<Vec<_>>();
        let marker = regex::Regex::new(&file.guardrail_marker)
            .map_err(|e| format!("bad ruleset guardrail_marker: {e}"))?;
        let redaction = regex::Regex::new(&file.redaction_token)
            .map_err(|e| format!("bad ruleset redaction_token: {e}"))?;
        Ok(Ruleset {
            ignore: pats(&file.ignore),
            nondeterministic: pats(&file.nondeterministic),
            unordered: pats(&file.unordered),
            json_strings: pats(&file.json_strings),
            delta_fields: pats(&file.stream.delta_fields),
            json_delta_fields: pats(&file.stream.json_delta_fields),
            attribution: file
                .attribution
                .iter()
                .map(|r| (r.side.clone(), Pattern::parse(&r.path), r.module))
                .collect(),
            marker,
            redaction,
            file,
        })
    }

    pub fn builtin() -> Ruleset {
        match Ruleset::parse(DEFAULT_RULESET) {
            Ok(r) => r,
            // The built-in file is checked by a unit test.
            Err(e) => panic!("built-in ruleset: {e}"),
        }
    }

    pub fn load(path: Option<&std::path::Path>) -> Result<Ruleset, String> {
        match path {
            None => Ok(Ruleset::builtin()),
            Some(p) => Ruleset::parse(
                &std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
            ),
        }
    }

    pub fn version(&self) -> &str {
        &self.file.version
    }

    pub fn ignored(&self, path: &[Seg]) -> bool {
        any(&self.ignore, path)
    }
    pub fn nondeterministic(&self, path: &[Seg]) -> bool {
        self.nondeterministic.iter().any(|p| p.covers(path))
    }
    pub fn unordered(&self, path: &[Seg]) -> bool {
        any(&self.unordered, path)
    }
    pub fn json_string(&self, path: &[Seg]) -> bool {
        any(&self.json_strings, path)
    }
    pub fn delta_field(&self, path: &[Seg]) -> bool {
        any(&self.delta_fields, path)
    }
    pub fn json_delta(&self, path: &[Seg]) -> bool {
        any(&self.json_delta_fields, path)
    }

    /// The module a difference at `path` on `side` is attributed to.
    pub fn attribute(&self, side: &str, path: &[Seg], default: Module) -> Module {
        if self.nondeterministic(path) {
            return Module::Nondeterministic;
        }
        self.attribution
            .iter()
            .find(|(s, p, _)| (s == "*" || s == side) && p.covers(path))
            .map_or(default, |(_, _, m)| *m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(segs: &[&str]) -> Vec<Seg> {
        segs.iter()
            .map(|s| match s.parse::<usize>() {
                Ok(i) => Seg::Idx(i),
                Err(_) => Seg::Key(s.to_string()),
            })
            .collect()
    }

    #[test]
    fn patterns() {
        let pat = Pattern::parse("choices.*.delta.content");
        assert!(pat.matches(&p(&["choices", "0", "delta", "content"])));
        assert!(!pat.matches(&p(&["choices", "0", "delta"])));
        assert!(Pattern::parse("**.id").matches(&p(&["id"])));
        assert!(Pattern::parse("**.id").matches(&p(&["a", "3", "id"])));
        assert!(!Pattern::parse("**.id").matches(&p(&["a", "idx"])));
        assert!(Pattern::parse("usage").covers(&p(&["usage", "prompt_tokens"])));
        assert_eq!(
            JsonPath(p(&["choices", "0", "delta", "tool_calls", "1"])).to_string(),
            "choices[0].delta.tool_calls[1]"
        );
    }

    #[test]
    fn builtin_ruleset_compiles() {
        let r = Ruleset::builtin();
        assert_eq!(r.version(), "diff_ruleset_v1");
        assert!(r.nondeterministic(&p(&["id"])));
        assert_eq!(
            r.attribute(
                "response",
                &p(&["usage", "total_tokens"]),
                Module::Translation
            ),
            Module::Usage
        );
    }
}
