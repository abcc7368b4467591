//! Constant byte patterns searched on hot paths (a stream's every event).
//! `memchr::memmem::find` builds a searcher on each call, which for a
//! short haystack costs more than the search itself (a fifth of a
//! passthrough stream's instructions, measured natively): a `Needle` builds
//! its searcher once per VM.

use std::sync::OnceLock;

use memchr::memmem::{FindIter, Finder};

pub struct Needle {
    pattern: &'static [u8],
    finder: OnceLock<Finder<'static>>,
}

impl Needle {
    pub const fn new(pattern: &'static [u8]) -> Self {
        Needle {
            pattern,
            finder: OnceLock::new(),
        }
    }

    fn finder(&self) -> &Finder<'static> {
        self.finder.get_or_init(|| Finder::new(self.pattern))
    }

    /// The pattern's length in bytes.
    pub fn len(&self) -> usize {
        self.pattern.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pattern.is_empty()
    }

    pub fn find(&self, haystack: &[u8]) -> Option<usize> {
        self.finder().find(haystack)
    }

    pub fn find_iter<'h, 's>(&'s self, haystack: &'h [u8]) -> FindIter<'h, 's> {
        self.finder().find_iter(haystack)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_like_memmem() {
        static N: Needle = Needle::new(b"\"usage\"");
        let hay = br#"{"usage":null,"x":{"usage":1}}"#;
        assert_eq!(N.find(hay), memchr::memmem::find(hay, b"\"usage\""));
        assert_eq!(N.find_iter(hay).collect::<Vec<_>>(), vec![1, 19]);
        assert_eq!(N.find(b"nothing"), None);
        assert_eq!(N.len(), 7);
    }
}
