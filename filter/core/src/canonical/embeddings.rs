//! Embeddings between dialects: the request (inputs, dimensions, the
//! client's encoding) and the answer (one vector per input, in order).

use sluice_records::TokenUsage;

#[derive(Debug, Clone, PartialEq)]
pub enum EmbedInput {
    Text(String),
    /// Pre-tokenised input (OpenAI): only an OpenAI provider reads it.
    Tokens(Vec<u32>),
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbedRequest {
    pub model: String,
    pub inputs: Vec<EmbedInput>,
    /// Output dimensions (OpenAI `dimensions`, Gemini `outputDimensionality`).
    pub dimensions: Option<u64>,
    /// The client wants base64 (little-endian f32) instead of numbers.
    pub base64: bool,
    /// Gemini's task type and title: only Gemini reads them.
    pub task_type: Option<String>,
    pub title: Option<String>,
    pub user: Option<String>,
    /// One input, answered as one (Gemini `embedContent`, not the batch).
    pub single: bool,
    /// Fields of the caller's dialect with no place elsewhere (warnings).
    pub unmapped: Vec<String>,
}

impl EmbedRequest {
    /// The text inputs, for token estimates and guardrails.
    pub fn texts(&self) -> impl Iterator<Item = &str> {
        self.inputs.iter().filter_map(|i| match i {
            EmbedInput::Text(t) => Some(t.as_str()),
            EmbedInput::Tokens(_) => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbedResponse {
    /// One vector per input, in the inputs' order.
    pub vectors: Vec<Vec<f32>>,
    pub usage: Option<TokenUsage>,
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// A vector as OpenAI's `encoding_format: base64` sends it: the f32s'
/// little-endian bytes, standard base64 with padding.
pub fn base64_f32(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
    let mut out = String::with_capacity(bytes.len().div_ceil(3).saturating_mul(4));
    for chunk in bytes.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        let sextet = |shift: u32| {
            char::from(
                B64.get(((n >> shift) & 63) as usize)
                    .copied()
                    .unwrap_or(b'A'),
            )
        };
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// The inverse of [`base64_f32`]; `None` if it is not that.
pub fn f32_from_base64(s: &str) -> Option<Vec<f32>> {
    let mut bytes = Vec::with_capacity(s.len().saturating_mul(3) / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|b| *b == c)? as u32;
        acc = (acc << 6) | v;
        bits = bits.saturating_add(6);
        if bits >= 8 {
            bits = bits.saturating_sub(8);
            bytes.push(((acc >> bits) & 0xff) as u8);
        }
    }
    if bytes.len() % 4 != 0 {
        return None;
    }
    bytes
        .chunks_exact(4)
        .map(|c| <[u8; 4]>::try_from(c).ok().map(f32::from_le_bytes))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_little_endian_f32_and_round_trips() {
        // 1.0f32 = 00 00 80 3f → "AACAPw=="
        assert_eq!(base64_f32(&[1.0]), "AACAPw==");
        let v = vec![0.25, -1.5, 3.0e-7, 42.0, f32::MIN_POSITIVE];
        assert_eq!(f32_from_base64(&base64_f32(&v)).unwrap(), v);
        assert_eq!(f32_from_base64("AAA"), None);
        assert_eq!(f32_from_base64("A*AA"), None);
    }
}
