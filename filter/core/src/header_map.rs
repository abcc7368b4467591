//! Envoy's header maps as the proxy-wasm ABI serializes them
//! (`proxy_get_header_map_pairs`), read in place.
//!
//! Why not the SDK's `get_http_request_headers`: it copies every name and
//! value into its own `String` (two allocations per header, per request —
//! measurable in `make bench-profile`) and panics on a value that is not
//! UTF-8, which a client may send (HTTP allows obs-text bytes). A panic
//! kills the VM for every request on the worker. Here the pairs borrow the
//! one buffer the host wrote, and a value that is not UTF-8 reads as
//! [`NOT_UTF8`], which matches nothing the gateway looks for.
//!
//! Layout (little-endian): `u32 n`, then `n × (u32 name_len, u32 value_len)`,
//! then each name and value in order, each followed by a NUL byte.

/// What a value that is not UTF-8 reads as.
pub const NOT_UTF8: &str = "\u{FFFD}";

/// The pairs of a serialized map, in order. A malformed or truncated buffer
/// yields the pairs that could be read, never a panic.
pub fn parse(bytes: &[u8]) -> Vec<(&str, &str)> {
    let Some(n) = read_u32(bytes, 0) else {
        return Vec::new();
    };
    let n = n as usize;
    // Each pair needs at least 8 bytes of sizes and 2 of terminators.
    if n > bytes.len() / 10 {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(n);
    // n ≤ len / 10 (checked above), so these offsets stay far below usize::MAX.
    let mut p = n.saturating_mul(8).saturating_add(4);
    for i in 0..n {
        let s = i.saturating_mul(8).saturating_add(4);
        let (Some(kl), Some(vl)) = (read_u32(bytes, s), read_u32(bytes, s.saturating_add(4)))
        else {
            break;
        };
        let Some((name, next)) = take(bytes, p, kl as usize) else {
            break;
        };
        let Some((value, next)) = take(bytes, next, vl as usize) else {
            break;
        };
        p = next;
        let Ok(name) = std::str::from_utf8(name) else {
            continue; // Envoy only holds token names; skip rather than guess
        };
        out.push((name, std::str::from_utf8(value).unwrap_or(NOT_UTF8)));
    }
    out
}

/// The first value of `name` (names are lower-case in Envoy's maps).
pub fn get<'a>(pairs: &[(&'a str, &'a str)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// `len` bytes at `at` and the offset after their NUL terminator.
fn take(bytes: &[u8], at: usize, len: usize) -> Option<(&[u8], usize)> {
    let end = at.checked_add(len)?;
    let field = bytes.get(at..end)?;
    Some((field, end.checked_add(1)?))
}

/// Serializes pairs in the ABI's layout (what the host sends), for tests.
#[cfg(test)]
fn serialize(pairs: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pairs_in_order_borrowing_the_buffer() {
        let buf = serialize(&[
            (":path", b"/v1/chat/completions"),
            ("authorization", b"Bearer sk-1"),
            ("x-empty", b""),
            ("x-dup", b"a"),
            ("x-dup", b"b"),
        ]);
        let m = parse(&buf);
        assert_eq!(m.len(), 5);
        assert_eq!(get(&m, ":path"), Some("/v1/chat/completions"));
        assert_eq!(get(&m, "authorization"), Some("Bearer sk-1"));
        assert_eq!(get(&m, "x-empty"), Some(""));
        assert_eq!(get(&m, "x-dup"), Some("a"));
        assert_eq!(get(&m, "absent"), None);
        assert_eq!(m[4], ("x-dup", "b"));
    }

    #[test]
    fn a_value_that_is_not_utf8_does_not_panic_or_hide_the_header() {
        let buf = serialize(&[("x-latin1", b"caf\xe9"), ("x-ok", b"yes")]);
        let m = parse(&buf);
        assert_eq!(m, vec![("x-latin1", NOT_UTF8), ("x-ok", "yes")]);
    }

    #[test]
    fn malformed_buffers_yield_what_could_be_read() {
        assert!(parse(b"").is_empty());
        assert!(parse(&[1, 0]).is_empty());
        // A count far beyond the buffer.
        assert!(parse(&u32::MAX.to_le_bytes()).is_empty());
        let buf = serialize(&[("a", b"1"), ("b", b"2")]);
        for cut in 0..buf.len() {
            let m = parse(&buf[..cut]);
            assert!(m.len() <= 2);
            if let Some((k, v)) = m.first() {
                assert_eq!((*k, *v), ("a", "1"));
            }
        }
        // Sizes pointing past the end.
        let mut bad = serialize(&[("a", b"1")]);
        bad[8] = 200;
        assert!(parse(&bad).is_empty());
        assert_eq!(parse(&buf), vec![("a", "1"), ("b", "2")]);
    }
}
