//! The Google Gemini dialect (AI Studio `generateContent`; Vertex AI uses the
//! same bodies under a different base path): its wire types and codecs, the
//! client API (`api`) and the backend (`backend`) built on them.

pub mod api;
pub mod backend;
pub mod count_tokens;
pub mod embeddings;
pub mod json_path;
pub mod request;
pub mod response;
pub mod stream;
pub mod types;

/// The request wire of `generateContent`.
pub const WIRE: crate::backend::Wire = "gemini.generate";
