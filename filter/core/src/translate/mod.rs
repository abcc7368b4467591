//! Shared pieces of translation: warnings, data URLs, tool-name lookup.

pub mod stream;
pub mod usage_probe;

use crate::canonical::{ImageSource, Message, Part};

/// Things a translation could not carry over. Reported to the caller in the
/// `x-sluice-warnings` response header, never dropped silently.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Warnings(pub Vec<String>);

impl Warnings {
    pub fn push(&mut self, w: impl Into<String>) {
        let w = w.into();
        if !self.0.contains(&w) && self.0.len() < 32 {
            self.0.push(w);
        }
    }

    pub fn dropped(&mut self, field: &str, target: &str) {
        self.push(format!("dropped '{field}': not supported by {target}"));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Header value: `; `-separated, ASCII only, bounded.
    pub fn header_value(&self) -> String {
        let mut s: String = self
            .0
            .join("; ")
            .chars()
            .map(|c| {
                if c.is_ascii() && !c.is_ascii_control() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        s.truncate(2000);
        s
    }
}

/// `data:image/png;base64,AAAA` → Base64 source; anything else is a URL.
pub fn image_from_url(url: &str) -> ImageSource {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((meta, data)) = rest.split_once(',') {
            if let Some(media_type) = meta.strip_suffix(";base64") {
                return ImageSource::Base64 {
                    media_type: media_type.to_string(),
                    data: data.to_string(),
                };
            }
        }
    }
    ImageSource::Url(url.to_string())
}

pub fn image_to_url(src: &ImageSource) -> String {
    match src {
        ImageSource::Base64 { media_type, data } => format!("data:{media_type};base64,{data}"),
        ImageSource::Url(u) => u.clone(),
    }
}

/// The name of the tool a result answers, from the calls in history.
pub fn tool_name_for(history: &[Message], call_id: &str) -> Option<String> {
    history.iter().rev().find_map(|m| {
        m.parts.iter().find_map(|p| match p {
            Part::ToolCall { id, name, .. } if id == call_id => Some(name.clone()),
            _ => None,
        })
    })
}

/// Text of parts, for places that only take a string (tool results going to
/// OpenAI, system prompts).
pub fn text_of(parts: &[Part]) -> String {
    let mut out = String::new();
    for p in parts {
        if let Part::Text(t) = p {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(t);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_urls_round_trip() {
        let u = "data:image/png;base64,iVBORw0KGgo=";
        let src = image_from_url(u);
        assert_eq!(
            src,
            ImageSource::Base64 {
                media_type: "image/png".into(),
                data: "iVBORw0KGgo=".into()
            }
        );
        assert_eq!(image_to_url(&src), u);
        assert_eq!(
            image_from_url("https://x/y.png"),
            ImageSource::Url("https://x/y.png".into())
        );
    }

    #[test]
    fn warnings_are_deduplicated_and_header_safe() {
        let mut w = Warnings::default();
        w.dropped("logit_bias", "anthropic");
        w.dropped("logit_bias", "anthropic");
        w.push("ünïcode\nline");
        assert_eq!(w.0.len(), 2);
        assert!(w.header_value().is_ascii());
        assert!(!w.header_value().contains('\n'));
    }
}
