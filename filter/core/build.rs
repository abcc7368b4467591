//! With the `tokenizer` feature: writes the BPE encodings the filter
//! counts with as raw ranked bytes (`OUT_DIR/<encoding>.ranks`: for rank
//! 0, 1, 2, … one length byte then the token's bytes), taken from
//! tiktoken-rs on the host. tiktoken-rs's own loaders embed each encoding
//! as base64 text with decimal ranks — 5.3 MB for the two the filter uses,
//! which Envoy keeps several copies of and every VM maps into its linear
//! memory whether it counts or not. The raw form is 2.3 MB and needs no
//! decoding beyond slicing (src/tokens.rs); a native test checks both
//! tokenizers encode alike.

use std::error::Error;
use std::path::Path;

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_TOKENIZER").is_none() {
        return Ok(());
    }
    let out = std::env::var("OUT_DIR")?;
    write_ranks(&Path::new(&out).join("cl100k_base.ranks"), &bpe::cl100k()?)?;
    write_ranks(&Path::new(&out).join("o200k_base.ranks"), &bpe::o200k()?)?;
    Ok(())
}

/// Every ordinary token by rank, until the first rank that is not one
/// (the special tokens come after the ordinary ones in both encodings).
fn write_ranks(path: &Path, bpe: &bpe::Bpe) -> Result<(), Box<dyn Error>> {
    let mut out = Vec::with_capacity(2 << 20);
    let mut rank = 0u32;
    while let Ok(token) = bpe.decode_bytes(&[rank]) {
        let len = u8::try_from(token.len()).map_err(|_| format!("token {rank} too long"))?;
        if len == 0 {
            return Err(format!("token {rank} is empty").into());
        }
        out.push(len);
        out.extend_from_slice(&token);
        rank = rank.checked_add(1).ok_or("too many tokens")?;
    }
    if rank < 50_000 {
        return Err(format!("only {rank} tokens read for {}", path.display()).into());
    }
    std::fs::write(path, out)?;
    Ok(())
}

#[cfg(feature = "tokenizer")]
mod bpe {
    use std::error::Error;
    pub use tiktoken_rs::CoreBPE as Bpe;

    pub fn cl100k() -> Result<Bpe, Box<dyn Error>> {
        tiktoken_rs::cl100k_base().map_err(|e| e.to_string().into())
    }

    pub fn o200k() -> Result<Bpe, Box<dyn Error>> {
        tiktoken_rs::o200k_base().map_err(|e| e.to_string().into())
    }
}

// Without the feature there is no tiktoken-rs on the host side; this arm
// only keeps the script compiling (the early return above means it never
// runs).
#[cfg(not(feature = "tokenizer"))]
mod bpe {
    use std::error::Error;

    pub struct Bpe;

    impl Bpe {
        pub fn decode_bytes(&self, _: &[u32]) -> Result<Vec<u8>, ()> {
            Err(())
        }
    }

    pub fn cl100k() -> Result<Bpe, Box<dyn Error>> {
        Ok(Bpe)
    }

    pub fn o200k() -> Result<Bpe, Box<dyn Error>> {
        Ok(Bpe)
    }
}
