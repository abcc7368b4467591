//! Capture writer: the filter's `wasm.sluice_capture` records (sampled
//! requests, see filter/core/src/capture.rs) arrive through the access log;
//! each is converted to a replay record, sanitized (irreversibly: PII
//! hashed with a salt, secrets redacted) and appended to a baseline file
//! `capture-YYYY-MM-DD.jsonl` in the capture directory. Raw records are
//! never written anywhere.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use sluice_replay::record::Record;
use sluice_replay::sanitize::Sanitizer;
use tokio::sync::mpsc;

#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub written: AtomicU64,
    /// Queue full, no capture directory, or not convertible.
    pub dropped: AtomicU64,
}

pub use crate::api::CaptureStatus;

impl Counters {
    pub fn status(&self, dir: Option<&PathBuf>) -> CaptureStatus {
        CaptureStatus {
            dir: dir.map(|d| d.display().to_string()),
            received: self.received.load(Ordering::Relaxed),
            written: self.written.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

fn day(ts_ms: u64) -> String {
    let (y, m, d) = crate::store::civil_from_days((ts_ms / 86_400_000) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Converts, sanitizes and appends; runs on a blocking thread.
pub async fn run(
    dir: PathBuf,
    sanitizer: Sanitizer,
    counters: Arc<Counters>,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    let ruleset = sluice_replay::ruleset::Ruleset::builtin()
        .version()
        .to_string();
    while let Some(raw) = rx.recv().await {
        let mut rec = match Record::from_capture(&raw, &ruleset) {
            Ok(r) => r,
            Err(e) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                eprintln!("sluice: capture: {e}");
                continue;
            }
        };
        sanitizer.record(&mut rec);
        let Ok(line) = serde_json::to_string(&rec) else {
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let path = dir.join(format!("capture-{}.jsonl", day(rec.ts_ms)));
        let res = tokio::task::block_in_place(|| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)?;
            f.write_all(format!("{line}\n").as_bytes())
        });
        match res {
            Ok(()) => counters.written.fetch_add(1, Ordering::Relaxed),
            Err(e) => {
                eprintln!("sluice: capture {}: {e}", path.display());
                counters.dropped.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn civil_days() {
        assert_eq!(super::day(0), "1970-01-01");
        assert_eq!(super::day(1_795_305_600_000), "2026-11-22");
        assert_eq!(super::day(951_782_400_000), "2000-02-29");
    }
}
