//! PII and secret detectors: a regex for candidates, then a check where the
//! format has one (Luhn for cards, mod-97 for IBANs, address parsing for
//! IPv6, reserved ranges for SSNs), so that e.g. a 16-digit order number
//! that fails Luhn is not a card.

use regex::Regex;
use sluice_config::Detector;

pub struct Compiled {
    pub label: &'static str,
    regex: Regex,
    check: fn(&str) -> bool,
}

fn any(_: &str) -> bool {
    true
}

pub fn luhn(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            // Digits are 0-9: doubled at most 18, and at most 19 of them.
            if i % 2 == 1 {
                let x = d.saturating_mul(2);
                if x > 9 {
                    x.saturating_sub(9)
                } else {
                    x
                }
            } else {
                *d
            }
        })
        .fold(0u32, u32::saturating_add);
    sum.is_multiple_of(10)
}

pub fn iban_ok(s: &str) -> bool {
    let c: Vec<char> = s.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&c.len()) {
        return false;
    }
    let (country_check, bban) = c.split_at(4);
    let rearranged = bban.iter().chain(country_check);
    let mut rem: u32 = 0;
    for ch in rearranged {
        let v = match ch.to_digit(36) {
            Some(v) => v,
            None => return false,
        };
        for d in v.to_string().chars() {
            // rem < 97, so rem * 10 + 9 never overflows.
            rem = rem
                .saturating_mul(10)
                .saturating_add(d.to_digit(10).unwrap_or(0))
                % 97;
        }
    }
    rem == 1
}

fn ssn_ok(s: &str) -> bool {
    let p: Vec<&str> = s.split('-').collect();
    matches!(p.as_slice(), [a, g, n]
        if *a != "000" && *a != "666" && !a.starts_with('9') && *g != "00" && *n != "0000")
}

fn ip_ok(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok() && s.contains([':', '.']) && s.len() >= 7
}

/// What a detector finds, for users other than guardrail rules (the replay
/// sanitizer hashes PII and redacts secrets).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Personal data: hashed (salted) so records stay comparable.
    Pii,
    /// Credentials: removed.
    Secret,
    /// An operator's own pattern (rules only).
    Custom,
}

/// The class of a detector. Exhaustive: a new detector must be classified,
/// and is then listed in [`BUILTIN`] beside it.
pub fn class(d: &Detector) -> Class {
    match d {
        Detector::Email
        | Detector::Phone
        | Detector::UsSsn
        | Detector::PaymentCard
        | Detector::Iban
        | Detector::IpAddress => Class::Pii,
        Detector::Secret => Class::Secret,
        Detector::Regex(_) => Class::Custom,
    }
}

/// The detector registry: every built-in detector. Guardrail rules name
/// them in configuration; the replay sanitizer applies all of them (a
/// detector added here is sanitized with no change there).
pub const BUILTIN: &[Detector] = &[
    Detector::Email,
    Detector::Phone,
    Detector::UsSsn,
    Detector::PaymentCard,
    Detector::Iban,
    Detector::IpAddress,
    Detector::Secret,
];

/// The built-in detectors of one class, compiled.
pub fn compile_class(c: Class) -> Result<Vec<Compiled>, String> {
    BUILTIN
        .iter()
        .filter(|d| class(d) == c)
        .map(compile)
        .collect()
}

/// Compiles a detector; `Err` for an invalid custom regex.
pub fn compile(d: &Detector) -> Result<Compiled, String> {
    let (label, pattern, check): (&'static str, String, fn(&str) -> bool) = match d {
        Detector::Email => (
            "EMAIL",
            r"(?i)\b[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}\b".into(),
            any,
        ),
        Detector::Phone => (
            "PHONE",
            r"(?:\+[1-9]\d{7,14}\b)|(?:(?:\(\d{3}\)\s?|\b\d{3}[-. ])\d{3}[-. ]\d{4}\b)".into(),
            any,
        ),
        Detector::UsSsn => ("SSN", r"\b\d{3}-\d{2}-\d{4}\b".into(), ssn_ok),
        Detector::PaymentCard => ("CARD", r"\b\d(?:[ -]?\d){12,18}\b".into(), luhn),
        Detector::Iban => (
            "IBAN",
            r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b".into(),
            iban_ok,
        ),
        Detector::IpAddress => (
            "IP",
            r"(?i)\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b|(?:[0-9a-f]{0,4}:){2,7}[0-9a-f]{1,4}"
                .into(),
            ip_ok,
        ),
        Detector::Secret => (
            "SECRET",
            concat!(
                r"\bsk-[A-Za-z0-9_-]{20,}",
                r"|\bAKIA[0-9A-Z]{16}\b",
                r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
                r"|\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}"
            )
            .into(),
            any,
        ),
        Detector::Regex(p) => ("REDACTED", p.clone(), any),
    };
    let regex = regex::RegexBuilder::new(&pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regex: {e}"))?;
    Ok(Compiled {
        label,
        regex,
        check,
    })
}

impl Compiled {
    /// The candidate pattern (for a combined pre-filter).
    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// Byte ranges of verified matches.
    pub fn find(&self, text: &str, out: &mut Vec<std::ops::Range<usize>>) {
        for m in self.regex.find_iter(text) {
            if (self.check)(m.as_str()) {
                out.push(m.range());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(d: Detector, text: &str) -> Vec<String> {
        let c = compile(&d).unwrap();
        let mut r = Vec::new();
        c.find(text, &mut r);
        r.into_iter().map(|r| text[r].to_string()).collect()
    }

    #[test]
    fn the_registry_holds_every_builtin_detector_once() {
        for (i, d) in BUILTIN.iter().enumerate() {
            assert_ne!(class(d), Class::Custom, "{d:?}");
            assert!(compile(d).is_ok(), "{d:?}");
            assert!(!BUILTIN[..i].contains(d), "{d:?} listed twice");
        }
        // Every class a sanitizer needs is present.
        assert!(!compile_class(Class::Pii).unwrap().is_empty());
        assert!(!compile_class(Class::Secret).unwrap().is_empty());
        // Serialized names: each built-in one distinct (a new variant added
        // to the config enum but not here shows up as a missing name in
        // docs/guardrails.md's table, which lists these).
        let names: Vec<String> = BUILTIN
            .iter()
            .map(|d| serde_json::to_string(d).unwrap())
            .collect();
        assert_eq!(names.len(), 7);
    }

    #[test]
    fn cards_need_luhn() {
        assert_eq!(
            hits(Detector::PaymentCard, "card 4111 1111 1111 1111 ok"),
            ["4111 1111 1111 1111"]
        );
        assert_eq!(
            hits(Detector::PaymentCard, "pay 4242-4242-4242-4242"),
            ["4242-4242-4242-4242"]
        );
        // 16 digits failing Luhn: an order number, not a card.
        assert!(hits(Detector::PaymentCard, "order 1234567812345678").is_empty());
        assert!(hits(Detector::PaymentCard, "year 2026").is_empty());
    }

    #[test]
    fn iban_needs_mod_97() {
        assert_eq!(
            hits(Detector::Iban, "to DE89370400440532013000 pls"),
            ["DE89370400440532013000"]
        );
        assert_eq!(
            hits(Detector::Iban, "GB82 WEST 1234 5698 7654 32"),
            ["GB82 WEST 1234 5698 7654 32"]
        );
        assert!(hits(Detector::Iban, "DE89370400440532013001").is_empty());
    }

    #[test]
    fn ssn_excludes_reserved_ranges() {
        assert_eq!(hits(Detector::UsSsn, "ssn 123-45-6789"), ["123-45-6789"]);
        assert!(hits(
            Detector::UsSsn,
            "000-12-3456 666-12-3456 900-12-3456 123-00-4567"
        )
        .is_empty());
    }

    #[test]
    fn emails_phones_ips_secrets() {
        assert_eq!(
            hits(Detector::Email, "mail a.b+c@ex-ample.co.uk now"),
            ["a.b+c@ex-ample.co.uk"]
        );
        assert!(hits(Detector::Email, "not@an").is_empty());
        assert_eq!(
            hits(Detector::Phone, "call +14155552671 or (415) 555-2671"),
            ["+14155552671", "(415) 555-2671"]
        );
        assert_eq!(
            hits(
                Detector::IpAddress,
                "hosts 10.0.0.1 and 2001:db8::8a2e:370:7334"
            ),
            ["10.0.0.1", "2001:db8::8a2e:370:7334"]
        );
        assert!(hits(Detector::IpAddress, "version 1.2.3 and 999.1.1.1 and 12:30").is_empty());
        let s = hits(
            Detector::Secret,
            "key sk-abcdefghijklmnopqrstuvwx and AKIAABCDEFGHIJKLMNOP",
        );
        assert_eq!(s, ["sk-abcdefghijklmnopqrstuvwx", "AKIAABCDEFGHIJKLMNOP"]);
        let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----";
        assert_eq!(hits(Detector::Secret, pem), [pem]);
        assert_eq!(
            hits(Detector::Secret, "t eyJhbGciOi.eyJzdWIiOi.SflKxwRJSM"),
            ["eyJhbGciOi.eyJzdWIiOi.SflKxwRJSM"]
        );
    }

    #[test]
    fn bad_custom_regex_is_an_error() {
        assert!(compile(&Detector::Regex("(".into())).is_err());
    }
}
