//! Stream framing: how a streamed answer is cut into events on the wire.
//! The codecs above (`*/stream.rs`) see frames — an event name and a
//! payload — never the framing, so a backend whose stream is framed
//! differently (AWS's binary event stream) adds a parser here and keeps its
//! decoder unchanged in shape. Client APIs all stream server-sent events.

pub mod sse;

pub use sse::{EventTooLarge, SseEvent as Frame, SseParser};

/// How a backend frames its streamed answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `text/event-stream` (OpenAI, Anthropic, Gemini with `alt=sse`).
    Sse,
}

impl Framing {
    /// Whether a response with this content type is a stream in this
    /// framing (`None`: no content type).
    pub fn is_stream(self, content_type: Option<&str>) -> bool {
        match self {
            Framing::Sse => content_type.is_some_and(|c| {
                c.trim_start()
                    .get(..17)
                    .is_some_and(|p| p.eq_ignore_ascii_case("text/event-stream"))
            }),
        }
    }

    /// A parser for this framing; events over `max_event_bytes` are refused.
    pub fn parser(self, max_event_bytes: usize) -> FrameParser {
        match self {
            Framing::Sse => FrameParser::Sse(SseParser::new(max_event_bytes)),
        }
    }
}

/// Cuts a byte stream into frames, carrying partial frames between chunks.
#[derive(Debug)]
pub enum FrameParser {
    Sse(SseParser),
}

impl FrameParser {
    /// Bytes of an unfinished frame carried to the next chunk.
    pub fn pending(&self) -> usize {
        match self {
            FrameParser::Sse(p) => p.pending(),
        }
    }

    /// Feeds one chunk; `on_frame` sees every complete frame in order.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        end_of_stream: bool,
        on_frame: impl FnMut(Frame<'_>),
    ) -> Result<(), EventTooLarge> {
        match self {
            FrameParser::Sse(p) => p.feed(chunk, end_of_stream, on_frame),
        }
    }
}
