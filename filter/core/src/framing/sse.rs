//! Incremental server-sent-events parser.
//!
//! Upstream bytes arrive in arbitrary pieces: an event (or even a `\r\n`) can
//! be split across body callbacks. The parser scans what it has, hands out
//! every complete event (its raw bytes, so passthrough never re-encodes, and
//! its decoded fields), and keeps only the incomplete tail, bounded by
//! `max_event_bytes`. When nothing is carried over, events borrow straight
//! from the input chunk: no copy on the common path.

use std::borrow::Cow;

/// One complete event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The event's bytes as received, including its terminating blank line.
    pub raw: &'a [u8],
    /// The `event:` field, if any.
    pub event: Option<&'a [u8]>,
    /// The `data:` lines joined by `\n` (borrowed when there is one line).
    pub data: Option<Cow<'a, [u8]>>,
}

/// The tail exceeded the configured bound: one event is larger than allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventTooLarge {
    pub limit: usize,
}

#[derive(Debug)]
pub struct SseParser {
    carry: Vec<u8>,
    max_event_bytes: usize,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            carry: Vec::new(),
            max_event_bytes,
        }
    }

    /// Bytes held back waiting for the rest of an event.
    pub fn pending(&self) -> usize {
        self.carry.len()
    }

    /// Feeds a chunk; calls `on_event` for every event it completes. With
    /// `end_of_stream`, a trailing event without its blank line is delivered
    /// too (its raw bytes must still reach the client).
    pub fn feed(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        mut on_event: impl FnMut(SseEvent<'_>),
    ) -> Result<(), EventTooLarge> {
        if self.carry.is_empty() {
            let consumed = scan(chunk, end_of_stream, &mut on_event);
            let rest = chunk.get(consumed..).unwrap_or_default();
            if rest.len() > self.max_event_bytes {
                return Err(EventTooLarge {
                    limit: self.max_event_bytes,
                });
            }
            self.carry.extend_from_slice(rest);
        } else {
            // The transient buffer is carry (< bound) + one host chunk (bounded
            // by Envoy's buffer limits); only the carried tail is checked.
            let mut buf = std::mem::take(&mut self.carry);
            buf.extend_from_slice(chunk);
            let consumed = scan(&buf, end_of_stream, &mut on_event);
            let rest_len = buf.len().saturating_sub(consumed);
            if rest_len > self.max_event_bytes {
                return Err(EventTooLarge {
                    limit: self.max_event_bytes,
                });
            }
            buf.drain(..consumed.min(buf.len()));
            self.carry = buf;
        }
        Ok(())
    }
}

/// Scans complete events from `buf`, returns how many bytes were consumed.
/// Positions only grow and stay within `buf`, so the `saturating_add`s never
/// saturate; they are there so no arithmetic can panic.
fn scan(buf: &[u8], eof: bool, on_event: &mut impl FnMut(SseEvent<'_>)) -> usize {
    let mut event_start = 0usize;
    let mut pos = 0usize;
    let mut ev = Partial::default();
    while let Some(rel) = buf
        .get(pos..)
        .and_then(|b| memchr::memchr2(b'\n', b'\r', b))
    {
        let line_end = pos.saturating_add(rel);
        let next = if buf.get(line_end) == Some(&b'\r') {
            match buf.get(line_end.saturating_add(1)) {
                Some(b'\n') => line_end.saturating_add(2),
                Some(_) => line_end.saturating_add(1),
                // A lone trailing CR may be the first half of CRLF.
                None if eof => line_end.saturating_add(1),
                None => break,
            }
        } else {
            line_end.saturating_add(1)
        };
        let line_start = pos;
        let line = buf.get(line_start..line_end).unwrap_or_default();
        pos = next;
        if line.is_empty() {
            if pos > event_start {
                let raw = buf.get(event_start..pos).unwrap_or_default();
                on_event(ev.finish(buf, raw));
            }
            ev = Partial::default();
            event_start = pos;
        } else {
            ev.line(line_start, line);
        }
    }
    if eof && event_start < buf.len() {
        // Deliver a final unterminated event: include any last line too.
        let tail = buf.get(pos..).unwrap_or_default();
        if !tail.is_empty() {
            ev.line(pos, tail);
        }
        let raw = buf.get(event_start..).unwrap_or_default();
        on_event(ev.finish(buf, raw));
        return buf.len();
    }
    event_start
}

/// Field positions of the event being scanned (offsets into the buffer, so
/// the borrow checker is happy and nothing is copied for one-line data).
#[derive(Default)]
struct Partial {
    event: Option<(usize, usize)>,
    data: Vec<(usize, usize)>,
}

impl Partial {
    fn line(&mut self, start: usize, line: &[u8]) {
        if line.first() == Some(&b':') {
            return; // comment
        }
        let (name, value_off) = match memchr::memchr(b':', line) {
            Some(i) => {
                let mut v = i.saturating_add(1);
                if line.get(v) == Some(&b' ') {
                    v = v.saturating_add(1);
                }
                (line.get(..i).unwrap_or_default(), v)
            }
            None => (line, line.len()),
        };
        let span = (
            start.saturating_add(value_off),
            start.saturating_add(line.len()),
        );
        match name {
            b"data" => self.data.push(span),
            b"event" => self.event = Some(span),
            _ => {} // id, retry and unknown fields: kept in raw only
        }
    }

    fn finish<'a>(&self, buf: &'a [u8], raw: &'a [u8]) -> SseEvent<'a> {
        let at = |(s, e): (usize, usize)| buf.get(s..e).unwrap_or_default();
        let data = match self.data.as_slice() {
            [] => None,
            [one] => Some(Cow::Borrowed(at(*one))),
            many => {
                let mut joined = Vec::new();
                for (i, span) in many.iter().enumerate() {
                    if i > 0 {
                        joined.push(b'\n');
                    }
                    joined.extend_from_slice(at(*span));
                }
                Some(Cow::Owned(joined))
            }
        };
        SseEvent {
            raw,
            event: self.event.map(at),
            data,
        }
    }
}

/// Appends one `data:` event (with optional `event:` name) to `out`.
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &[u8]) {
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Owned {
        raw: Vec<u8>,
        event: Option<Vec<u8>>,
        data: Option<Vec<u8>>,
    }

    fn collect(p: &mut SseParser, chunk: &[u8], eof: bool, out: &mut Vec<Owned>) {
        p.feed(chunk, eof, |e| {
            out.push(Owned {
                raw: e.raw.to_vec(),
                event: e.event.map(|x| x.to_vec()),
                data: e.data.map(|d| d.into_owned()),
            })
        })
        .unwrap();
    }

    fn parse_whole(input: &[u8]) -> Vec<Owned> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        collect(&mut p, input, true, &mut out);
        out
    }

    const STREAM: &[u8] = b"event: message_start\ndata: {\"a\":1}\n\n: keepalive\n\ndata: line1\r\ndata: line2\r\n\r\nid: 7\rdata:nospace\r\rdata: {\"done\":true}\n\ndata: [DONE]\n\n";

    #[test]
    fn parses_fields_and_line_endings() {
        let evs = parse_whole(STREAM);
        assert_eq!(evs.len(), 6);
        assert_eq!(evs[0].event.as_deref(), Some(&b"message_start"[..]));
        assert_eq!(evs[0].data.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(evs[1].data, None); // comment-only event
        assert_eq!(evs[2].data.as_deref(), Some(&b"line1\nline2"[..]));
        assert_eq!(evs[3].data.as_deref(), Some(&b"nospace"[..]));
        assert_eq!(evs[5].data.as_deref(), Some(&b"[DONE]"[..]));
        let raw: Vec<u8> = evs.iter().flat_map(|e| e.raw.clone()).collect();
        assert_eq!(raw, STREAM, "raw spans must cover the input exactly");
    }

    #[test]
    fn split_at_every_byte_boundary_gives_same_events() {
        let whole = parse_whole(STREAM);
        for i in 0..=STREAM.len() {
            let mut p = SseParser::new(1 << 20);
            let mut out = Vec::new();
            collect(&mut p, &STREAM[..i], false, &mut out);
            collect(&mut p, &STREAM[i..], true, &mut out);
            assert_eq!(out, whole, "split at {i}");
        }
    }

    #[test]
    fn split_into_single_bytes() {
        let whole = parse_whole(STREAM);
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for (i, b) in STREAM.iter().enumerate() {
            collect(&mut p, &[*b], i + 1 == STREAM.len(), &mut out);
        }
        assert_eq!(out, whole);
    }

    #[test]
    fn unterminated_final_event_is_delivered_at_eof_only() {
        let mut p = SseParser::new(1024);
        let mut out = Vec::new();
        collect(&mut p, b"data: a\n\ndata: tail", false, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(p.pending(), 10);
        collect(&mut p, b"", true, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].data.as_deref(), Some(&b"tail"[..]));
        assert_eq!(out[1].raw, b"data: tail");
    }

    #[test]
    fn oversized_event_is_an_error_not_unbounded_growth() {
        let mut p = SseParser::new(16);
        let r = p.feed(&[b'x'; 17], false, |_| {});
        assert_eq!(r, Err(EventTooLarge { limit: 16 }));
        let mut p = SseParser::new(16);
        p.feed(b"data: 0123", false, |_| {}).unwrap();
        assert!(p.feed(b"456789abcdef", false, |_| {}).is_err());
    }

    #[test]
    fn write_event_round_trips() {
        let mut out = Vec::new();
        write_event(&mut out, Some("ping"), b"{}");
        write_event(&mut out, None, b"[DONE]");
        let evs = parse_whole(&out);
        assert_eq!(evs[0].event.as_deref(), Some(&b"ping"[..]));
        assert_eq!(evs[1].data.as_deref(), Some(&b"[DONE]"[..]));
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_splits_match_whole_parse(
                cuts in proptest::collection::vec(0usize..STREAM.len(), 0..8)
            ) {
                let whole = parse_whole(STREAM);
                let mut cuts = cuts;
                cuts.sort_unstable();
                let mut p = SseParser::new(1 << 20);
                let mut out = Vec::new();
                let mut last = 0;
                for c in cuts {
                    collect(&mut p, &STREAM[last..c], false, &mut out);
                    last = c;
                }
                collect(&mut p, &STREAM[last..], true, &mut out);
                prop_assert_eq!(out, whole);
            }
        }
    }
}
