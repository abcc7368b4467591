//! The OpenAI Chat Completions dialect.

pub mod chat_request;
pub mod errors;
pub mod usage;
