//! Helpers on canonical parts every dialect codec shares: data URLs, the
//! tool a result answers, plain text of parts.

use super::{ImageSource, Message, Part};

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
}
