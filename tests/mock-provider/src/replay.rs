//! Replays the real provider recordings (`shared/fixtures/provider-recordings`,
//! see its SOURCES.md): `*.chunks.txt` holds one `data:` payload per line,
//! `*.json` a whole response or error body.

use std::path::Path;

use axum::response::Response;
use serde_json::Value;

use crate::{anthropic, gemini, json_response, openai, sse_response, Format};

pub fn respond(
    dir: Option<&Path>,
    name: &str,
    format: Format,
    stream: bool,
    delay_ms: u64,
) -> Result<Response, String> {
    let dir = dir.ok_or("mock: started without --recordings")?;
    if name.contains("..") || name.starts_with('/') {
        return Err("mock: bad recording name".into());
    }
    if stream {
        let path = dir.join(format!("{name}.chunks.txt"));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("mock: cannot read {}: {e}", path.display()))?;
        let mut frames = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            frames.push(match format {
                Format::OpenAi => openai::frame(line),
                Format::Gemini => gemini::frame(line),
                Format::Anthropic | Format::Responses => {
                    // The recording keeps only payloads; the event name is
                    // the payload's `type`.
                    let v: Value = serde_json::from_str(line)
                        .map_err(|e| format!("mock: bad recording line: {e}"))?;
                    let ev = v.get("type").and_then(Value::as_str).unwrap_or("message");
                    if format == Format::Responses {
                        crate::responses::frame(ev, line)
                    } else {
                        anthropic::frame(ev, line)
                    }
                }
            });
        }
        if format == Format::OpenAi {
            frames.push(openai::DONE.to_string());
        }
        Ok(sse_response(frames, delay_ms))
    } else {
        let path = dir.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("mock: cannot read {}: {e}", path.display()))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| format!("mock: bad recording: {e}"))?;
        // Error recordings carry their HTTP status in the body.
        let status = v
            .pointer("/error/code")
            .and_then(Value::as_u64)
            .filter(|c| (400..600).contains(c))
            .unwrap_or(200) as u16;
        Ok(json_response(status, &v, &[]))
    }
}
