//! The Google Gemini dialect (AI Studio `generateContent`; Vertex AI uses the
//! same bodies under a different base path).

pub mod json_path;
pub mod request;
pub mod response;
pub mod stream;
pub mod types;
