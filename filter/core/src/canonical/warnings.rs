//! What a translation could not carry over, for the `x-sluice-warnings`
//! response header.

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

#[cfg(test)]
mod tests {
    use super::*;

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
