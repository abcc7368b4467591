//! Reading token usage from OpenAI-format responses and stream chunks.

use serde::Deserialize;

use sluice_records::TokenUsage;

use crate::needle::Needle;

#[derive(Deserialize, Default)]
struct Usage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl Usage {
    fn into_tokens(self) -> TokenUsage {
        TokenUsage {
            prompt_tokens: self.prompt_tokens.unwrap_or(0),
            completion_tokens: self.completion_tokens.unwrap_or(0),
            cached_tokens: self
                .prompt_tokens_details
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            cache_creation_tokens: 0,
            reasoning_tokens: self
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
                .unwrap_or(0),
        }
    }
}

/// Groq reports stream usage under `x_groq.usage` instead of `usage`.
#[derive(Deserialize)]
struct XGroq {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    x_groq: Option<XGroq>,
    /// Only the count matters; `IgnoredAny` is zero-sized, so no allocation.
    #[serde(default)]
    choices: Option<Vec<serde::de::IgnoredAny>>,
}

/// What a stream chunk tells the gateway.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ChunkInfo {
    pub usage: Option<TokenUsage>,
    /// The chunk carries only usage (`choices: []`): the one OpenAI adds for
    /// `stream_options.include_usage`.
    pub usage_only: bool,
}

/// Inspects one `data:` payload of a Chat Completions stream. Chunks that
/// cannot hold usage are not parsed at all (the per-event hot path): with
/// `stream_options.include_usage` OpenAI puts `"usage":null` on every
/// chunk, and parsing each of them was three quarters of a passthrough
/// stream's instructions (docs/benchmarks.md).
pub fn inspect_chunk(data: &[u8]) -> ChunkInfo {
    if !has_usage_value(data) {
        return ChunkInfo::default();
    }
    let Ok(p) = serde_json::from_slice::<Probe>(data) else {
        return ChunkInfo::default();
    };
    let usage = p.usage.or_else(|| p.x_groq.and_then(|x| x.usage));
    let usage_only = usage.is_some() && p.choices.is_some_and(|c| c.is_empty());
    ChunkInfo {
        usage: usage.map(Usage::into_tokens),
        usage_only,
    }
}

/// Whether a `"usage"` member with a value other than `null` may be in
/// the payload. A quote inside a JSON string is escaped, so the bytes
/// `"usage"` followed by a colon are a member name (of the chunk or of
/// Groq's `x_groq`); anything unexpected answers yes, and the parse decides.
fn has_usage_value(data: &[u8]) -> bool {
    static USAGE: Needle = Needle::new(b"\"usage\"");
    USAGE.find_iter(data).any(|at| {
        let rest = data
            .get(at.saturating_add(USAGE.len())..)
            .unwrap_or_default();
        let mut after = rest.iter().copied().skip_while(u8::is_ascii_whitespace);
        if after.next() != Some(b':') {
            // `"usage"` as a string value, not a member name.
            return false;
        }
        !after
            .skip_while(u8::is_ascii_whitespace)
            .take(4)
            .eq(b"null".iter().copied())
    })
}

/// Usage from a raw `usage` object.
pub fn from_usage_object(raw: &[u8]) -> Option<TokenUsage> {
    serde_json::from_slice::<Usage>(raw)
        .ok()
        .map(Usage::into_tokens)
}

/// Usage of a whole non-stream response body.
pub fn from_response(body: &[u8]) -> Option<TokenUsage> {
    serde_json::from_slice::<Probe>(body)
        .ok()
        .and_then(|p| p.usage)
        .map(Usage::into_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_only_chunk_is_recognised() {
        let c = inspect_chunk(
            br#"{"id":"x","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12,"total_tokens":21,"prompt_tokens_details":{"cached_tokens":2},"completion_tokens_details":{"reasoning_tokens":5}}}"#,
        );
        assert!(c.usage_only);
        let u = c.usage.unwrap();
        assert_eq!(
            (
                u.prompt_tokens,
                u.completion_tokens,
                u.cached_tokens,
                u.reasoning_tokens
            ),
            (9, 12, 2, 5)
        );
    }

    #[test]
    fn content_chunks_with_null_usage_are_not_usage() {
        let c = inspect_chunk(br#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#);
        assert_eq!(c, ChunkInfo::default());
        assert_eq!(inspect_chunk(b"[DONE]"), ChunkInfo::default());
        assert_eq!(inspect_chunk(b"{\"usage\":"), ChunkInfo::default());
    }

    #[test]
    fn usage_on_a_content_chunk_is_kept_but_not_stripped() {
        let c = inspect_chunk(
            br#"{"choices":[{"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":2}}"#,
        );
        assert!(!c.usage_only);
        assert_eq!(c.usage.unwrap().completion_tokens, 2);
    }

    #[test]
    fn null_usage_is_skipped_without_a_parse() {
        assert!(!has_usage_value(br#"{"choices":[],"usage":null}"#));
        assert!(!has_usage_value(br#"{"usage" : null ,"choices":[]}"#));
        assert!(!has_usage_value(
            br#"{"delta":{"content":"say \"usage\": 5"}}"#
        ));
        assert!(!has_usage_value(br#"{"tag":"usage","n":1}"#));
        assert!(has_usage_value(br#"{"usage":{"prompt_tokens":1}}"#));
        assert!(has_usage_value(
            br#"{"usage":null,"x_groq":{"usage":{"prompt_tokens":3}}}"#
        ));
        // Truncated: let the parse decide (it fails: no usage).
        assert!(has_usage_value(br#"{"usage": nu"#));
        assert_eq!(inspect_chunk(br#"{"usage": nu"#), ChunkInfo::default());
    }

    #[test]
    fn groq_usage_is_found() {
        let c = inspect_chunk(
            br#"{"choices":[{"delta":{},"finish_reason":"tool_calls"}],"x_groq":{"usage":{"prompt_tokens":3,"completion_tokens":4}}}"#,
        );
        assert_eq!(c.usage.unwrap().prompt_tokens, 3);
    }
}
