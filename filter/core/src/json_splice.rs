//! Surgical edits of a JSON body's top-level fields.
//!
//! Passthrough requests (client dialect == provider kind) must reach the
//! provider byte-for-byte as sent, apart from the fields the gateway owns
//! (`model`, `stream_options`). Re-encoding through `serde_json::Value` would
//! reorder keys, change number formatting and cost a full allocation of the
//! tree; instead we locate the fields with a borrowing parse and splice.

use serde_json::value::RawValue;

/// Byte range of a borrowed raw value inside the buffer it was parsed from.
pub fn span_of(buf: &[u8], raw: &RawValue) -> std::ops::Range<usize> {
    let start = raw.get().as_ptr() as usize - buf.as_ptr() as usize;
    start..start + raw.get().len()
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
pub fn apply(body: &[u8], mut edits: Vec<Edit>) -> Vec<u8> {
    let extra: usize = edits
        .iter()
        .map(|e| match e {
            Edit::Replace { with, .. } => with.len(),
            Edit::InsertFirst { member } => member.len() + 1,
        })
        .sum();
    let mut out = Vec::with_capacity(body.len() + extra);
    let open = body.iter().position(|b| *b == b'{').map_or(0, |i| i + 1);
    edits.sort_by_key(|e| match e {
        Edit::Replace { range, .. } => range.start,
        Edit::InsertFirst { .. } => open,
    });
    let mut at = 0;
    for e in edits {
        match e {
            Edit::Replace { range, with } => {
                out.extend_from_slice(&body[at..range.start]);
                out.extend_from_slice(&with);
                at = range.end;
            }
            Edit::InsertFirst { member } => {
                out.extend_from_slice(&body[at..open]);
                out.extend_from_slice(&member);
                out.push(b',');
                at = open;
            }
        }
    }
    out.extend_from_slice(&body[at..]);
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
