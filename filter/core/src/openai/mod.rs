//! The OpenAI Chat Completions dialect: its wire types and codecs, the client
//! API (`api`) and the backend (`backend`) built on them.

pub mod api;
pub mod backend;
pub mod embeddings;
pub mod errors;
pub mod request;
pub mod response;
pub mod responses;
pub mod stream;
pub mod types;
pub mod usage;

/// The request wire of Chat Completions.
pub const WIRE: crate::backend::Wire = "openai.chat";
