//! Virtual-key extraction. Keys are compared by SHA-256 only: the plaintext
//! never leaves the request and is never stored.

/// Headers the gateway reads for the caller's key; they are always stripped
/// before the request goes upstream.
pub const CLIENT_KEY_HEADERS: [&str; 3] = ["authorization", "x-api-key", "x-goog-api-key"];

/// The key a caller presented: `Authorization: Bearer <key>` first, then
/// `x-api-key` (Anthropic SDKs), then `x-goog-api-key` (Gemini SDKs).
pub fn presented_key<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
    x_goog_api_key: Option<&'a str>,
) -> Option<&'a str> {
    if let Some(v) = authorization {
        // Byte-wise: the value is client input, and slicing a `str` at a
        // byte index inside a character (`Bearer\u{e9}…`) would panic.
        let v = v.trim();
        if let Some(rest) = strip_prefix_ignore_ascii_case(v, "bearer ") {
            let k = rest.trim();
            if !k.is_empty() {
                return Some(k);
            }
        }
    }
    [x_api_key, x_goog_api_key]
        .into_iter()
        .flatten()
        .map(str::trim)
        .find(|k| !k.is_empty())
}

/// `s` without `prefix` (ASCII, any case), or `None`. Never slices inside a
/// character: the split point is checked to be a char boundary.
fn strip_prefix_ignore_ascii_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.as_bytes().get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix.as_bytes()) {
        return None;
    }
    s.get(prefix.len()..)
}

/// SHA-256 digest of a presented key.
pub fn digest(key: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_then_headers() {
        assert_eq!(
            presented_key(Some("Bearer sk-1"), Some("x"), None),
            Some("sk-1")
        );
        assert_eq!(
            presented_key(Some("bearer   sk-2 "), None, None),
            Some("sk-2")
        );
        assert_eq!(
            presented_key(Some("Basic abc"), Some("sk-3"), None),
            Some("sk-3")
        );
        assert_eq!(presented_key(None, None, Some("g-4")), Some("g-4"));
        assert_eq!(presented_key(Some("Bearer "), Some(" "), None), None);
        assert_eq!(presented_key(None, None, None), None);
    }

    #[test]
    fn multi_byte_characters_at_the_scheme_boundary_never_panic() {
        // `Bearer` followed directly by `é`: byte 7 is inside the character.
        assert_eq!(presented_key(Some("Bearer\u{e9}sk-1"), None, None), None);
        assert_eq!(
            presented_key(Some("\u{e9}\u{e9}\u{e9}\u{e9}"), None, None),
            None
        );
        assert_eq!(
            presented_key(Some("bearer \u{e9}k"), None, None),
            Some("\u{e9}k")
        );
        for s in [
            "B",
            "Bearer",
            "Bearer ",
            "\u{1F600}\u{1F600}",
            "Beare\u{e9}x",
        ] {
            let _ = presented_key(Some(s), Some(s), Some(s));
        }
    }

    #[test]
    fn digest_matches_config_hash() {
        assert_eq!(
            digest("sk-sluice-demo").to_vec(),
            hex_decode(&sluice_config::hash_key("sk-sluice-demo"))
        );
    }

    fn hex_decode(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }
}
