//! The Anthropic Messages dialect: its wire types and codecs, the client API
//! (`api`) and the backend (`backend`) built on them.

pub mod api;
pub mod backend;
pub mod count_tokens;
pub mod request;
pub mod response;
pub mod stream;
pub mod types;

/// The request wire of Messages.
pub const WIRE: crate::backend::Wire = "anthropic.messages";

/// `max_tokens` sent to Anthropic when the caller gave none (Anthropic
/// requires it; OpenAI and Gemini callers often omit it).
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

/// API version header sent on translated requests.
pub const API_VERSION: &str = "2023-06-01";
