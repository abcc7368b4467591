//! The OpenAI Chat Completions dialect.

pub mod chat_request;
pub mod errors;
pub mod request;
pub mod response;
pub mod stream;
pub mod types;
pub mod usage;
