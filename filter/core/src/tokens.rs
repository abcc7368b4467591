//! Token counting with tiktoken-rs, initialised lazily per VM and only for
//! the encodings in use: o200k for the GPT-4o / 4.1 / o-series / GPT-5
//! families, cl100k otherwise (for Anthropic and Gemini models the count is
//! an estimate; provider-reported usage settles it). A VM that never needs
//! a count never loads a tokenizer (measured cost: docs/guardrails.md).
//!
//! The encodings are embedded as raw ranked bytes written by build.rs (2.3
//! MB), not through tiktoken-rs's loaders, which would embed them as base64
//! text (5.3 MB): module bytes are paid several times over in every Envoy
//! (copies of the module, and each VM's linear memory), counting or not
//! (docs/benchmarks.md, "Memory").

//!
//! Built without the `tokenizer` feature (the "lite" module: no encodings
//! embedded, ~6 MB less linear memory per VM), counts are bytes ÷ 4 and a
//! configuration that needs exact counts (`guardrails.max_input_tokens`) is
//! refused (docs/benchmarks.md).

#[cfg(feature = "tokenizer")]
use std::cell::OnceCell;

#[cfg(feature = "tokenizer")]
use tiktoken_rs::CoreBPE;

#[cfg(feature = "tokenizer")]
mod encodings {
    use rustc_hash::FxHashMap;
    use tiktoken_rs::{CoreBPE, Rank};

    static CL100K: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cl100k_base.ranks"));
    static O200K: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/o200k_base.ranks"));

    /// The pre-tokenisation patterns of the two encodings (as tiktoken
    /// defines them; the native test below checks the counts agree).
    const CL100K_PATTERN: &str = r"'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s";

    pub fn cl100k() -> Option<CoreBPE> {
        let specials = [
            ("<|endoftext|>", 100257),
            ("<|fim_prefix|>", 100258),
            ("<|fim_middle|>", 100259),
            ("<|fim_suffix|>", 100260),
            ("<|endofprompt|>", 100276),
        ];
        build(CL100K, &specials, CL100K_PATTERN)
    }

    pub fn o200k() -> Option<CoreBPE> {
        let specials = [("<|endoftext|>", 199999), ("<|endofprompt|>", 200018)];
        build(O200K, &specials, tiktoken_rs::O200K_BASE_PAT_STR)
    }

    /// The ranks file: per rank from 0, a length byte and the token.
    fn build(data: &[u8], specials: &[(&str, Rank)], pattern: &str) -> Option<CoreBPE> {
        let mut encoder: FxHashMap<Vec<u8>, Rank> =
            FxHashMap::with_capacity_and_hasher(data.len() / 8, Default::default());
        let (mut at, mut rank) = (0usize, 0 as Rank);
        while let Some(&len) = data.get(at) {
            let start = at.checked_add(1)?;
            let end = start.checked_add(usize::from(len))?;
            encoder.insert(data.get(start..end)?.to_vec(), rank);
            at = end;
            rank = rank.checked_add(1)?;
        }
        let specials = specials
            .iter()
            .map(|(s, r)| ((*s).to_owned(), *r))
            .collect();
        CoreBPE::new(encoder, specials, pattern).ok()
    }
}

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
        O200K.with(|c| with(c.get_or_init(encodings::o200k)))
    } else {
        CL100K.with(|c| with(c.get_or_init(encodings::cl100k)))
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

    /// The embedded encodings (build.rs's raw ranks + the patterns here)
    /// tokenise exactly as tiktoken-rs's own loaders do.
    #[cfg(all(feature = "tokenizer", not(target_arch = "wasm32")))]
    #[test]
    fn embedded_encodings_match_tiktoken() {
        let texts = [
            "hello world",
            "Summarise: Die Gateways laufen im Mesh. Ça coûte 12345 € — naïve façade.",
            "I'm sure you've seen they'll re-run it; DON'T stop.\r\n\n\tindented   spaces  ",
            "fn main() { let x = vec![1, 2, 3]; println!(\"{x:?}\"); }\n\n\n",
            "日本語のテキストと한국어 그리고 emoji 🚀🔥 mixed with numbers 3.14159265",
            "<|endoftext|> is ordinary text here",
        ];
        let ours = [encodings::cl100k().unwrap(), encodings::o200k().unwrap()];
        let theirs = [
            tiktoken_rs::cl100k_base().unwrap(),
            tiktoken_rs::o200k_base().unwrap(),
        ];
        for (a, b) in ours.iter().zip(&theirs) {
            for t in texts {
                assert_eq!(a.encode_ordinary(t), b.encode_ordinary(t), "{t}");
            }
            let all: String = texts.concat().repeat(20);
            assert_eq!(a.encode_ordinary(&all), b.encode_ordinary(&all));
        }
        // Every rank: the same bytes.
        for (a, b) in ours.iter().zip(&theirs) {
            for rank in 0..100_000 {
                assert_eq!(a.decode_bytes(&[rank]).ok(), b.decode_bytes(&[rank]).ok());
            }
        }
    }

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
