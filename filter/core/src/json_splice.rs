//! Surgical edits of a JSON body's top-level fields.
//!
//! Passthrough requests (client dialect == provider kind) must reach the
//! provider byte-for-byte as sent, apart from the fields the gateway owns
//! (`model`, `stream_options`). Re-encoding through `serde_json::Value` would
//! reorder keys, change number formatting and cost a full allocation of the
//! tree; instead we locate the fields with a borrowing parse and splice.

use serde_json::value::RawValue;

/// Byte range of a borrowed raw value inside the buffer it was parsed from.
/// (An empty range at the end if `raw` is not inside `buf`: `apply` then
/// edits nothing there rather than failing.)
pub fn span_of(buf: &[u8], raw: &RawValue) -> std::ops::Range<usize> {
    let start = (raw.get().as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    match start.checked_add(raw.get().len()) {
        Some(end) if end <= buf.len() => start..end,
        _ => buf.len()..buf.len(),
    }
}

/// An edit to apply to the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    /// Replace the bytes in `range` with `with`.
    Replace {
        range: std::ops::Range<usize>,
        with: Vec<u8>,
    },
    /// Insert a new `"name":value` member as the first member of the
    /// top-level object (which must already have at least one member).
    InsertFirst { member: Vec<u8> },
}

/// Applies non-overlapping edits; returns the new body.
/// An edit whose range is out of bounds or overlaps an earlier one is
/// skipped (edits come from spans of the same body, so none is).
pub fn apply(body: &[u8], mut edits: Vec<Edit>) -> Vec<u8> {
    let extra = edits.iter().fold(0usize, |n, e| match e {
        Edit::Replace { with, .. } => n.saturating_add(with.len()),
        Edit::InsertFirst { member } => n.saturating_add(member.len()).saturating_add(1),
    });
    let mut out = Vec::with_capacity(body.len().saturating_add(extra));
    let open = body
        .iter()
        .position(|b| *b == b'{')
        .map_or(0, |i| i.saturating_add(1));
    edits.sort_by_key(|e| match e {
        Edit::Replace { range, .. } => range.start,
        Edit::InsertFirst { .. } => open,
    });
    let mut at = 0;
    for e in edits {
        let (upto, insert, next) = match e {
            Edit::Replace { range, with } => (range.start, with, range.end),
            Edit::InsertFirst { mut member } => {
                member.push(b',');
                (open, member, open)
            }
        };
        let Some(kept) = body.get(at..upto) else {
            continue;
        };
        if next < upto || next > body.len() {
            continue;
        }
        out.extend_from_slice(kept);
        out.extend_from_slice(&insert);
        at = next;
    }
    out.extend_from_slice(body.get(at..).unwrap_or_default());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Probe<'a> {
        #[serde(borrow)]
        model: &'a RawValue,
    }

    #[test]
    fn replaces_value_in_place_and_keeps_the_rest_verbatim() {
        let body =
            br#"{ "messages": [{"role":"user","content":"hi 1.50"}], "model" : "a",  "x":1e3}"#;
        let p: Probe = serde_json::from_slice(body).unwrap();
        let r = span_of(body, p.model);
        let out = apply(
            body,
            vec![
                Edit::Replace {
                    range: r,
                    with: br#""upstream""#.to_vec(),
                },
                Edit::InsertFirst {
                    member: br#""stream_options":{"include_usage":true}"#.to_vec(),
                },
            ],
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"stream_options":{"include_usage":true}, "messages": [{"role":"user","content":"hi 1.50"}], "model" : "upstream",  "x":1e3}"#
        );
    }
}

/// The raw value of member `key` of the top-level JSON object, found by a
/// byte scan that tracks depth and skips strings (escapes included) —
/// several times cheaper than a full parse when only one member (a
/// response's `usage`) is wanted. `None` if absent or not an object.
pub fn top_level_member<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let mut i = body.iter().position(|b| !b.is_ascii_whitespace())?;
    if *body.get(i)? != b'{' {
        return None;
    }
    i = i.saturating_add(1);
    let mut depth = 1usize;
    // At depth 1, the next string is a key when `expect_key`.
    let mut expect_key = true;
    while let Some(&b) = body.get(i) {
        match b {
            b'"' => {
                let start = i.saturating_add(1);
                // None: an unterminated string.
                let end = string_end(body, start)?;
                i = end.saturating_add(1);
                if depth == 1 && expect_key {
                    expect_key = false;
                    if body.get(start..end)? == key {
                        while body
                            .get(i)
                            .is_some_and(|c| c.is_ascii_whitespace() || *c == b':')
                        {
                            i = i.saturating_add(1);
                        }
                        let v = body.get(i..)?;
                        // The value runs to the next `,` or `}` at depth 1.
                        let len = value_len(v)?;
                        return v.get(..len);
                    }
                }
            }
            b'{' | b'[' => {
                depth = depth.saturating_add(1);
                i = i.saturating_add(1);
            }
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                i = i.saturating_add(1);
            }
            b',' => {
                if depth == 1 {
                    expect_key = true;
                }
                i = i.saturating_add(1);
            }
            _ => i = i.saturating_add(1),
        }
    }
    None
}

/// Index of the `"` closing a string whose text starts at `from`. Jumps
/// between quotes and backslashes (memchr) rather than stepping byte by
/// byte: strings are most of a chat body's bytes.
fn string_end(v: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from.checked_add(memchr::memchr2(b'"', b'\\', v.get(from..)?)?)?;
        if *v.get(at)? == b'"' {
            return Some(at);
        }
        from = at.checked_add(2)?; // the escaped byte, whatever it is
    }
}

/// Length of the JSON value at the start of `v`.
fn value_len(v: &[u8]) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0usize;
    while let Some(&b) = v.get(i) {
        match b {
            b'"' => {
                i = string_end(v, i.saturating_add(1)).map_or(v.len(), |e| e.saturating_add(1));
                if depth == 0 {
                    return Some(i.min(v.len()));
                }
            }
            b'{' | b'[' => {
                depth = depth.saturating_add(1);
                i = i.saturating_add(1);
            }
            b'}' | b']' => {
                let Some(d) = depth.checked_sub(1) else {
                    return Some(i);
                };
                depth = d;
                i = i.saturating_add(1);
                if depth == 0 {
                    return Some(i);
                }
            }
            b',' if depth == 0 => return Some(i),
            _ => i = i.saturating_add(1),
        }
    }
    (depth == 0).then_some(v.len())
}

#[cfg(test)]
mod member_tests {
    use super::top_level_member;

    #[test]
    fn finds_only_top_level_members() {
        let b = br#" {"a":{"usage":1},"s":"x \"usage\": 2","usage" : {"p":1,"q":[1,2]},"z":3}"#;
        assert_eq!(
            top_level_member(b, b"usage"),
            Some(&br#"{"p":1,"q":[1,2]}"#[..])
        );
        assert_eq!(top_level_member(b, b"z"), Some(&b"3"[..]));
        assert_eq!(top_level_member(b, b"s"), Some(&br#""x \"usage\": 2""#[..]));
        assert_eq!(top_level_member(br#"{"a":1}"#, b"usage"), None);
        assert_eq!(top_level_member(b"[1]", b"usage"), None);
        assert_eq!(top_level_member(br#"{"usage":"#, b"usage"), Some(&b""[..]));
        assert_eq!(top_level_member(br#"{"us\"#, b"usage"), None);
        // Garbage never panics.
        for cut in 0..b.len() {
            let _ = top_level_member(&b[..cut], b"usage");
        }
        // A string ending in an escaped backslash closes at the next quote;
        // one ending in an escaped quote does not.
        let b = br#"{"s":"a\\","usage":{"t":"\\\"}"},"x":"\"usage\":0"}"#;
        assert_eq!(
            top_level_member(b, b"usage"),
            Some(&br#"{"t":"\\\"}"}"#[..])
        );
        assert_eq!(top_level_member(b, b"x"), Some(&br#""\"usage\":0""#[..]));
        assert_eq!(top_level_member(br#"{"s":"\"#, b"usage"), None);
        assert_eq!(top_level_member(br#"{"s":"\\"#, b"usage"), None);
    }
}
