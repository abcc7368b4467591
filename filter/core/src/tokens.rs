//! Token counting with tiktoken-rs, initialised lazily per VM and only for
//! the encodings in use: o200k for the GPT-4o / 4.1 / o-series / GPT-5
//! families, cl100k otherwise (for Anthropic and Gemini models the count is
//! an estimate; provider-reported usage settles it). A VM that never needs
//! a count never loads a tokenizer (measured cost: docs/guardrails.md).

//!
//! Built without the `tokenizer` feature (the "lite" module: no encodings
//! embedded, ~6 MB less linear memory per VM), counts are bytes ÷ 4 and a
//! configuration that needs exact counts (`guardrails.max_input_tokens`) is
//! refused (docs/benchmarks.md).

#[cfg(feature = "tokenizer")]
use std::cell::OnceCell;

#[cfg(feature = "tokenizer")]
use tiktoken_rs::CoreBPE;

use crate::canonical::{Part, Request};

/// Whether this build can count tokens exactly.
pub const EXACT: bool = cfg!(feature = "tokenizer");

#[cfg(feature = "tokenizer")]
thread_local! {
    static O200K: OnceCell<Option<CoreBPE>> = const { OnceCell::new() };
    static CL100K: OnceCell<Option<CoreBPE>> = const { OnceCell::new() };
}

#[cfg(feature = "tokenizer")]
fn uses_o200k(model: &str) -> bool {
    let m = model.rsplit('/').next().unwrap_or(model);
    [
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "o1",
        "o3",
        "o4",
        "chatgpt-4o",
    ]
    .iter()
    .any(|p| m.starts_with(p))
}

/// Bytes ÷ 4: this build has no tokenizer.
#[cfg(not(feature = "tokenizer"))]
pub fn count(_model: &str, text: &str) -> u64 {
    text.len() as u64 / 4
}

/// Tokens in `text` for `model`'s encoding; bytes ÷ 4 if the tokenizer
/// could not be built.
#[cfg(feature = "tokenizer")]
pub fn count(model: &str, text: &str) -> u64 {
    let with = |bpe: &Option<CoreBPE>| match bpe {
        Some(b) => b.encode_ordinary(text).len() as u64,
        None => text.len() as u64 / 4,
    };
    if uses_o200k(model) {
        O200K.with(|c| with(c.get_or_init(|| tiktoken_rs::o200k_base().ok())))
    } else {
        CL100K.with(|c| with(c.get_or_init(|| tiktoken_rs::cl100k_base().ok())))
    }
}

/// Tokens of the text a request gives the model: system, messages, tool
/// calls and results, and tool definitions. Per-message framing tokens are
/// approximated as 4 each, as OpenAI documents.
pub fn count_request(model: &str, r: &Request) -> u64 {
    let text = request_text(r);
    count(model, &text).saturating_add(framing(r))
}

/// The request's token count only when it could exceed `cap`: a BPE token
/// covers at least one byte, so text of `n` bytes is at most `n` tokens, and
/// a request whose bytes (plus framing) fit under the cap needs no
/// tokenizer at all (`None`). Exact either way.
pub fn count_request_over(model: &str, r: &Request, cap: u64) -> Option<u64> {
    let text = request_text(r);
    let framing = framing(r);
    if (text.len() as u64).saturating_add(framing) <= cap {
        return None;
    }
    Some(count(model, &text).saturating_add(framing))
}

/// Tokens each message's framing adds (role, separators).
fn framing(r: &Request) -> u64 {
    (r.messages.len() as u64).saturating_mul(4)
}

fn request_text(r: &Request) -> String {
    let mut text = String::new();
    for s in &r.system {
        text.push_str(s);
        text.push('\n');
    }
    fn parts(out: &mut String, ps: &[Part]) {
        for p in ps {
            match p {
                Part::Text(t) | Part::Thinking { text: t, .. } => out.push_str(t),
                Part::ToolCall {
                    name, arguments, ..
                } => {
                    out.push_str(name);
                    out.push_str(arguments);
                }
                Part::ToolResult { content, .. } => parts(out, content),
                Part::Image(_) | Part::RedactedThinking(_) => {}
            }
            out.push('\n');
        }
    }
    for m in &r.messages {
        parts(&mut text, &m.parts);
    }
    for t in &r.tools {
        text.push_str(&t.name);
        text.push_str(t.description.as_deref().unwrap_or_default());
        text.push_str(&t.parameters.to_string());
    }
    text
}

#[cfg(all(test, feature = "tokenizer"))]
mod tests {
    use super::*;

    #[test]
    fn counts_with_the_family_encoding() {
        assert_eq!(count("gpt-4o-mini", "hello world"), 2);
        assert_eq!(count("gpt-3.5-turbo", "hello world"), 2);
        assert!(uses_o200k("openai/gpt-4.1") && !uses_o200k("claude-sonnet-4-5"));
        // A recorded prompt: cl100k and o200k differ on non-English text.
        let t = "Summarise: Die Gateways laufen im Mesh.";
        assert!(count("gpt-4o", t) > 0 && count("claude", t) > 0);
    }

    #[test]
    fn the_tokenizer_runs_only_when_the_cap_could_be_exceeded() {
        let req = |text: &str| {
            crate::openai::request::decode(
                serde_json::json!({"model": "gpt-4o", "messages": [{"role": "user", "content": text}]})
                    .to_string()
                    .as_bytes(),
            )
            .unwrap()
        };
        let short = req("hello world");
        assert_eq!(count_request_over("gpt-4o", &short, 100), None);
        let long = req(&"hello world ".repeat(20));
        let exact = count_request("gpt-4o", &long);
        // 240 bytes could be more than 100 tokens: counted, and it is less.
        assert_eq!(count_request_over("gpt-4o", &long, 100), Some(exact));
        assert!(exact < 100 && exact > 20);
        assert_eq!(count_request_over("gpt-4o", &long, 30), Some(exact));
    }
}
